import type { FastifyInstance } from "fastify";
import { pino } from "pino";
import { buildApp } from "./app.ts";
import { type Config, ConfigError } from "./config.ts";
import { openDatabase } from "./db/open.ts";
import { DEFAULT_WAIT_MS } from "./flows/place-order.ts";
import { DEMO_TENANT, loadDemo } from "./demo.ts";
import { startJobs } from "./ops/jobs.ts";
import { resolveSecrets } from "./ops/secrets.ts";
import { createServices, type Services } from "./services.ts";

export interface Running {
  app: FastifyInstance;
  services: Services;
  url: string;
  close(): Promise<void>;
}

/** Opens the database, wires everything, listens. The only place that calls listen(). */
export async function startServer(config: Config, options: { demo: boolean }): Promise<Running> {
  const started = Date.now();
  const log = pino({ level: config.logLevel, base: { service: "orderly" } });
  const secrets = resolveSecrets(config);
  const database = await openDatabase(config, { lockTimeoutMs: DEFAULT_WAIT_MS });
  const services = createServices({ config, database, secrets, log });
  try {
    await services.rateLimiter.ready();
  } catch (error) {
    await services.close();
    await database.close();
    throw new ConfigError("REDIS_URL", `cannot reach Redis at ${new URL(config.redisUrl ?? "redis://").host}: ${(error as Error).message}`);
  }
  const demoLoaded = options.demo ? await loadDemo(services) : false;
  const app = await buildApp(services);
  await app.listen({ port: config.port, host: config.host });
  const address = app.server.address();
  const port = typeof address === "object" && address ? address.port : config.port;
  const url = `http://${config.host.includes(":") ? `[${config.host}]` : config.host}:${port}`;

  const stopJobs = startJobs(services);

  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= (async () => {
      await app.close(); // stops accepting, lets in-flight requests finish
      await stopJobs();
      await services.localPlacement?.drain();
      await services.close();
      await database.close();
    })());

  if (options.demo) await printDemoBanner(services, url, demoLoaded);
  log.info({ url, database: database.kind, ms: Date.now() - started }, "orderly is ready");
  return { app, services, url, close };
}

async function printDemoBanner(services: Services, url: string, loadedNow: boolean) {
  const customer = await services.tokens.sign({ tenantId: DEMO_TENANT, userId: "alice", roles: ["customer"] }, 12 * 3600);
  const admin = await services.tokens.sign({ tenantId: DEMO_TENANT, userId: "admin", roles: ["admin"] }, 12 * 3600);
  const body = JSON.stringify({
    items: [{ sku: "SKU-1", quantity: 2 }],
    couponCode: "WELCOME5",
    payment: { method: "balance" },
    shippingAddress: { name: "Alice", phone: "+86 10 5555 0100", line1: "1 Demo Road", city: "Beijing", postalCode: "100000", country: "CN" },
  });
  process.stdout.write(
    [
      "",
      `Orderly is running at ${url} (${services.database.kind}; demo tenant "${DEMO_TENANT}" ${loadedNow ? "loaded" : "already present"})`,
      `  API docs:        ${url}/docs`,
      `  customer token:  ${customer}`,
      `                   (alice, balance ${(await services.wallets.getWallet(services.database.db, DEMO_TENANT, "alice")).balance} fen)`,
      `  admin token:     ${admin}`,
      "",
      "Place an order:",
      `  curl -s -X POST ${url}/api/v1/orders \\`,
      `    -H "Authorization: Bearer ${customer}" \\`,
      `    -H "Content-Type: application/json" -H "Idempotency-Key: demo-$(date +%s)" \\`,
      `    -d '${body}'`,
      "",
      "Ctrl-C stops it.",
      "",
    ].join("\n"),
  );
}
