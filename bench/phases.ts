// The phases of `npm run bench`, each measuring what one target is about, with the checks that make
// its figures trustworthy. run.ts picks and orders them; report.ts judges them against the targets.
import { join } from "node:path";
import { sql } from "drizzle-orm";
import { Connection } from "rabbitmq-client";
import { type Db, rows } from "../src/db/client.ts";
import { openPglite } from "../src/db/pglite.ts";
import { openPostgres } from "../src/db/postgres.ts";
import { deleteRabbitTopology } from "../src/kit/rabbit-bus.ts";
import { DEFAULT_RETRY_DELAYS_MS } from "../src/kit/relay.ts";
import { BUS_CONSUMERS } from "../src/services.ts";
import { query, scratchDatabase, type ServerFacts } from "./databases.ts";
import { fmt, type HttpLoad, otherAnswers, sleep } from "./figures.ts";
import { onCleanup, progress } from "./lifecycle.ts";
import { type FlushCeiling, flushCeiling, type PgbenchRun, runPgbench, type TextbookWorkload } from "./pgbench.ts";
import { cpuSeconds, type Server, startServer } from "./servers.ts";
import {
  type Catalogue,
  HOT_SKU,
  hotOrder,
  hotStock,
  type HotStock,
  invariantsHold,
  type LoadOptions,
  type LoadRun,
  oversellProblems,
  pendingOrders,
  placeOrders,
  seedShop,
  settledInvariants,
  uniformOrder,
} from "./workloads.ts";

export interface BenchConfig {
  seconds: number;
  connections: number;
  /** DATABASE_URL: the PostgreSQL server every database of the run is created on. */
  databaseUrl: string;
  amqpUrl: string;
  redisUrl: string | undefined;
  /** Run id: names the databases, the broker prefix and the report files. */
  stamp: string;
  /** One tenant per run, so counters a Redis keeps between runs never meet this run's orders. */
  tenant: string;
  /** Server logs and pgbench's transaction logs (kept with the report). */
  workDir: string;
  /** Data directories of the servers (removed at the end). */
  scratchDir: string;
  /** Customer tokens for user-1 … user-N (N the largest catalogue's users). */
  tokens: string[];
}

const WARMUP_SECONDS = 3;
/** The textbook has 10k SKUs (its 100k wallets would take minutes to seed over HTTP; 10k keep wallet collisions rare at 64 connections). */
export const POSTGRES_CATALOGUE: Catalogue = { skus: 10_000, users: 10_000 };
/** The embedded database runs one transaction at a time, so the catalogue's size changes no contention there. */
export const EMBEDDED_CATALOGUE: Catalogue = { skus: 1_000, users: 1_000 };

export type Reference = PgbenchRun | { error: string };

export interface WorkloadResult {
  orderly: HttpLoad;
  /** pgbench on the textbook script, for the workloads that have one. */
  reference?: Reference;
  /** Invariants 1-3 (and the contract's 30 s for PENDING orders) after the workload: the violations found. */
  invariants: string[];
}

export interface HotResult extends WorkloadResult {
  flush: FlushCeiling | { skipped: string };
  hotStock: HotStock;
  /** Empty when nothing of the hot SKU was oversold. */
  oversell: string[];
}

export interface AsyncResult {
  /** The 202 answers: their rate and latency. */
  accepted: HttpLoad;
  /** From the end of the load until no order was PENDING (or the bound was reached). */
  drainSeconds: number;
  drained: boolean;
  /** Accepted orders / (load time + drain time). */
  drainedPerSecond: number;
  /** How the accepted orders ended, by status. */
  outcomes: Record<string, number>;
  /** Accepted orders that did not end PAID or CANCELLED. */
  lost: number;
  invariants: string[];
}

export interface FootprintResult {
  postgres: Start;
  embedded: Start;
}
export interface Start {
  /** Spawn to the first 200 from /readyz, on a database a first start already created and migrated. */
  readyMs: number;
  /** The first start's, for comparison (creates or migrates the database). */
  firstReadyMs: number;
  /** VmRSS of the server's process tree, ready and idle for 5 s: what the targets judge. */
  rssBytes: number;
  /** The server process alone (the tree adds tsx's esbuild service, and a child-process database if there were one). */
  processRssBytes: number;
}

export const httpLoad = (run: LoadRun): HttpLoad => ({
  seconds: run.seconds,
  orders: run.orders,
  ordersPerSecond: run.ordersPerSecond,
  perSecond: run.perSecond,
  latencyMs: run.latencyMs,
  answers: run.answers,
});

/** A warm-up that is not counted, a checkpoint (pgbench's reset.sql ends with one too), then the measured load. */
export async function warmAndMeasure(
  config: BenchConfig,
  load: Omit<LoadOptions, "seconds" | "connections" | "tokens">,
  checkpointOn?: string,
  beforeMeasuring: () => Promise<void> = async () => {},
): Promise<{ warmUp: LoadRun; run: LoadRun }> {
  const { seconds, connections, tokens } = config;
  progress(`  ${load.label}: warm-up ${WARMUP_SECONDS} s, not counted`);
  const warmUp = await placeOrders({ ...load, respondAsync: false, seconds: WARMUP_SECONDS, connections, tokens, quiet: true });
  if (checkpointOn) await query(checkpointOn, "checkpoint");
  await beforeMeasuring();
  progress(`  ${load.label}: measuring ${seconds} s at ${connections} connections`);
  const run = await placeOrders({ ...load, seconds, connections, tokens });
  progress(`  ${load.label}: ${fmt(run.ordersPerSecond)} orders/s, p99 ${fmt(run.latencyMs.p99, 1)} ms${otherAnswers(run, load.respondAsync ? "202" : "201")}`);
  return { warmUp, run };
}

export function checked(what: string, found: string[]): string[] {
  progress(found.length === 0 ? `  ${what}: hold` : `  ${what}: VIOLATED (${found.length}): ${found.slice(0, 3).join("; ")}`);
  return found;
}

async function reference(url: string | undefined, workload: TextbookWorkload, config: BenchConfig): Promise<Reference | undefined> {
  if (!url) return undefined;
  progress(`  ${workload} · pgbench: reset.sql, then ${config.seconds} s of order_${workload}.sql at ${config.connections} clients`);
  try {
    const run = await runPgbench(url, workload, config);
    progress(`  ${workload} · pgbench: ${fmt(run.ordersPerSecond)} tps, p99 ${fmt(run.latencyMs.p99, 1)} ms${run.failed ? `, ${run.failed} failed` : ""}`);
    return run;
  } catch (error) {
    progress(`  ${workload} · pgbench FAILED: ${(error as Error).message}`);
    return { error: (error as Error).message };
  }
}

/** The all-in-one server on a fresh PostgreSQL database, seeded: what uniform, hot and async load. */
export interface Shop {
  server: Server;
  databaseUrl: string;
  db: Db;
}

export async function openShop(config: BenchConfig): Promise<Shop> {
  progress("all-in-one on PostgreSQL: fresh database, server, seeding through the API");
  const databaseUrl = await scratchDatabase(config.databaseUrl, `orderly_bench_${config.stamp}`);
  const server = await startServer({
    name: "all-in-one",
    env: { DATABASE_URL: databaseUrl, REDIS_URL: config.redisUrl, ORDERLY_DATA_DIR: join(config.scratchDir, "all-in-one") },
    logDir: config.workDir,
  });
  await seedShop({ products: server.url, accounts: server.url }, config.tenant, POSTGRES_CATALOGUE);
  const checks = openPostgres(databaseUrl, { max: 2 });
  onCleanup("close the checks' connections", () => checks.close());
  return { server, databaseUrl, db: checks.db };
}

/** P1: uniform SKUs, Orderly against pgbench's order_uniform.sql. */
export async function uniformPhase(config: BenchConfig, shop: Shop, pgbenchUrl: string | undefined): Promise<WorkloadResult> {
  progress("P1 uniform: two uniform SKUs per order, all-in-one on PostgreSQL, beside pgbench");
  const { run } = await warmAndMeasure(config, { label: "uniform · Orderly", url: shop.server.url, order: uniformOrder(POSTGRES_CATALOGUE) }, shop.databaseUrl);
  const invariants = checked("invariants 1-3", await settledInvariants(shop.db, config.tenant));
  return { orderly: httpLoad(run), reference: await reference(pgbenchUrl, "uniform", config), invariants };
}

/** P2: every order takes the hot SKU; refusals counted apart; zero oversell; the disk's flush ceiling beside it. */
export async function hotPhase(config: BenchConfig, shop: Shop, pgbenchUrl: string | undefined, facts: ServerFacts): Promise<HotResult> {
  progress("P2 hot: every order takes SKU-0 and one other SKU");
  progress("  flush ceiling: pg_test_fsync -s 2 on the data directory's filesystem (about 30 s)");
  const flush = await flushCeiling(facts);
  progress("skipped" in flush ? `  flush ceiling not measured: ${flush.skipped}` : `  flush ceiling: ${fmt(flush.commitsPerSecond)} commits/s one session could flush (${flush.walSyncMethod})`);
  const before = await hotStock(shop.db, config.tenant);
  const { warmUp, run } = await warmAndMeasure(config, { label: "hot · Orderly", url: shop.server.url, order: hotOrder(POSTGRES_CATALOGUE), watchSku: HOT_SKU }, shop.databaseUrl);
  const invariants = checked("invariants 1-3", await settledInvariants(shop.db, config.tenant));
  const after = await hotStock(shop.db, config.tenant);
  const oversell = checked(`no oversell of ${HOT_SKU}`, oversellProblems(before, after, [warmUp, run]));
  return { orderly: httpLoad(run), reference: await reference(pgbenchUrl, "hot", config), invariants, flush, hotStock: after, oversell };
}

/** Asynchronous placement: the uniform load with `Prefer: respond-async`, then the backlog's drain. */
export async function asyncPhase(config: BenchConfig, shop: Shop): Promise<AsyncResult> {
  progress("async: the uniform load with Prefer: respond-async, then the backlog drains");
  const { run } = await warmAndMeasure(
    config,
    { label: "async · Orderly", url: shop.server.url, order: uniformOrder(POSTGRES_CATALOGUE), respondAsync: true },
    shop.databaseUrl,
  );
  const loadEnded = performance.now();
  const boundSeconds = Math.max(60, 10 * config.seconds);
  progress(`  ${fmt(run.accepted.length)} orders accepted (202); waiting until none is PENDING (at most ${boundSeconds} s)`);
  let pending = await pendingOrders(shop.db, config.tenant);
  let lastLine = loadEnded;
  while (pending > 0 && performance.now() - loadEnded < boundSeconds * 1000) {
    await sleep(100);
    pending = await pendingOrders(shop.db, config.tenant);
    if (performance.now() - lastLine >= 5_000) {
      lastLine = performance.now();
      progress(`  async · drain  ${Math.round((lastLine - loadEnded) / 1000)} s  ${fmt(pending)} orders still PENDING`);
    }
  }
  const drainSeconds = (performance.now() - loadEnded) / 1000;
  const statuses = await query<{ status: string; n: number }>(
    shop.databaseUrl,
    "select status, count(*)::int as n from orders where id = any($1::text[]) group by status",
    [run.accepted],
  );
  const outcomes = Object.fromEntries(statuses.map((s) => [s.status, s.n]));
  const lost = run.accepted.length - (outcomes.PAID ?? 0) - (outcomes.CANCELLED ?? 0);
  const drainedPerSecond = run.accepted.length / (run.seconds + drainSeconds);
  progress(
    `  drained in ${fmt(drainSeconds, 1)} s: ${fmt(drainedPerSecond)} orders/s overall; ` +
      `${Object.entries(outcomes).map(([status, n]) => `${status} ${n}`).join(", ")}${lost > 0 ? `; ${lost} LOST` : ""}`,
  );
  const invariants = checked("invariants 1-3", await settledInvariants(shop.db, config.tenant));
  return { accepted: httpLoad(run), drainSeconds, drained: pending === 0, drainedPerSecond, outcomes, lost, invariants };
}

export interface SplitResult extends WorkloadResult {
  settleSeconds: number;
  /** Every answer with a status (201, 202, 409, …) per second of the measured load. */
  answersPerSecond: number;
  /** Each service's CPU time (user + system) over the measured load, per answer. */
  cpuMsPerAnswer: Record<string, number>;
}

/**
 * P3: five services as processes on one database and RabbitMQ; the uniform load on the orders
 * service, which places by saga or, with `placement` 2pc, by two-phase commit.
 */
export async function splitPhase(config: BenchConfig, placement: "saga" | "2pc" = "saga"): Promise<SplitResult | { skipped: string }> {
  progress(`P3 split (${placement}): five services as processes, RabbitMQ between them`);
  try {
    const probe = new Connection({ url: config.amqpUrl });
    await probe.onConnect(3_000).finally(() => probe.close());
  } catch {
    const skipped = `no RabbitMQ answers at ${new URL(config.amqpUrl).host} (set AMQP_URL)`;
    progress(`  split SKIPPED: ${skipped}`);
    return { skipped };
  }
  const databaseUrl = await scratchDatabase(config.databaseUrl, `orderly_bench_split_${placement}_${config.stamp}`);
  const prefix = `bench-${placement}-${config.stamp}`;
  // Registered before the services start, so it runs after they stop.
  onCleanup("delete the split deployment's RabbitMQ queues", () => deleteRabbitTopology(config.amqpUrl, prefix, BUS_CONSUMERS, DEFAULT_RETRY_DELAYS_MS));
  const checks = openPostgres(databaseUrl, { max: 2 });
  onCleanup("close the split checks' connections", () => checks.close());
  const names = ["inventory", "payments", "coupons", "shipping", "orders"] as const;
  const servers = Object.fromEntries(
    await Promise.all(
      names.map(async (service) => {
        const env = { DATABASE_URL: databaseUrl, AMQP_URL: config.amqpUrl, ORDERLY_AMQP_PREFIX: prefix, REDIS_URL: config.redisUrl, ORDERLY_DATA_DIR: join(config.scratchDir, service), ORDERLY_PLACEMENT: placement };
        return [service, await startServer({ name: `split-${service}`, args: ["--services", service], env, logDir: config.workDir })] as const;
      }),
    ),
  ) as Record<(typeof names)[number], Server>;
  try {
    await seedShop({ products: servers.inventory.url, accounts: servers.payments.url }, config.tenant, POSTGRES_CATALOGUE);
    // The orders service prices from its copy of the catalogue, filled by the inventory's events.
    const entries = async () => Number((await rows<{ n: number }>(checks.db, sql`select count(*)::int as n from order_catalogue where tenant_id = ${config.tenant}`))[0]?.n);
    for (const until = Date.now() + 120_000; (await entries()) < POSTGRES_CATALOGUE.skus + 1; await sleep(250)) {
      if (Date.now() > until) throw new Error("the orders service's catalogue copy was not complete 120 s after seeding");
    }
    // Each service's CPU per answer (201, 202 or a refusal): what the saga costs, whatever the share
    // of answers that beat the 3 s wait (below ~21 settled/s at 64 connections they turn into 202s).
    const cpuOf = async () => Object.fromEntries(await Promise.all(names.map(async (service) => [service, await cpuSeconds(servers[service].url)] as const)));
    let cpuBefore: Record<string, number> = {};
    const { run } = await warmAndMeasure(
      config,
      { label: `split${placement === "2pc" ? " 2pc" : ""} · Orderly`, url: servers.orders.url, order: uniformOrder(POSTGRES_CATALOGUE) },
      databaseUrl,
      async () => void (cpuBefore = await cpuOf()),
    );
    const cpuAfter = await cpuOf();
    const answered = Object.entries(run.answers).filter(([status]) => /^\d+$/.test(status)).reduce((sum, [, n]) => sum + n, 0);
    const cpuMsPerAnswer = Object.fromEntries(names.map((service) => [service, ((cpuAfter[service] as number) - (cpuBefore[service] as number)) * 1000 / Math.max(1, answered)]));
    progress(`  ${fmt(answered / run.seconds)} answers/s; CPU per answer: ${names.map((s) => `${s} ${fmt(cpuMsPerAnswer[s] as number, 1)} ms`).join(", ")}`);
    const settling = performance.now();
    const invariants = checked("invariants 1-3", await settledInvariants(checks.db, config.tenant));
    return { orderly: httpLoad(run), invariants, settleSeconds: (performance.now() - settling) / 1000, answersPerSecond: answered / run.seconds, cpuMsPerAnswer };
  } finally {
    await Promise.all(Object.values(servers).map((server) => server.stop()));
  }
}

/** P5: the embedded default (PGlite in the server's process, no DATABASE_URL), the uniform load. */
export async function embeddedPhase(config: BenchConfig): Promise<WorkloadResult> {
  progress("P5 embedded: the default, PGlite inside the server (no DATABASE_URL)");
  const dataDir = join(config.scratchDir, "embedded");
  const server = await startServer({ name: "embedded", env: { ORDERLY_DATA_DIR: dataDir }, logDir: config.workDir, readyWithinMs: 120_000 });
  let run: LoadRun;
  try {
    await seedShop({ products: server.url, accounts: server.url }, config.tenant, EMBEDDED_CATALOGUE);
    const tokens = config.tokens.slice(0, EMBEDDED_CATALOGUE.users);
    ({ run } = await warmAndMeasure({ ...config, tokens }, { label: "embedded · Orderly", url: server.url, order: uniformOrder(EMBEDDED_CATALOGUE) }));
  } finally {
    await server.stop(); // graceful: placements in flight finish, and the data directory is free for the check
  }
  const database = await openPglite(dataDir);
  try {
    return { orderly: httpLoad(run), invariants: checked("invariants 1-3", await invariantsHold(database.db)) };
  } finally {
    await database.close();
  }
}

/** P6: idle memory and time to ready, on PostgreSQL and embedded, each on its second start. */
export async function footprintPhase(config: BenchConfig): Promise<FootprintResult> {
  progress("P6 footprint: ready time and idle memory, second start on an existing database");
  const postgresUrl = await scratchDatabase(config.databaseUrl, `orderly_bench_footprint_${config.stamp}`);
  const measure = async (name: string, env: Record<string, string | undefined>): Promise<Start> => {
    const first = await startServer({ name: `${name}-first-start`, env, logDir: config.workDir, readyWithinMs: 120_000 });
    await first.stop();
    const second = await startServer({ name: `${name}-second-start`, env, logDir: config.workDir });
    try {
      await sleep(5_000);
      const { processBytes, treeBytes } = second.memory();
      const start = { readyMs: second.readyMs, firstReadyMs: first.readyMs, rssBytes: treeBytes, processRssBytes: processBytes };
      progress(
        `  ${name}: ready in ${fmt(start.readyMs)} ms (first start ${fmt(start.firstReadyMs)} ms), ` +
          `idle RSS ${fmt(treeBytes / 2 ** 20, 1)} MiB (server process alone ${fmt(processBytes / 2 ** 20, 1)} MiB)`,
      );
      return start;
    } finally {
      await second.stop();
    }
  };
  return {
    postgres: await measure("footprint-postgres", { DATABASE_URL: postgresUrl, REDIS_URL: config.redisUrl, ORDERLY_DATA_DIR: join(config.scratchDir, "footprint-postgres") }),
    embedded: await measure("footprint-embedded", { ORDERLY_DATA_DIR: join(config.scratchDir, "footprint-embedded") }),
  };
}
