// `npm run bench`: orders/s of the all-in-one server on PostgreSQL over HTTP, beside pgbench running
// the very SQL one placement issues, and beside the split deployment (five processes, RabbitMQ), in
// the same run. Ratios are what to quote: absolute numbers drift on a shared machine.
// Env: DATABASE_URL (server to use), AMQP_URL (broker; the split phase is skipped without one in
// reach), BENCH_SECONDS (default 20), BENCH_CONNECTIONS (default 64).
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { join, resolve } from "node:path";
import autocannon from "autocannon";
import pg from "pg";
import { pino } from "pino";
import { createTokens } from "../src/auth/tokens.ts";
import { loadConfig } from "../src/config.ts";
import { sql } from "drizzle-orm";
import { Connection } from "rabbitmq-client";
import { type Database, openPostgres, rows } from "../src/db/client.ts";
import { backlogOf } from "../src/kit/backlog.ts";
import { deleteRabbitTopology } from "../src/kit/rabbit-bus.ts";
import { DEFAULT_RETRY_DELAYS_MS } from "../src/kit/relay.ts";
import { BUS_CONSUMERS, createServices, type Services } from "../src/services.ts";
import { invariantViolations } from "../test/support/invariants.ts";

const SECONDS = Number(process.env.BENCH_SECONDS ?? 20);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 64);
const BASE_URL = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
const DB_NAME = "orderly_bench";
const SPLIT_DB_NAME = "orderly_bench_split";
const AMQP_URL = process.env.AMQP_URL ?? "amqp://guest:guest@127.0.0.1:5672";
const TENANT = "bench";
const SKUS = 1000;
const USERS = 1000;
const JWT_SECRET = "bench-secret-bench-secret-bench-secret-0123";
const ROOT = resolve(import.meta.dirname, "..");
const OUT = join(ROOT, "bench", "results");
const ADDRESS = { name: "Bench", phone: "+86 10 5555 0100", line1: "1 Bench Road", city: "Beijing", country: "CN" };

type Workload = "uniform" | "hot";
interface Figures {
  ordersPerSecond: number;
  p50: number;
  p99: number;
  errors: number;
}

const benchUrl = (name = DB_NAME) => {
  const url = new URL(BASE_URL);
  url.pathname = `/${name}`;
  return url.toString();
};

async function recreateDatabase(name = DB_NAME): Promise<void> {
  const admin = new pg.Client({ connectionString: BASE_URL });
  await admin.connect();
  await admin.query(`drop database if exists ${name} with (force)`);
  await admin.query(`create database ${name}`);
  await admin.end();
}

function servicesOn(database: Database, newId?: (prefix: string) => string): Services {
  return createServices({
    config: loadConfig({}),
    database,
    secrets: { jwtSecret: JWT_SECRET, webhookSecret: JWT_SECRET },
    log: pino({ level: "silent" }),
    ...(newId ? { newId } : {}),
  });
}

async function seed(services: Services): Promise<void> {
  const { db } = services.database;
  await db.transaction(async (tx) => {
    await services.inventory.putProduct(tx, { tenantId: TENANT, sku: "HOT", name: "Hot item", price: 100, stock: 1e9 });
    await services.inventory.putProduct(tx, { tenantId: TENANT, sku: "SKU-CAPTURE", name: "Capture", price: 100, stock: 1e9 });
    for (let i = 0; i < SKUS; i++) await services.inventory.putProduct(tx, { tenantId: TENANT, sku: `SKU-${i}`, name: `Item ${i}`, price: 100 + i, stock: 1e9 });
    for (let i = 0; i < USERS; i++) await services.wallets.credit(tx, { tenantId: TENANT, userId: `user-${i}`, amount: 1e12 });
    await services.wallets.credit(tx, { tenantId: TENANT, userId: "user-capture", amount: 1e12 });
  });
}

/** Places one order through the real code with a query logger, and returns what it sent to PostgreSQL. */
async function capturePlacementSql(): Promise<{ query: string; params: unknown[] }[]> {
  const captured: { query: string; params: unknown[] }[] = [];
  let recording = false;
  const database = openPostgres(benchUrl(), { queryLogger: { logQuery: (query, params) => recording && captured.push({ query, params }) } });
  const services = servicesOn(database, (prefix) => (prefix === "ord" ? "ord_capture" : "wb_capture"));
  recording = true;
  const result = await services.placement.place(
    { tenantId: TENANT, userId: "user-capture", items: [{ sku: "SKU-CAPTURE", quantity: 1 }], paymentMethod: "balance", shippingAddress: ADDRESS },
    { respondAsync: false, waitMs: 3000 },
  );
  recording = false;
  await database.close();
  if (result.kind !== "placed") throw new Error(`capture placement failed: ${JSON.stringify(result)}`);
  return captured;
}

const quote = (text: string) => `'${text.replaceAll("'", "''")}'`;
const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d/;

/** The captured statements as a pgbench script: ids and SKUs become per-transaction variables. */
function pgbenchScript(statements: { query: string; params: unknown[] }[], workload: Workload): string {
  const sku = workload === "hot" ? "'HOT'" : "concat('SKU-', :s::text)";
  const unique = (prefix: string) => `concat('${prefix}', :run::text, '_', :client_id::text, '_', :k::text)`;
  const expression = (value: unknown): string => {
    if (value === null || value === undefined) return "NULL";
    if (typeof value === "number" || typeof value === "boolean") return String(value);
    const text = String(value);
    if (text === "ord_capture") return unique("ord_pgb");
    if (text === "WB_CAPTURE") return unique("WB_PGB");
    if (text === "user-capture") return "concat('user-', :u::text)";
    if (text === "SKU-CAPTURE") return sku;
    if (text.includes("SKU-CAPTURE")) return `replace(${quote(text)}, 'SKU-CAPTURE', ${sku})`;
    if (ISO.test(text)) return "now()";
    return quote(text);
  };
  const lines = ["\\set k :k + 1", `\\set s random(0, ${SKUS - 1})`, `\\set u random(0, ${USERS - 1})`];
  for (const { query, params } of statements) {
    // Highest placeholder first, so $1 never eats the start of $10.
    let text = query;
    for (let i = params.length; i >= 1; i--) text = text.replaceAll(`$${i}`, `(${expression(params[i - 1])})`);
    lines.push(`${text.replace(/\s+/g, " ").trim()};`);
  }
  return `${lines.join("\n")}\n`;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0;
}

function runPgbench(workload: Workload, run: number): Figures {
  const dir = join(OUT, `pgbench-${workload}`);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const script = join(dir, "placement.sql");
  writeFileSync(script, pgbenchScript(captured, workload));
  const url = new URL(benchUrl());
  const output = execFileSync(
    "pgbench",
    ["-n", "-M", "extended", "-c", String(CONNECTIONS), "-j", "2", "-T", String(SECONDS), "-D", "k=0", "-D", `run=${run}`,
      "-f", script, "-l", "--log-prefix", join(dir, "tx"), "-h", url.hostname, "-p", url.port || "5432", "-U", url.username || "postgres", DB_NAME],
    { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] },
  );
  const tps = Number(/tps = ([\d.]+)/.exec(output)?.[1]);
  const failed = Number(/number of failed transactions: (\d+)/.exec(output)?.[1] ?? 0);
  const latencies = readdirSync(dir)
    .filter((f) => f.startsWith("tx"))
    .flatMap((f) => readFileSync(join(dir, f), "utf8").trim().split("\n"))
    .map((line) => Number(line.split(" ")[2]) / 1000)
    .sort((a, b) => a - b);
  return { ordersPerSecond: tps, p50: percentile(latencies, 50), p99: percentile(latencies, 99), errors: failed };
}

async function freePort(): Promise<number> {
  return new Promise((resolvePort) => {
    const server = createServer().listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => resolvePort(typeof address === "object" && address ? address.port : 0));
    });
  });
}

async function startServer(port: number, split?: { service: string; prefix: string }): Promise<ChildProcess> {
  const child = spawn(process.execPath, [join(ROOT, "bin", "orderly.mjs"), "serve", ...(split ? ["--services", split.service] : [])], {
    env: {
      PATH: process.env.PATH,
      PORT: String(port),
      DATABASE_URL: benchUrl(split ? SPLIT_DB_NAME : DB_NAME),
      ...(split ? { AMQP_URL, ORDERLY_AMQP_PREFIX: split.prefix } : {}),
      ORDERLY_JWT_SECRET: JWT_SECRET,
      ORDERLY_DATA_DIR: join(OUT, "data"),
      ORDERLY_RATE_LIMIT_RPS: "1000000",
      ORDERLY_RATE_LIMIT_BURST: "1000000",
      LOG_LEVEL: "warn",
    },
    stdio: ["ignore", "inherit", "inherit"],
  });
  for (let i = 0; i < 100; i++) {
    try {
      if ((await fetch(`http://127.0.0.1:${port}/readyz`)).ok) return child;
    } catch {
      /* not up yet */
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  child.kill("SIGKILL");
  throw new Error("the server did not become ready");
}

async function runHttp(port: number, workload: Workload, tokens: string[], seconds: number): Promise<Figures & { created: number }> {
  let n = 0;
  const result = await autocannon({
    url: `http://127.0.0.1:${port}`,
    connections: CONNECTIONS,
    duration: seconds,
    requests: [
      {
        method: "POST",
        path: "/api/v1/orders",
        setupRequest: (request) => {
          n++;
          const sku = workload === "hot" ? "HOT" : `SKU-${Math.floor(Math.random() * SKUS)}`;
          return {
            ...request,
            headers: { "content-type": "application/json", authorization: `Bearer ${tokens[n % tokens.length]}` },
            body: JSON.stringify({ items: [{ sku, quantity: 1 }], payment: { method: "balance" }, shippingAddress: ADDRESS }),
          };
        },
      },
    ],
  });
  return {
    ordersPerSecond: result["2xx"] / result.duration,
    p50: result.latency.p50,
    p99: result.latency.p99,
    errors: result.non2xx + result.errors + result.timeouts,
    created: result["2xx"],
  };
}

/**
 * The split deployment: five processes on their own database and RabbitMQ, seeded over HTTP, then
 * the uniform workload against the orders service. Besides the answers (201 settled, or 202 still
 * settling) it counts orders actually PAID per second once everything settled.
 */
async function runSplit(tokens: string[]): Promise<(Figures & { paidPerSecond: number }) | undefined> {
  const prefix = `bench-${Date.now().toString(36)}`;
  try {
    const probe = new Connection({ url: AMQP_URL });
    await probe.onConnect(3_000).finally(() => probe.close());
  } catch {
    console.log(`split deployment skipped: no RabbitMQ at ${new URL(AMQP_URL).host}`);
    return undefined;
  }
  await recreateDatabase(SPLIT_DB_NAME);
  const services = ["inventory", "payments", "coupons", "shipping", "orders"] as const;
  const ports = Object.fromEntries(await Promise.all(services.map(async (s) => [s, await freePort()] as const))) as Record<(typeof services)[number], number>;
  const children: ChildProcess[] = [];
  const database = openPostgres(benchUrl(SPLIT_DB_NAME));
  try {
    for (const service of services) children.push(await startServer(ports[service], { service, prefix }));
    const admin = await createTokens({ secret: JWT_SECRET }).sign({ tenantId: TENANT, userId: "root", roles: ["admin"] }, 3600);
    const put = (port: number, path: string, method: string, body: unknown) =>
      fetch(`http://127.0.0.1:${port}/api/v1${path}`, { method, headers: { authorization: `Bearer ${admin}`, "content-type": "application/json" }, body: JSON.stringify(body) });
    for (let i = 0; i < SKUS; i += 50) {
      await Promise.all(Array.from({ length: 50 }, (_, j) => put(ports.inventory, `/products/SKU-${i + j}`, "PUT", { name: `Item ${i + j}`, price: 100 + i + j, stock: 1e9 })));
    }
    for (let i = 0; i < USERS; i += 50) {
      await Promise.all(Array.from({ length: 50 }, (_, j) => put(ports.payments, `/accounts/user-${i + j}/credits`, "POST", { amount: 1e12 })));
    }
    const count = async (statement: ReturnType<typeof sql>) => Number((await rows<{ n: number }>(database.db, statement))[0]?.n ?? 0);
    while ((await count(sql`select count(*)::int as n from order_catalogue`)) < SKUS) await new Promise((r) => setTimeout(r, 200));
    await runHttp(ports.orders, "uniform", tokens, 3); // warm-up
    const before = await count(sql`select count(*)::int as n from orders where status = 'PAID'`);
    const started = Date.now();
    const figures = await runHttp(ports.orders, "uniform", tokens, SECONDS);
    const busy = async () => {
      const { outboxPending, sagasActive } = await backlogOf(database.db);
      return outboxPending + sagasActive > 0;
    };
    while ((await busy()) && Date.now() - started < (SECONDS + 120) * 1000) await new Promise((r) => setTimeout(r, 500));
    const paid = (await count(sql`select count(*)::int as n from orders where status = 'PAID'`)) - before;
    // Confirms still inside RabbitMQ are invisible here: the invariants must come to hold within 30 s.
    let violations = await invariantViolations(database.db);
    for (let waited = 0; violations.length > 0 && waited < 30_000; waited += 500) {
      await new Promise((r) => setTimeout(r, 500));
      violations = await invariantViolations(database.db);
    }
    if (violations.length > 0) throw new Error(`split deployment invariants violated:\n${violations.join("\n")}`);
    return { ...figures, paidPerSecond: paid / ((Date.now() - started) / 1000) };
  } finally {
    for (const child of children) child.kill("SIGTERM");
    await database.close();
    await deleteRabbitTopology(AMQP_URL, prefix, BUS_CONSUMERS, DEFAULT_RETRY_DELAYS_MS);
  }
}

const fmt = (n: number, digits = 0) => n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
let captured: { query: string; params: unknown[] }[] = [];

async function main() {
  mkdirSync(OUT, { recursive: true });
  console.log(`bench: ${CONNECTIONS} connections, ${SECONDS} s per run, PostgreSQL database ${DB_NAME}`);
  await recreateDatabase();
  const setupDb = openPostgres(benchUrl());
  await setupDb.migrate();
  await seed(servicesOn(setupDb));
  await setupDb.close();
  captured = await capturePlacementSql();
  console.log(`one placement = ${captured.length} SQL statements (${captured.filter((c) => !/^(begin|commit)$/i.test(c.query.trim())).length} besides BEGIN/COMMIT)`);

  const tokens = await Promise.all(
    Array.from({ length: USERS }, (_, i) => createTokens({ secret: JWT_SECRET }).sign({ tenantId: TENANT, userId: `user-${i}`, roles: ["customer"] }, 3600)),
  );
  const port = await freePort();
  const server = await startServer(port);
  const results: Record<string, { ours: Figures; pgbench: Figures }> = {};
  try {
    for (const [run, workload] of (["uniform", "hot"] as const).entries()) {
      await runHttp(port, workload, tokens, 3); // warm-up
      const ours = await runHttp(port, workload, tokens, SECONDS);
      const pgbench = runPgbench(workload, run + 1);
      results[workload] = { ours, pgbench };
    }
  } finally {
    server.kill("SIGTERM");
  }

  const split = await runSplit(tokens);

  const check = openPostgres(benchUrl());
  const violations = await invariantViolations(check.db);
  await check.close();

  console.log("\nworkload  | ours orders/s | p50 ms | p99 ms | errors | pgbench tps | p50 ms | p99 ms | ours / pgbench");
  for (const [workload, { ours, pgbench }] of Object.entries(results)) {
    console.log(
      [workload.padEnd(9), fmt(ours.ordersPerSecond).padStart(13), fmt(ours.p50, 1).padStart(6), fmt(ours.p99, 1).padStart(6), String(ours.errors).padStart(6),
        fmt(pgbench.ordersPerSecond).padStart(11), fmt(pgbench.p50, 1).padStart(6), fmt(pgbench.p99, 1).padStart(6),
        `${fmt(ours.ordersPerSecond / pgbench.ordersPerSecond, 2)}x`.padStart(14)].join(" | "),
    );
  }
  if (split) {
    const local = results.uniform?.ours as Figures;
    console.log(
      `\nsplit deployment (5 processes, RabbitMQ), uniform: ${fmt(split.ordersPerSecond)} answers/s (2xx), p50 ${fmt(split.p50, 1)} ms, ` +
        `p99 ${fmt(split.p99, 1)} ms, errors ${split.errors}; ${fmt(split.paidPerSecond)} orders PAID/s until settled; ` +
        `all-in-one / split = ${fmt(local.ordersPerSecond / split.paidPerSecond, 2)}x (invariants hold)`,
    );
  }
  console.log(violations.length === 0 ? "\ninvariants 1-3: hold" : `\ninvariants VIOLATED:\n${violations.join("\n")}`);
  writeFileSync(join(OUT, "latest.json"), JSON.stringify({ at: new Date().toISOString(), seconds: SECONDS, connections: CONNECTIONS, statements: captured.length, results, split, violations }, null, 2));
  if (violations.length > 0) process.exitCode = 1;
}

await main();
