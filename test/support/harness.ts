import type { FastifyInstance, InjectOptions } from "fastify";
import { pino } from "pino";
import { buildApp } from "../../src/app.ts";
import type { Role } from "../../src/auth/tokens.ts";
import { loadConfig } from "../../src/config.ts";
import type { Database } from "../../src/db/client.ts";
import type { Clock } from "../../src/kit/clock.ts";
import { backlogOf } from "../../src/kit/backlog.ts";
import { testDatabases } from "./databases.ts";
import { type Bus, createInProcessBus } from "../../src/kit/bus.ts";
import { createServices, type ServiceDeps, type Services } from "../../src/services.ts";

export const TEST_SECRETS = { jwtSecret: "test-jwt-secret-0123456789abcdef0123456789", webhookSecret: "test-webhook-secret-0123456789" };

export const ADDRESS = { name: "Ada", phone: "+86 10 5555 0100", line1: "1 Test Road", city: "Beijing", country: "CN" };

export interface Harness {
  app: FastifyInstance;
  services: Services;
  token(tenantId: string, userId: string, roles?: Role[]): Promise<string>;
  /** inject() with a bearer token and a JSON body. */
  call(method: InjectOptions["method"], url: string, options?: { token?: string; body?: unknown; headers?: Record<string, string> }): Promise<{ status: number; body: any; headers: Record<string, unknown> }>;
  seed(tenantId: string, setup: { products?: [sku: string, price: number, stock: number][]; credits?: [userId: string, amount: number][] }): Promise<void>;
  orderBody(items: [sku: string, quantity: number][], extra?: Record<string, unknown>): Record<string, unknown>;
  /** Waits until background work is done: PENDING orders settled, outbox sent, sagas finished. */
  quiesce(): Promise<void>;
  close(): Promise<void>;
}

export type Strategy = "local" | "saga";

/** The strategies the invariant suites run under: the local one, and the saga over the in-process bus. */
export const STRATEGIES: { strategy: Strategy }[] = [{ strategy: "local" }, { strategy: "saga" }];

/** Every database crossed with every strategy, for suites that must hold under both. */
export function databaseStrategyCases() {
  return testDatabases().flatMap((database) => STRATEGIES.map(({ strategy }) => ({ database, strategy, name: `${database.name}, ${strategy} strategy` })));
}

/** An in-process bus that delivers every message twice: the inboxes and barriers must make that harmless. */
export function duplicatingBus(): Bus {
  const inner = createInProcessBus();
  return {
    ...inner,
    async publish(message) {
      await inner.publish(message);
      await inner.publish(message);
    },
  };
}

/** An in-process bus whose deliveries wait while it is held: a saga stops mid-flight until release(). */
export function gatedBus(): Bus & { hold(): void; release(): void } {
  const inner = createInProcessBus();
  let gate: Promise<void> | undefined;
  let open = () => {};
  return {
    ...inner,
    async publish(message) {
      while (gate) await gate;
      await inner.publish(message);
    },
    hold() {
      gate ??= new Promise<void>((resolve) => (open = resolve));
    },
    release() {
      gate = undefined;
      open();
    },
  };
}

export async function createHarness(
  database: Database,
  options: { clock?: Clock; env?: Record<string, string>; strategy?: Strategy; bus?: Bus; notifications?: ServiceDeps["notifications"]; refundDelaysMs?: number[] } = {},
): Promise<Harness> {
  const config = loadConfig(options.env ?? {});
  const saga = options.strategy === "saga" || options.bus !== undefined;
  const services = createServices({
    config,
    database,
    secrets: TEST_SECRETS,
    log: pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" }),
    clock: options.clock,
    notifications: options.notifications,
    refundDelaysMs: options.refundDelaysMs,
    ...(saga ? { bus: options.bus ?? createInProcessBus(), retryDelaysMs: [200, 400, 800] } : {}),
  });
  await services.start();
  const quiesce = async () => {
    await services.localPlacement?.drain();
    if (!saga) return;
    for (let i = 0; i < 2500; i++) {
      const { outboxPending, sagasActive } = await backlogOf(database.db);
      if (outboxPending + sagasActive === 0) return;
      await new Promise((r) => setTimeout(r, 20));
    }
    throw new Error("background work did not finish within 50 s");
  };
  const app = await buildApp(services);
  const token = (tenantId: string, userId: string, roles: Role[] = ["customer"]) => services.tokens.sign({ tenantId, userId, roles });
  const call: Harness["call"] = async (method, url, opts = {}) => {
    const headers: Record<string, string> = { ...opts.headers };
    if (opts.token) headers.authorization = `Bearer ${opts.token}`;
    const response = await app.inject({ method, url, headers, ...(opts.body === undefined ? {} : { payload: opts.body as object }) });
    const text = response.body;
    let body: unknown = text;
    try {
      body = text ? JSON.parse(text) : undefined;
    } catch {
      /* not JSON: keep the text */
    }
    return { status: response.statusCode, body, headers: response.headers };
  };
  return {
    app,
    services,
    token,
    call,
    async seed(tenantId, setup) {
      const admin = await token(tenantId, "seed-admin", ["admin"]);
      for (const [sku, price, stock] of setup.products ?? []) {
        const r = await call("PUT", `/api/v1/products/${sku}`, { token: admin, body: { name: `Product ${sku}`, price, stock } });
        if (r.status !== 201 && r.status !== 200) throw new Error(`seeding ${sku}: ${r.status} ${JSON.stringify(r.body)}`);
      }
      for (const [userId, amount] of setup.credits ?? []) {
        const r = await call("POST", `/api/v1/accounts/${userId}/credits`, { token: admin, body: { amount } });
        if (r.status !== 200) throw new Error(`crediting ${userId}: ${r.status} ${JSON.stringify(r.body)}`);
      }
      await quiesce(); // the saga strategy prices from a copy of the catalogue, filled by events
    },
    orderBody: (items, extra = {}) => ({
      items: items.map(([sku, quantity]) => ({ sku, quantity })),
      payment: { method: "balance" },
      shippingAddress: ADDRESS,
      ...extra,
    }),
    quiesce,
    async close() {
      await app.close();
      await services.localPlacement?.drain();
      await services.close();
      await database.close();
    },
  };
}
