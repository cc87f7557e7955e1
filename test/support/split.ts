import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { sql } from "drizzle-orm";
import pg from "pg";
import { createOrderlyClient, type OrderlyClient } from "../../client/index.ts";
import { createTokens } from "../../src/auth/tokens.ts";
import { createWebhookSignatures } from "../../src/auth/webhooks.ts";
import { SERVICE_NAMES, type ServiceName } from "../../src/config.ts";
import { type Database, rows } from "../../src/db/client.ts";
import { openPostgres } from "../../src/db/postgres.ts";
import { backlogOf } from "../../src/kit/backlog.ts";
import { deleteRabbitTopology } from "../../src/kit/rabbit-bus.ts";
import { BUS_CONSUMERS } from "../../src/services.ts";
import { postgresUrl } from "./databases.ts";
import { invariantViolations, type ServiceDatabases } from "./invariants.ts";
import { CLI } from "./cli.ts";
import { freePort } from "./ports.ts";

export function amqpUrl(): string | undefined {
  const url = process.env.AMQP_URL;
  if (!url && process.env.CI === "true") throw new Error("AMQP_URL is not set: the split deployment suites cannot run in CI");
  return url;
}


export const SPLIT_JWT_SECRET = "split-secret-split-secret-split-secret-01";
export const SPLIT_WEBHOOK_SECRET = "split-webhook-secret-0123456789";

export type Layout = "shared" | "per-service";

export async function waitFor(check: () => Promise<boolean>, what: string, ms: number): Promise<void> {
  const until = Date.now() + ms;
  while (!(await check().catch(() => false))) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function createDatabase(): Promise<{ url: string; drop(): Promise<void> }> {
  const base = postgresUrl() as string;
  const name = `orderly_split_${randomBytes(6).toString("hex")}`;
  const admin = new pg.Client({ connectionString: base });
  await admin.connect();
  await admin.query(`create database ${name}`);
  await admin.end();
  const url = new URL(base);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    async drop() {
      const dropper = new pg.Client({ connectionString: base });
      await dropper.connect();
      await dropper.query(`drop database if exists ${name} with (force)`);
      await dropper.end();
    },
  };
}

export interface Deployment {
  layout: Layout;
  /** The signer of tokens the services accept. */
  tokens: ReturnType<typeof createTokens>;
  /** Signs payment callbacks the payments service accepts. */
  signCallback(raw: string): string;
  /** Starts a service (or another replica of it) and waits until it is ready. */
  start(service: ServiceName, replica?: string, env?: Record<string, string>): Promise<void>;
  /** Kills a service's process (SIGKILL by default) and waits for it to be gone. */
  kill(service: ServiceName, replica?: string, signal?: NodeJS.Signals): Promise<void>;
  url(service: ServiceName, path: string, replica?: string): string;
  /**
   * The typed API client (client/) of a service or one of its replicas, sending `token` as the bearer
   * when given: its paths, parameters, bodies and answers are checked against openapi.json.
   */
  client(service: ServiceName, token?: string, replica?: string): OrderlyClient;
  call(service: ServiceName, method: string, path: string, token: string, body?: unknown, headers?: Record<string, string>): Promise<{ status: number; body: Record<string, any> }>;
  /** The URL of the database holding this service's tables (for the CLI). */
  databaseUrl(service: ServiceName): string;
  /** A handle on the database holding this service's tables (read by tests, never written). */
  db(service: ServiceName): Database["db"];
  databases: ServiceDatabases;
  /** Outbox sent and sagas finished in every database, and no order PENDING. */
  quiet(): Promise<boolean>;
  /** Waits (up to the contract's 30 s each) for quiet, then for the invariants to hold, and returns the violations left. */
  settle(): Promise<string[]>;
  logs: Map<string, string>;
  close(): Promise<void>;
}

/**
 * The five services as real processes on PostgreSQL and RabbitMQ, in one of two layouts: every
 * service on one shared database, or each on an empty database of its own that it migrates itself
 * (so a service that touched another's tables would fail there).
 */
export async function startDeployment(options: { layout: Layout; env?: Record<string, string> }): Promise<Deployment> {
  const { layout } = options;
  const created = layout === "shared" ? [await createDatabase()] : await Promise.all(SERVICE_NAMES.map(() => createDatabase()));
  const urlOf = (service: ServiceName) => (layout === "shared" ? created[0] : created[SERVICE_NAMES.indexOf(service)])!.url;
  const handles = new Map<string, Database>();
  const handleOf = (service: ServiceName) => {
    const url = urlOf(service);
    if (!handles.has(url)) handles.set(url, openPostgres(url, { max: 2 }));
    return handles.get(url) as Database;
  };
  const processes = new Map<string, ChildProcess>();
  const ports = new Map<string, number>();
  const logs = new Map<string, string>();
  const dataDir = mkdtempSync(join(tmpdir(), "orderly-split-"));
  const prefix = `split-${randomBytes(4).toString("hex")}`;
  const tokens = createTokens({ secret: SPLIT_JWT_SECRET });
  const databaseEnv = (service: ServiceName) =>
    layout === "shared" ? { DATABASE_URL: urlOf(service) } : { [`ORDERLY_${service.toUpperCase()}_DATABASE_URL`]: urlOf(service) };

  const deployment: Deployment = {
    layout,
    tokens,
    signCallback: (raw) => createWebhookSignatures(SPLIT_WEBHOOK_SECRET, { now: () => new Date() }).sign(raw),
    async start(service, replica = "", env = {}) {
      const name = `${service}${replica}`;
      const port = ports.get(name) ?? (await freePort());
      ports.set(name, port);
      const child = spawn(process.execPath, [...CLI, "serve", "--services", service], {
        detached: true,
        env: {
          PATH: process.env.PATH,
          PORT: String(port),
          ...databaseEnv(service),
          AMQP_URL: amqpUrl(),
          ORDERLY_AMQP_PREFIX: prefix,
          ORDERLY_JWT_SECRET: SPLIT_JWT_SECRET,
          ORDERLY_WEBHOOK_SECRET: SPLIT_WEBHOOK_SECRET,
          ORDERLY_DATA_DIR: dataDir,
          ORDERLY_RATE_LIMIT_RPS: "100000",
          ORDERLY_RATE_LIMIT_BURST: "100000",
          // Five services and their replicas share one PostgreSQL server (100 connections) with other tests.
          ORDERLY_DB_POOL_MAX: "10",
          LOG_LEVEL: "warn",
          ...options.env,
          ...env,
        },
      });
      child.stdout?.on("data", (d) => logs.set(name, (logs.get(name) ?? "") + d));
      child.stderr?.on("data", (d) => logs.set(name, (logs.get(name) ?? "") + d));
      processes.set(name, child);
      await waitFor(async () => (await fetch(`http://127.0.0.1:${port}/readyz`)).ok, `${name} to be ready`, 30_000);
    },
    async kill(service, replica = "", signal = "SIGKILL") {
      const child = processes.get(`${service}${replica}`);
      if (!child || child.exitCode !== null) return;
      const gone = new Promise((resolve) => child.once("exit", resolve));
      process.kill(-(child.pid as number), signal);
      await gone;
    },
    url: (service, path, replica = "") => `http://127.0.0.1:${ports.get(`${service}${replica}`)}/api/v1${path}`,
    // The typed paths carry /api/v1 themselves.
    client: (service, token, replica = "") => createOrderlyClient(`http://127.0.0.1:${ports.get(`${service}${replica}`)}`, { token }),
    async call(service, method, path, token, body, headers = {}) {
      const response = await fetch(deployment.url(service, path), {
        method,
        headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { "content-type": "application/json" }), ...headers },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
      return { status: response.status, body: (await response.json()) as Record<string, any> };
    },
    databaseUrl: urlOf,
    db: (service) => handleOf(service).db,
    databases:
      layout === "shared"
        ? handleOf("orders").db
        : (Object.fromEntries(SERVICE_NAMES.map((s) => [s, handleOf(s).db])) as Record<ServiceName, Database["db"]>),
    async quiet() {
      for (const service of SERVICE_NAMES) {
        const { outboxPending, sagasActive } = await backlogOf(handleOf(service).db);
        if (outboxPending + sagasActive > 0) return false;
      }
      const [pending] = await rows<{ n: number }>(handleOf("orders").db, sql`select count(*)::int as n from orders where status = 'PENDING'`);
      return (pending?.n ?? 0) === 0;
    },
    async settle() {
      // Messages still inside RabbitMQ (a confirm waiting for a restarted service) are not visible in
      // the databases: the invariants must come to hold within the contract's 30 s, and then hold.
      await waitFor(() => deployment.quiet(), "outbox sent, sagas finished, no order PENDING", 30_000);
      await waitFor(async () => (await invariantViolations(deployment.databases)).length === 0, "the invariants to hold", 30_000).catch(() => {});
      return invariantViolations(deployment.databases);
    },
    logs,
    async close() {
      for (const child of processes.values()) {
        if (child.exitCode === null && child.pid) process.kill(-child.pid, "SIGKILL");
      }
      await deleteRabbitTopology(amqpUrl() as string, prefix, BUS_CONSUMERS, options.env?.ORDERLY_RETRY_DELAYS_MS?.split(",").map(Number) ?? [1_000, 2_000, 4_000, 8_000, 16_000]);
      for (const handle of handles.values()) await handle.close();
      for (const database of created) await database.drop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
  return deployment;
}

/** What a failed test should show: the last lines each service logged. */
export function tailOfLogs(deployment: Deployment | undefined, lines = 40): string {
  if (!deployment) return "";
  return [...deployment.logs].map(([name, text]) => `--- ${name} ---\n${text.split("\n").slice(-lines).join("\n")}`).join("\n");
}
