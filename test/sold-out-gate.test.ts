import { randomBytes } from "node:crypto";
import { sql } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { rows } from "../src/db/client.ts";
import { openPostgres } from "../src/db/postgres.ts";
import { manualClock } from "../src/kit/clock.ts";
import type { SoldOutGate } from "../src/kit/sold-out-gate.ts";
import { startJobs } from "../src/ops/jobs.ts";
import { openTestPglite, openTestPostgres, postgresUrl } from "./support/databases.ts";
import { createHarness, type Harness } from "./support/harness.ts";
import { invariantViolations } from "./support/invariants.ts";
import { freePort } from "./support/ports.ts";

const redisUrl = process.env.REDIS_URL;
if (!redisUrl && process.env.CI === "true") throw new Error("REDIS_URL is not set: the sold-out gate cannot be tested on Redis in CI");

// Rate limits out of the way: hundreds of orders from a few dozen buyers in a second.
const env = (redis: string) => ({ REDIS_URL: redis, ORDERLY_RATE_LIMIT_RPS: "100000", ORDERLY_RATE_LIMIT_BURST: "100000" });

/** Counts the placements that reach the database (the executor every POST /orders admitted calls). */
function countPlacements(h: Harness): { reached: number } {
  const counter = { reached: 0 };
  const placement = h.services.placement;
  const place = placement.place.bind(placement);
  placement.place = (input, options) => {
    counter.reached++;
    return place(input, options);
  };
  return counter;
}

const gateRefusals = async (h: Harness) => (await h.services.metrics.soldOutRefusals.get()).values[0]?.value ?? 0;

const statusCounts = (results: { status: number }[]) =>
  results.reduce<Record<number, number>>((counts, r) => ({ ...counts, [r.status]: (counts[r.status] ?? 0) + 1 }), {});

describe.runIf(postgresUrl() && redisUrl)("a flash sale behind the sold-out gate, two replicas on PostgreSQL and Redis", () => {
  const STOCK = 40;
  const BUYERS = 80;
  const tenant = `flash-${randomBytes(4).toString("hex")}`;
  const clock = manualClock(new Date());
  let a: Harness;
  let b: Harness;
  let admin: string;
  const buyers: string[] = [];
  let reachedA: { reached: number };
  let reachedB: { reached: number };
  const reached = () => reachedA.reached + reachedB.reached;

  beforeAll(async () => {
    const database = await openTestPostgres({ max: 12 });
    // Replica A sweeps payment timeouts on a clock the test moves; both share one database and one Redis.
    a = await createHarness(database, { env: env(redisUrl as string), clock });
    b = await createHarness(openPostgres(database.url, { max: 12 }), { env: env(redisUrl as string) });
    reachedA = countPlacements(a);
    reachedB = countPlacements(b);
    admin = await a.token(tenant, "root", ["admin"]);
    for (let i = 0; i < BUYERS; i++) buyers.push(await a.token(tenant, `buyer-${i}`));
    await a.seed(tenant, {
      products: [["HOT", 500, STOCK], ["LAST", 700, 1], ["QUIET", 300, 1]],
      credits: Array.from({ length: BUYERS }, (_, i) => [`buyer-${i}`, 100_000] as [string, number]),
    });
  });
  afterAll(async () => {
    await b?.close(); // the second replica first: closing the first drops the database
    await a?.close();
  });

  /** One order of `quantity` SKU by buyer i, on replica A or B by parity. */
  const buy = (i: number, sku: string, options: { quantity?: number; external?: boolean } = {}) =>
    (i % 2 === 0 ? a : b).call("POST", "/api/v1/orders", {
      token: buyers[i % BUYERS],
      body: (i % 2 === 0 ? a : b).orderBody([[sku, options.quantity ?? 1]], options.external ? { payment: { method: "external" } } : {}),
    });
  const stockOf = async (sku: string) =>
    (await rows<{ available: number; sold: number; reserved: number }>(a.services.database.db, sql`select available::int, sold::int, reserved::int from stock_levels where tenant_id = ${tenant} and sku = ${sku}`))[0];

  it("sells exactly the stock to 400 simultaneous buyers on two replicas, then refuses the next 400 mostly without the database", async () => {
    const first = await Promise.all(Array.from({ length: 400 }, (_, i) => buy(i, "HOT")));
    await Promise.all([a.quiesce(), b.quiesce()]);
    expect(first.filter((r) => r.status >= 500)).toEqual([]);
    expect(first.every((r) => [201, 202, 409].includes(r.status))).toBe(true);
    expect(first.filter((r) => r.status === 409).every((r) => r.body.code === "OUT_OF_STOCK")).toBe(true);
    const [paid] = await rows<{ n: number }>(a.services.database.db, sql`select count(*)::int as n from orders where tenant_id = ${tenant} and status = 'PAID'`);
    expect(paid?.n).toBe(STOCK);
    expect(await stockOf("HOT")).toEqual({ available: 0, sold: STOCK, reserved: 0 });
    const firstReached = reached();

    const second = await Promise.all(Array.from({ length: 400 }, (_, i) => buy(i, "HOT")));
    expect(statusCounts(second)).toEqual({ 409: 400 });
    expect(second.every((r) => r.body.code === "OUT_OF_STOCK" && r.body.detail === "not enough stock of HOT")).toBe(true);
    const secondReached = reached() - firstReached;
    // Printed for the report: how many requests of each wave reached PostgreSQL.
    console.log(`sold-out gate: wave 1 reached the database ${firstReached}/400 times, wave 2 ${secondReached}/400; gate refusals ${await gateRefusals(a)} + ${await gateRefusals(b)}`);
    expect(secondReached).toBeLessThanOrEqual(20);
    expect((await gateRefusals(a)) + (await gateRefusals(b))).toBeGreaterThanOrEqual(380);
    expect(await stockOf("HOT")).toEqual({ available: 0, sold: STOCK, reserved: 0 });
    expect(await invariantViolations(a.services.database.db)).toEqual([]);
  });

  it("reopens at once when an admin restocks on the other replica, and sells exactly the new units", async () => {
    expect((await buy(1, "HOT")).status).toBe(409); // marked on B
    const before = reached();
    const restocked = await a.call("POST", "/api/v1/products/HOT/stock", { token: admin, body: { delta: 5 } });
    expect(restocked.status).toBe(200);
    const rush = await Promise.all(Array.from({ length: 60 }, (_, i) => buy(i + 1, "HOT")));
    await Promise.all([a.quiesce(), b.quiesce()]);
    expect(rush.filter((r) => r.status === 201 || r.status === 202)).toHaveLength(5);
    expect(rush.filter((r) => r.status === 409)).toHaveLength(55);
    expect(reached() - before).toBeGreaterThanOrEqual(5);
    expect(await stockOf("HOT")).toEqual({ available: 0, sold: STOCK + 5, reserved: 0 });
    expect(await invariantViolations(a.services.database.db)).toEqual([]);
  });

  it("reopens when an unpaid order holding the last unit is cancelled, on either replica", async () => {
    const held = await buy(0, "LAST", { external: true });
    expect(held.body.status).toBe("CREATED");
    expect((await buy(3, "LAST")).status).toBe(409); // the database refuses, B learns
    const before = reached();
    expect((await buy(5, "LAST")).status).toBe(409);
    expect((await buy(6, "LAST")).status).toBe(409);
    expect(reached() - before).toBe(0); // both replicas refuse from the gate
    const cancelled = await a.call("POST", `/api/v1/orders/${held.body.id}/cancel`, { token: buyers[0] });
    expect(cancelled.body.status).toBe("CANCELLED");
    const bought = await buy(7, "LAST");
    expect(bought.status).toBe(201);
    expect(await invariantViolations(a.services.database.db)).toEqual([]);
  });

  it("reopens within moments when a payment timeout returns the stock, told by the database's announcement alone", async () => {
    const held = await buy(2, "QUIET", { external: true });
    expect(held.body.status).toBe("CREATED");
    expect((await buy(9, "QUIET")).status).toBe(409);
    expect((await buy(11, "QUIET")).status).toBe(409);
    clock.advance(3_600_000);
    expect(await a.services.paymentTimeouts.sweep()).toBe(1); // no route clears anything: only the NOTIFY
    const started = Date.now();
    let bought = await buy(13, "QUIET");
    while (bought.status === 409 && Date.now() - started < 5_000) {
      await new Promise((r) => setTimeout(r, 20));
      bought = await buy(13, "QUIET");
    }
    console.log(`sold-out gate: a payment timeout reopened QUIET after ${Date.now() - started} ms`);
    expect(bought.status).toBe(201);
    expect(Date.now() - started).toBeLessThan(2_000); // jobs do not run in this test: the reconciliation did not do it
    expect(await invariantViolations(a.services.database.db)).toEqual([]);
  });

  it("reconciles, as a job on both replicas, a mark whose stock came back unannounced, and renews a mark that is still true", async () => {
    expect((await buy(1, "HOT")).status).toBe(409);
    // Stock returned behind the application's back (as if its announcement were lost).
    await a.services.database.db.execute(sql`update stock_levels set available = available + 2, adjusted = adjusted + 2 where tenant_id = ${tenant} and sku = 'HOT'`);
    await a.services.database.db.execute(sql`insert into stock_adjustments (tenant_id, sku, delta) values (${tenant}, 'HOT', 2)`);
    expect((await buy(1, "HOT")).status).toBe(409); // still marked
    // Only the reconciliation runs often here; one of the two replicas leads each period.
    const rarely = { paymentSweepMs: 3_600_000, recoveryMs: 3_600_000, sagaResumeMs: 3_600_000, purgeMs: 3_600_000, retentionPurgeMs: 3_600_000 };
    const stops = [startJobs(a.services, rarely), startJobs(b.services, rarely)];
    try {
      const started = Date.now();
      let bought = await buy(1, "HOT", { quantity: 2 });
      while (bought.status === 409 && Date.now() - started < 10_000) {
        await new Promise((r) => setTimeout(r, 100));
        bought = await buy(1, "HOT", { quantity: 2 });
      }
      console.log(`sold-out gate: the reconciliation job reopened HOT after ${Date.now() - started} ms`);
      expect(bought.status).toBe(201);
    } finally {
      for (const stop of stops) await stop();
    }
    expect((await buy(3, "HOT")).status).toBe(409);
    const { renewed } = await (a.services.soldOutGate as SoldOutGate).reconcile({ force: true });
    expect(renewed).toBeGreaterThanOrEqual(1);
    const before = reached();
    expect((await buy(5, "HOT")).status).toBe(409);
    expect(reached()).toBe(before);
    expect(await invariantViolations(a.services.database.db)).toEqual([]);
  });
});

describe.runIf(postgresUrl())("the sold-out gate with its Redis unreachable", () => {
  let h: Harness;
  const tenant = `down-${randomBytes(4).toString("hex")}`;

  beforeAll(async () => {
    h = await createHarness(await openTestPostgres({ max: 12 }), { env: env(`redis://127.0.0.1:${await freePort()}`) });
    // The rate limiter shares the dead Redis: it lets requests through as well (rate-limit.ts).
    await h.seed(tenant, { products: [["HOT", 500, 10]], credits: Array.from({ length: 30 }, (_, i) => [`buyer-${i}`, 100_000] as [string, number]) });
  });
  afterAll(() => h?.close());

  it("admits everything and lets PostgreSQL decide: exactly the stock sold, the rest refused, nothing slowed to a 5xx", async () => {
    const tokens = await Promise.all(Array.from({ length: 30 }, (_, i) => h.token(tenant, `buyer-${i}`)));
    const reached = countPlacements(h);
    const results = await Promise.all(Array.from({ length: 90 }, (_, i) => h.call("POST", "/api/v1/orders", { token: tokens[i % 30], body: h.orderBody([["HOT", 1]]) })));
    await h.quiesce();
    expect(results.filter((r) => r.status >= 500)).toEqual([]);
    expect(results.filter((r) => r.status === 201 || r.status === 202)).toHaveLength(10);
    expect(results.filter((r) => r.status === 409 && r.body.code === "OUT_OF_STOCK")).toHaveLength(80);
    expect(reached.reached).toBe(90);
    expect(await gateRefusals(h)).toBe(0);
    const errors = await h.services.metrics.soldOutGateErrors.get();
    expect(errors.values.find((v) => v.labels.during === "check")?.value).toBe(90);
    expect(await invariantViolations(h.services.database.db)).toEqual([]);
  });
});

describe("the in-process sold-out gate of the all-in-one without Redis (embedded database)", () => {
  let h: Harness;

  beforeAll(async () => {
    h = await createHarness(await openTestPglite());
    await h.seed("solo", { products: [["HOT", 500, 2]], credits: [["ann", 100_000]] });
  });
  afterAll(() => h?.close());

  it("refuses a sold-out SKU without a transaction, and reopens on a restock", async () => {
    const ann = await h.token("solo", "ann");
    const admin = await h.token("solo", "root", ["admin"]);
    const reached = countPlacements(h);
    const order = () => h.call("POST", "/api/v1/orders", { token: ann, body: h.orderBody([["HOT", 1]]) });
    expect((await order()).status).toBe(201);
    expect((await order()).status).toBe(201);
    expect((await order()).status).toBe(409);
    expect(reached.reached).toBe(3);
    for (let i = 0; i < 20; i++) expect((await order()).body.code).toBe("OUT_OF_STOCK");
    expect(reached.reached).toBe(3);
    expect(await gateRefusals(h)).toBe(20);
    expect((await h.call("POST", "/api/v1/products/HOT/stock", { token: admin, body: { delta: 1 } })).status).toBe(200);
    expect((await order()).status).toBe(201);
    expect(await invariantViolations(h.services.database.db)).toEqual([]);
  });
});
