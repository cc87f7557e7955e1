import type { FastifyInstance } from "fastify";
import { type Logger, pino } from "pino";
import { buildApp } from "./app.ts";
import { checkProduction, type Config, ConfigError, databaseFor, SERVICE_NAMES, type ServiceName, serviceDatabaseVariable } from "./config.ts";
import type { Database } from "./db/client.ts";
import { openDatabase, prepareDatabase, reachDatabase } from "./db/open.ts";
import { maxPreparedTransactions } from "./db/prepared.ts";
import { DEFAULT_WAIT_MS } from "./flows/placement.ts";
import type { Participant } from "./flows/two-phase-placement.ts";
import { DEMO_TENANT, loadDemo } from "./demo.ts";
import type { Bus } from "./kit/bus.ts";
import { systemClock } from "./kit/clock.ts";
import { flushTracing, traceFields } from "./kit/trace-context.ts";
import { createDeadLetters } from "./kit/dead-letters.ts";
import { newId } from "./kit/ids.ts";
import { startJobs } from "./ops/jobs.ts";
import { resolveSecrets } from "./ops/secrets.ts";
import { BUS_TOPOLOGY, createServices, type Services } from "./services.ts";

export interface Running {
  app: FastifyInstance;
  services: Services;
  url: string;
  /**
   * Stops: /readyz answers 503 at once, and after `readyzFirstMs` (for load balancers to notice) the
   * server stops accepting, in-flight requests and background work finish, connections close.
   */
  close(options?: { readyzFirstMs?: number }): Promise<void>;
}

/** While LISTEN is down, outbox rows and settled orders are found by polling (up to 1 s late), and /readyz answers 503. */
const logNotifications = (log: Logger) => (live: boolean, error?: unknown) => {
  if (live) log.info("notifications are live again (LISTEN re-established)");
  else log.warn({ err: error }, "notifications lost: polling until LISTEN is re-established");
};

/**
 * A split service's database and bus: its own URL if it runs alone and one is set, else DATABASE_URL;
 * only its own tables migrated; RabbitMQ reached before it serves.
 */
async function openSplit(config: Config, roles: ServiceName[], log: Logger, migrate: "apply" | "check"): Promise<{ database: Database; bus: Bus; participants?: Record<ServiceName, Participant> }> {
  const { url, variable } = databaseFor(config, roles);
  if (!url) throw new ConfigError(variable, `is required to serve split services (--services other than all)${roles.length === 1 ? `, or ${serviceDatabaseVariable(roles[0] as ServiceName)}` : ""}`);
  if (!config.amqpUrl) throw new ConfigError("AMQP_URL", "is required to serve split services (--services other than all)");
  const database = await openDatabase(config, { lockTimeoutMs: DEFAULT_WAIT_MS, onNotificationsChange: logNotifications(log), url, variable, sets: roles, migrate });
  const participants = roles.includes("orders") && config.placement === "2pc" ? await openParticipants(config).catch(async (error: unknown) => {
    await database.close();
    throw error;
  }) : undefined;
  const deadLetters = createDeadLetters({ clock: systemClock, newId });
  // Loaded here: the all-in-one never needs the broker's client.
  const { createRabbitBus } = await import("./kit/rabbit-bus.ts");
  const bus = createRabbitBus({
    url: config.amqpUrl,
    log,
    retryDelaysMs: config.retryDelaysMs,
    prefix: config.amqpPrefix,
    topology: BUS_TOPOLOGY,
    onDeadLetter: async (message, consumer, reason) => {
      await deadLetters.recordConsumerFailure(database.db, { message, consumer, reason });
    },
  });
  try {
    await bus.connection.onConnect(5_000);
  } catch (error) {
    await bus.close().catch(() => {});
    await database.close();
    await closeAll(participants);
    throw new ConfigError("AMQP_URL", `cannot reach RabbitMQ at ${new URL(config.amqpUrl).host}: ${(error as Error).message}`);
  }
  return { database, bus, participants };
}

/**
 * The two-phase-commit coordinator's own handles on every service's database (ORDERLY_PLACEMENT=2pc):
 * one per distinct URL, each reachable and allowing prepared transactions. Nothing is migrated here:
 * each service migrates its own tables.
 */
async function openParticipants(config: Config): Promise<Record<ServiceName, Participant>> {
  const { openPostgres } = await import("./db/postgres.ts");
  const byUrl = new Map<string, Participant>();
  const participants = {} as Record<ServiceName, Participant>;
  try {
    for (const service of SERVICE_NAMES) {
      const { url, variable } = databaseFor(config, [service]);
      if (!url) throw new ConfigError(variable, `is required with ORDERLY_PLACEMENT=2pc: the coordinator prepares a transaction on the ${service} service's database`);
      if (!byUrl.has(url)) {
        const work = await openDatabase(config, { url, variable, migrate: "none", lockTimeoutMs: DEFAULT_WAIT_MS });
        const maxPrepared = await maxPreparedTransactions(work);
        byUrl.set(url, { work, finish: openPostgres(url, { max: 2, preparedStatements: config.dbPreparedStatements }), maxPrepared });
        if (maxPrepared === 0) {
          throw new ConfigError("ORDERLY_PLACEMENT", `2pc needs max_prepared_transactions > 0 on the PostgreSQL server of ${variable} (it is 0; set it and restart the server)`);
        }
      }
      participants[service] = byUrl.get(url) as Participant;
    }
    return participants;
  } catch (error) {
    await closeAll(Object.fromEntries([...byUrl.values()].map((p, i) => [i, p])));
    throw error;
  }
}

async function closeAll(participants: Record<string, Participant> | undefined): Promise<void> {
  for (const { work, finish } of new Set(Object.values(participants ?? {}))) {
    await work.close().catch(() => {});
    await finish.close().catch(() => {});
  }
}

/** Opens the database, wires everything, listens. The only place that calls listen(). */
export async function startServer(config: Config, options: { demo: boolean; roles?: ServiceName[]; migrate?: boolean }): Promise<Running> {
  const started = Date.now();
  const roles = options.roles ?? [...SERVICE_NAMES];
  checkProduction(config, roles);
  const split = roles.length < SERVICE_NAMES.length;
  const migrate = (options.migrate ?? true) ? "apply" : "check";
  // Every line logged while a span is active (a request, a message) carries its traceId and spanId.
  const log = pino({ level: config.logLevel, base: { service: split ? roles.join(",") : "orderly" }, mixin: traceFields });
  // Production never loads demo data nor prints a token.
  if (options.demo && config.production) log.warn("demo data is never loaded in production (NODE_ENV=production): --demo and ORDERLY_DEMO ignored");
  const demo = options.demo && !config.production && !split;
  const secrets = resolveSecrets(config);
  if (!split && config.placement === "2pc") {
    throw new ConfigError("ORDERLY_PLACEMENT", "2pc is for the orders service of the split deployment: the all-in-one places an order in one local transaction");
  }
  // The all-in-one's database is only reached here: the embedded one opens on its thread while the app is built.
  const { database, bus, participants } = split
    ? await openSplit(config, roles, log, migrate)
    : { database: await reachDatabase(config, { lockTimeoutMs: DEFAULT_WAIT_MS, onNotificationsChange: logNotifications(log) }), bus: undefined, participants: undefined };
  const services = createServices({ config, database, secrets, log, ...(bus ? { bus, roles, retryDelaysMs: config.retryDelaysMs, participants } : {}) });
  let stopping = false;
  let app: FastifyInstance | undefined;
  try {
    await services.rateLimiter.ready().catch((error: unknown) => {
      throw new ConfigError("REDIS_URL", `cannot reach Redis at ${new URL(config.redisUrl ?? "redis://").host}: ${(error as Error).message}`);
    });
    app = await buildApp(services, { stopping: () => stopping });
    if (!split) await prepareDatabase(database, config, { migrate });
  } catch (error) {
    await app?.close();
    await services.close();
    await database.close();
    await closeAll(participants);
    throw error;
  }
  await services.start();
  const demoLoaded = demo ? await loadDemo(services) : false;
  await app.listen({ port: config.port, host: config.host });
  const address = app.server.address();
  const port = typeof address === "object" && address ? address.port : config.port;
  const url = `http://${config.host.includes(":") ? `[${config.host}]` : config.host}:${port}`;

  const stopJobs = startJobs(services);

  let closing: Promise<void> | undefined;
  const close = (closeOptions: { readyzFirstMs?: number } = {}) =>
    (closing ??= (async () => {
      stopping = true; // /readyz answers 503 from now on
      if (closeOptions.readyzFirstMs) await new Promise((r) => setTimeout(r, closeOptions.readyzFirstMs));
      await app.close(); // stops accepting, lets in-flight requests finish
      await stopJobs();
      await services.localPlacement?.drain();
      await services.close();
      await database.close();
      await closeAll(participants);
      await flushTracing();
    })());

  // The banner's tokens are signed with the secret: only worth printing where the secret's tokens are taken.
  if (demo && services.identities.names.includes("secret")) await printDemoBanner(services, url, demoLoaded);
  log.info({ url, database: database.kind, services: roles, ms: Date.now() - started }, "orderly is ready");
  return { app, services, url, close };
}

async function printDemoBanner(services: Pick<Services, "tokens" | "wallets" | "database">, url: string, loadedNow: boolean) {
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
