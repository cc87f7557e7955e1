// Orderly's side of every comparison: a shop seeded through the public API, wallet-paid orders of
// two distinct SKUs placed over HTTP by autocannon, and the checks that the figures were honest
// (invariants 1-3, no oversell of the hot SKU, every accepted order settled).
import type { EventEmitter } from "node:events";
import { sql } from "drizzle-orm";
import autocannon from "autocannon";
import { createTokens } from "../src/auth/tokens.ts";
import { type Queryable, rows } from "../src/db/client.ts";
import { backlogOf } from "../src/kit/backlog.ts";
import { invariantViolations } from "../test/support/invariants.ts";
import { fmt, type HttpLoad, percentiles, sleep } from "./figures.ts";
import { progress } from "./lifecycle.ts";
import { JWT_SECRET } from "./servers.ts";

/** SKU-1 … SKU-<skus> are ordinary; SKU-0 is the hot one (the textbook's SKU 0). Users are user-1 … user-<users>. */
export interface Catalogue {
  skus: number;
  users: number;
}
export const HOT_SKU = "SKU-0";
const STOCK = 1_000_000_000; // as the textbook's: no run sells out, so any answer but a 201 comes from contention
const CREDIT = 1_000_000_000; // fen per wallet: enough for any run
const ADDRESS = { name: "Bench", phone: "+86 10 5555 0100", line1: "1 Bench Road", city: "Beijing", country: "CN" };

export interface OrderLine {
  sku: string;
  quantity: number;
}

const pick = (n: number) => 1 + Math.floor(Math.random() * n);
const quantity = () => pick(3);

/** Two distinct SKUs drawn uniformly, 1-3 of each (order_uniform.sql). */
export function uniformOrder(catalogue: Catalogue): () => OrderLine[] {
  return () => {
    const a = pick(catalogue.skus);
    let b = pick(catalogue.skus - 1);
    if (b >= a) b++;
    return [{ sku: `SKU-${a}`, quantity: quantity() }, { sku: `SKU-${b}`, quantity: quantity() }];
  };
}

/** The hot SKU and one other, 1-3 of each (order_hot.sql). */
export function hotOrder(catalogue: Catalogue): () => OrderLine[] {
  return () => [{ sku: HOT_SKU, quantity: quantity() }, { sku: `SKU-${pick(catalogue.skus)}`, quantity: quantity() }];
}

export async function customerTokens(tenant: string, users: number): Promise<string[]> {
  const tokens = createTokens({ secret: JWT_SECRET });
  return Promise.all(Array.from({ length: users }, (_, i) => tokens.sign({ tenantId: tenant, userId: `user-${i + 1}`, roles: ["customer"] }, 6 * 3600)));
}

/**
 * Products (with stock) and credited wallets through the admin API, 32 requests at a time. `products`
 * and `accounts` are the services that own those paths (the same server when all-in-one).
 */
export async function seedShop(to: { products: string; accounts: string }, tenant: string, catalogue: Catalogue): Promise<void> {
  const started = Date.now();
  const admin = await createTokens({ secret: JWT_SECRET }).sign({ tenantId: tenant, userId: "bench-admin", roles: ["admin"] }, 6 * 3600);
  const calls = [
    ...Array.from({ length: catalogue.skus + 1 }, (_, i) => ({
      url: `${to.products}/api/v1/products/SKU-${i}`,
      method: "PUT",
      body: { name: `Item ${i}`, price: 1000 + (i % 100) * 10, stock: STOCK },
    })),
    ...Array.from({ length: catalogue.users }, (_, i) => ({ url: `${to.accounts}/api/v1/accounts/user-${i + 1}/credits`, method: "POST", body: { amount: CREDIT } })),
  ];
  let next = 0;
  let failed = false;
  const send = async (call: (typeof calls)[number]) => {
    const response = await fetch(call.url, {
      method: call.method,
      headers: { authorization: `Bearer ${admin}`, "content-type": "application/json" },
      body: JSON.stringify(call.body),
    });
    if (!response.ok) throw new Error(`seeding: ${call.method} ${call.url} answered ${response.status} ${await response.text()}`);
  };
  const worker = async () => {
    while (next < calls.length && !failed) {
      await send(calls[next++]!).catch((error: unknown) => {
        failed = true; // the other workers stop too
        throw error;
      });
    }
  };
  const ticker = setInterval(() => progress(`  seeding: ${fmt(next)} of ${fmt(calls.length)} requests`), 10_000);
  await Promise.all(Array.from({ length: 32 }, worker)).finally(() => clearInterval(ticker));
  progress(`  seeded ${fmt(catalogue.skus + 1)} products and ${fmt(catalogue.users)} wallets in ${fmt((Date.now() - started) / 1000, 1)} s`);
}

export interface LoadOptions {
  /** Shown on progress lines, e.g. "uniform · Orderly". */
  label: string;
  url: string;
  seconds: number;
  connections: number;
  tokens: string[];
  order: () => OrderLine[];
  /** Sends `Prefer: respond-async` and counts 202 answers; otherwise 201 answers count. */
  respondAsync?: boolean;
  /** Tallies the units of this SKU by answer (the oversell check). */
  watchSku?: string;
  /** No progress lines (warm-up). */
  quiet?: boolean;
}

/** What one connection remembers between building a request and reading its answer. */
interface Context {
  units?: number;
}

export interface LoadRun extends HttpLoad {
  /** Units of the watched SKU: requested (an upper bound: the last request a connection built may not have gone out), and by answer. */
  watched: { requested: number; answered: Record<string, number> };
  /** Ids of the orders the counted answers announced (Location), with respond-async. */
  accepted: string[];
}

/**
 * Places orders over HTTP at `connections` concurrent connections for `seconds`: every completion
 * counted per second as it arrives, latencies kept per answer, a progress line every 5 s.
 */
export async function placeOrders(options: LoadOptions): Promise<LoadRun> {
  const { seconds, tokens, watchSku } = options;
  const counted = options.respondAsync ? 202 : 201;
  const perSecond: number[] = Array.from({ length: seconds }, () => 0);
  const latencies: number[] = [];
  const answers: Record<string, number> = {};
  const watched = { requested: 0, answered: {} as Record<string, number> };
  const accepted: string[] = [];
  const headers = (token: string) => ({
    "content-type": "application/json",
    authorization: `Bearer ${token}`,
    ...(options.respondAsync ? { prefer: "respond-async" } : {}),
  });

  const cannon: autocannon.Options = {
    url: options.url,
    connections: options.connections,
    duration: seconds,
    timeout: 30,
    requests: [
      {
        method: "POST",
        path: "/api/v1/orders",
        setupRequest: (request, context) => {
          const items = options.order();
          const units = items.find((line) => line.sku === watchSku)?.quantity ?? 0;
          (context as Context).units = units;
          watched.requested += units;
          const token = tokens[Math.floor(Math.random() * tokens.length)] as string;
          return { ...request, headers: headers(token), body: JSON.stringify({ items, payment: { method: "balance" }, shippingAddress: ADDRESS }) };
        },
        onResponse: (status, _body, context, responseHeaders) => {
          const { units } = context as Context;
          if (units) watched.answered[status] = (watched.answered[status] ?? 0) + units;
          const location = responseHeaders?.location;
          if (options.respondAsync && status === counted && location) accepted.push(location.slice(location.lastIndexOf("/") + 1));
        },
      },
    ],
  };
  const started = performance.now();
  let ticker: NodeJS.Timeout | undefined;
  const result = await new Promise<autocannon.Result>((resolve, reject) => {
    const instance = autocannon(cannon, (error, done) => (error ? reject(error) : resolve(done)));
    // The run emits (client, status, bytes, ms); @types/autocannon gives it the client's own signature.
    (instance as EventEmitter).on("response", (_client: unknown, status: number, _bytes: number, ms: number) => {
      answers[status] = (answers[status] ?? 0) + 1;
      if (status !== counted) return;
      latencies.push(ms);
      const second = Math.min(seconds - 1, Math.floor((performance.now() - started) / 1000));
      perSecond[second] = (perSecond[second] ?? 0) + 1;
    });
    if (!options.quiet) {
      ticker = setInterval(() => {
        const elapsed = (performance.now() - started) / 1000;
        if (elapsed < seconds) progress(`  ${options.label}  ${Math.round(elapsed)}/${seconds} s  ${fmt(latencies.length / elapsed)} orders/s so far`);
      }, 5_000);
    }
  });
  clearInterval(ticker);
  const elapsed = (performance.now() - started) / 1000;
  if (result.errors > result.timeouts) answers.error = result.errors - result.timeouts;
  if (result.timeouts > 0) answers.timeout = result.timeouts;
  return {
    seconds: elapsed,
    orders: latencies.length,
    ordersPerSecond: latencies.length / elapsed,
    perSecond,
    latencyMs: percentiles(latencies),
    answers,
    watched,
    accepted,
  };
}

const count = async (db: Queryable, statement: ReturnType<typeof sql>) => Number((await rows<{ n: number }>(db, statement))[0]?.n ?? 0);

export const pendingOrders = (db: Queryable, tenant: string) => count(db, sql`select count(*)::int as n from orders where tenant_id = ${tenant} and status = 'PENDING'`);

/**
 * Once the load has stopped: waits (up to the contract's 30 s) until no order is PENDING and the
 * outbox and sagas are idle, then checks invariants 1-3. The checker reads table after table, so a
 * violation is re-read for up to 30 s before it counts (messages still inside RabbitMQ land meanwhile).
 */
export async function settledInvariants(db: Queryable, tenant: string): Promise<string[]> {
  const quiet = async () => {
    const { outboxPending, sagasActive } = await backlogOf(db);
    return outboxPending + sagasActive === 0 && (await pendingOrders(db, tenant)) === 0;
  };
  const quietBy = Date.now() + 30_000;
  while (!(await quiet())) {
    if (Date.now() > quietBy) return [`${await pendingOrders(db, tenant)} orders still PENDING, or outbox / sagas busy, 30 s after the load stopped`];
    await sleep(250);
  }
  return invariantsHold(db);
}

/** Invariants 1-3, re-read for up to 30 s while they do not hold (see settledInvariants). */
export async function invariantsHold(db: Queryable): Promise<string[]> {
  let violations = await invariantViolations(db);
  for (const until = Date.now() + 30_000; violations.length > 0 && Date.now() < until; ) {
    await sleep(500);
    violations = await invariantViolations(db);
  }
  return violations;
}

export interface HotStock {
  initial: number;
  adjusted: number;
  available: number;
  reserved: number;
  sold: number;
}

export async function hotStock(db: Queryable, tenant: string): Promise<HotStock> {
  const [row] = await rows<Record<keyof HotStock, string>>(
    db,
    sql`select initial, adjusted, available, reserved, sold from stock_levels where tenant_id = ${tenant} and sku = ${HOT_SKU}`,
  );
  if (!row) throw new Error(`${HOT_SKU} has no stock row`);
  return { initial: Number(row.initial), adjusted: Number(row.adjusted), available: Number(row.available), reserved: Number(row.reserved), sold: Number(row.sold) };
}

/**
 * Zero oversell of the hot SKU: sold + reserved + available = stock, available ≥ 0, and the units sold
 * during the runs lie between what 201 answers confirmed and what was requested at all.
 */
export function oversellProblems(before: HotStock, after: HotStock, runs: LoadRun[]): string[] {
  const problems: string[] = [];
  const stock = after.initial + after.adjusted;
  if (after.sold + after.reserved + after.available !== stock) problems.push(`sold ${after.sold} + reserved ${after.reserved} + available ${after.available} != stock ${stock}`);
  if (after.available < 0) problems.push(`available ${after.available} < 0`);
  const sold = after.sold - before.sold;
  const confirmed = runs.reduce((sum, run) => sum + (run.watched.answered[201] ?? 0), 0);
  const requested = runs.reduce((sum, run) => sum + run.watched.requested, 0);
  if (sold < confirmed) problems.push(`${sold} units sold, but 201 answers confirmed ${confirmed}`);
  if (sold > requested) problems.push(`${sold} units sold, but only ${requested} were requested`);
  return problems;
}
