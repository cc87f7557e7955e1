import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openTestPostgres, postgresUrl } from "./support/databases.ts";
import { createHarness, type Harness } from "./support/harness.ts";
import { invariantViolations } from "./support/invariants.ts";

// The batching writers (src/flows/local-placement.ts): once several placements of one SKU (or many
// of one tenant) are under way, orders are placed many per transaction, each all or nothing. These
// tests place orders at once for real and check the outcome by the invariants and by what each
// answer says was taken.
// PostgreSQL only: PGlite has one connection and runs one statement or transaction at a time, so no
// row lock is ever waited on there, and what these tests hold a lock for cannot happen.

/** Batches the writers ran (all kinds, or one) and orders in them, and how many held more than `above` orders. */
async function batchesOf(h: Harness, above: number, writer?: "sku" | "tenant" | "settle") {
  const { values } = await h.services.metrics.placementBatches.get();
  const total = (name: string, le?: number) =>
    values
      .filter((v) => v.metricName === `orderly_placement_batch_orders_${name}` && (le === undefined || (v.labels as { le?: number }).le === le))
      .filter((v) => writer === undefined || (v.labels as { writer?: string }).writer === writer)
      .reduce((n, v) => n + v.value, 0);
  const count = total("count");
  return { count, orders: total("sum"), larger: count - total("bucket", above) };
}

const BUYERS = 40;
const HOT_STOCK = 120;

describe.runIf(postgresUrl())("hot-SKU batches on PostgreSQL", () => {
  let h: Harness;
  let admin: string;
  const tokens: string[] = [];

  beforeAll(async () => {
    h = await createHarness(await openTestPostgres({ max: 24 }));
    admin = await h.token("hot", "root", ["admin"]);
    for (let i = 0; i < BUYERS; i++) tokens.push(await h.token("hot", `buyer-${i}`));
    // A fifth of the buyers can afford nothing: their orders must be refused inside batches that place others.
    await h.seed("hot", {
      products: [["HOT", 100, HOT_STOCK], ...Array.from({ length: 8 }, (_, i) => [`SKU-${i}`, 50 + i, 1_000] as [string, number, number])],
      credits: Array.from({ length: BUYERS }, (_, i) => [`buyer-${i}`, i % 5 === 0 ? 1 : 100_000] as [string, number]),
    });
    await h.call("PUT", "/api/v1/coupons/HOT10", { token: admin, body: { discount: { type: "amount", value: 10 }, maxRedemptions: 25 } });
  });
  afterAll(() => h?.close());

  it("places 240 simultaneous orders of one SKU many per transaction: no oversell, each order all or nothing, answers replayable", async () => {
    const bodies = Array.from({ length: 240 }, (_, i) =>
      h.orderBody([["HOT", 1 + (i % 2)], [`SKU-${i % 8}`, 1]], {
        ...(i % 4 === 0 ? { couponCode: "HOT10" } : {}),
        payment: { method: i % 7 === 0 ? "external" : "balance" },
      }),
    );
    const key = (i: number) => (i % 2 === 0 ? { "idempotency-key": `hot-${i}` } : undefined);
    const place = (i: number) => h.call("POST", "/api/v1/orders", { token: tokens[i % BUYERS], body: bodies[i], ...(key(i) ? { headers: key(i) } : {}) });
    const results = await Promise.all(bodies.map((_, i) => place(i)));
    await h.quiesce();

    expect(results.filter((r) => r.status >= 500)).toEqual([]);
    expect(results.every((r) => [201, 202, 409].includes(r.status))).toBe(true);
    const codes = new Set(results.filter((r) => r.status === 409).map((r) => r.body.code));
    expect(codes).toContain("INSUFFICIENT_FUNDS");
    expect(codes).toContain("OUT_OF_STOCK");

    const batches = await batchesOf(h, 1);
    expect(batches.count).toBeGreaterThan(0);
    expect(batches.larger).toBeGreaterThan(0); // some transaction placed several orders
    expect(batches.orders / batches.count).toBeGreaterThan(1);

    // Stock: what the placed orders hold is what left the shelf, and never more than there was.
    const placed = results.filter((r) => r.status === 201 || r.status === 202);
    const hotUnits = placed.flatMap((r) => r.body.items as { sku: string; quantity: number }[]).filter((i) => i.sku === "HOT").reduce((n, i) => n + i.quantity, 0);
    const hot = (await h.call("GET", "/api/v1/products/HOT", { token: admin })).body;
    expect(hotUnits).toBeLessThanOrEqual(HOT_STOCK);
    expect(hot.available).toBe(HOT_STOCK - hotUnits);
    // Coupons: the redemptions are the placed orders that carry the coupon.
    const couponed = placed.filter((r) => r.body.couponCode === "HOT10").length;
    expect((await h.call("GET", "/api/v1/coupons/HOT10", { token: admin })).body.redemptions).toBe(couponed);
    expect(await invariantViolations(h.services.database.db)).toEqual([]);

    // An answer stored from inside a batch is the answer replayed.
    for (const i of [0, 2, 4, 6, 8, 10]) {
      const again = await place(i);
      expect(again.headers["idempotent-replayed"]).toBe("true");
      expect({ status: again.status, body: again.body }).toEqual({ status: results[i]!.status, body: results[i]!.body });
    }
  });
});

describe.runIf(postgresUrl())("hot-SKU batches on PostgreSQL behind a held row lock", () => {
  let h: Harness;
  let url: string;
  const tokens: string[] = [];

  beforeAll(async () => {
    const database = await openTestPostgres({ max: 24 });
    url = database.url;
    h = await createHarness(database);
    for (let i = 0; i < 12; i++) tokens.push(await h.token("held", `buyer-${i}`));
    await h.seed("held", {
      products: [["HOT", 100, 20], ["COLD", 10, 100], ["LOCKED", 10, 100], ...Array.from({ length: 10 }, (_, i) => [`C${i}`, 10, 100] as [string, number, number])],
      credits: Array.from({ length: 12 }, (_, i) => [`buyer-${i}`, i % 4 === 3 ? 50 : 10_000] as [string, number]),
    });
  });
  afterAll(() => h?.close());

  it("places the orders that queued behind the lock in one transaction, refusing some of them and placing the rest", async () => {
    const blocker = new pg.Client({ connectionString: url });
    await blocker.connect();
    try {
      await blocker.query("begin");
      await blocker.query("select 1 from stock_levels where tenant_id = 'held' and sku = 'HOT' for update");
      // Twelve orders of one unit each for ten units: buyers 3, 7 and 11 cannot pay, the last ones find none left.
      const pending = Array.from({ length: 12 }, (_, i) =>
        h.call("POST", "/api/v1/orders", { token: tokens[i], body: h.orderBody([["HOT", 1], ["COLD", 1]]) }),
      );
      // Long enough for all twelve to reach the writer on a busy machine: one arriving after the commit makes another batch.
      await new Promise((r) => setTimeout(r, 1_500));
      expect((await batchesOf(h, 1)).count).toBeGreaterThan(0); // the writer's first batch waits on the lock
      await blocker.query("commit");
      const results = await Promise.all(pending);
      expect(results.map((r) => r.status).sort()).toEqual([...Array(9).fill(201), 409, 409, 409].sort());
      expect(results.filter((r) => r.status === 409).map((r) => r.body.code)).toEqual(["INSUFFICIENT_FUNDS", "INSUFFICIENT_FUNDS", "INSUFFICIENT_FUNDS"]);
      // The first three went on their own, the fourth opened the writer's batch of one (it waited on
      // the lock), and the eight that queued meanwhile went in one transaction.
      const batches = await batchesOf(h, 4);
      expect(batches.count).toBe(2);
      expect(batches.larger).toBe(1);
      const hot = (await h.call("GET", "/api/v1/products/HOT", { token: await h.token("held", "root", ["admin"]) })).body;
      expect(hot.available).toBe(11);
      expect(await invariantViolations(h.services.database.db)).toEqual([]);
    } finally {
      await blocker.end();
    }
  });

  it("lets an order that joined a batch and met a row lock leave it: the batch commits without it, the order waits on its own", async () => {
    const hotLock = new pg.Client({ connectionString: url });
    const otherLock = new pg.Client({ connectionString: url });
    await hotLock.connect();
    await otherLock.connect();
    try {
      const before = await batchesOf(h, 1);
      await hotLock.query("begin");
      await hotLock.query("select 1 from stock_levels where tenant_id = 'held' and sku = 'HOT' for update");
      await otherLock.query("begin");
      await otherLock.query("select 1 from stock_levels where tenant_id = 'held' and sku = 'LOCKED' for update");
      const answered: string[] = [];
      const order = (i: number, skus: string[]) =>
        h.call("POST", "/api/v1/orders", { token: tokens[i], body: h.orderBody(skus.map((sku) => [sku, 1])) }).then((r) => {
          answered.push(skus.includes("LOCKED") ? "locked" : "plain");
          return r;
        });
      // Only HOT is common to these orders: they go through its writer.
      const plain = [0, 1, 2, 4, 5, 6, 8, 9].map((i) => order(i, [`C${i}`, "HOT"]));
      await new Promise((r) => setTimeout(r, 1_000));
      const locked = order(10, ["HOT", "LOCKED"]); // queued behind other orders in HOT's writer: never first in a batch
      await new Promise((r) => setTimeout(r, 1_000));
      await hotLock.query("commit");
      const results = await Promise.all(plain);
      expect(results.map((r) => r.status)).toEqual(Array(8).fill(201));
      expect(answered).not.toContain("locked"); // it waits on LOCKED on its own, not in the batch
      const after = await batchesOf(h, 1);
      expect(after.larger - before.larger).toBeGreaterThan(0);
      await otherLock.query("commit");
      expect((await locked).status).toBe(201);
      expect(await invariantViolations(h.services.database.db)).toEqual([]);
    } finally {
      await hotLock.end();
      await otherLock.end();
    }
  });
});

describe.runIf(postgresUrl())("asynchronous orders on PostgreSQL, recorded and settled many per transaction", () => {
  let h: Harness;
  let admin: string;
  const tokens: string[] = [];
  const LIMITED = 60;

  beforeAll(async () => {
    h = await createHarness(await openTestPostgres({ max: 24 }));
    admin = await h.token("later", "root", ["admin"]);
    for (let i = 0; i < BUYERS; i++) tokens.push(await h.token("later", `buyer-${i}`));
    await h.seed("later", {
      products: [["LIMITED", 100, LIMITED], ...Array.from({ length: 8 }, (_, i) => [`SKU-${i}`, 50 + i, 1_000] as [string, number, number])],
      credits: Array.from({ length: BUYERS }, (_, i) => [`buyer-${i}`, i % 5 === 0 ? 1 : 100_000] as [string, number]),
    });
    await h.call("PUT", "/api/v1/coupons/LATER5", { token: admin, body: { discount: { type: "amount", value: 5 }, maxRedemptions: 5 } });
  });
  afterAll(() => h?.close());

  it("accepts 160 simultaneous orders with 202, then settles each PAID or CANCELLED for its reason: no oversell, money and coupons add up", async () => {
    const results = await Promise.all(
      Array.from({ length: 160 }, (_, i) =>
        h.call("POST", "/api/v1/orders", {
          token: tokens[i % BUYERS],
          body: h.orderBody([["LIMITED", 1], [`SKU-${i % 8}`, 1]], i % 3 === 0 ? { couponCode: "LATER5" } : {}),
          headers: { prefer: "respond-async" },
        }),
      ),
    );
    expect(results.map((r) => r.status)).toEqual(Array(160).fill(202));
    expect(results.every((r) => r.body.status === "PENDING")).toBe(true);
    await h.quiesce();

    const settled = await Promise.all(results.map(async (r, i) => (await h.call("GET", r.headers.location as string, { token: tokens[i % BUYERS] })).body));
    const paid = settled.filter((o) => o.status === "PAID");
    const cancelled = settled.filter((o) => o.status === "CANCELLED");
    expect(paid.length + cancelled.length).toBe(160);
    expect(new Set(cancelled.map((o) => o.cancelReason))).toEqual(new Set(["INSUFFICIENT_FUNDS", "OUT_OF_STOCK", "COUPON_UNAVAILABLE"]));
    // The paid orders hold what left the shelf, all of it: 60 units for 160 orders of one each.
    expect(paid.length).toBe(LIMITED);
    expect((await h.call("GET", "/api/v1/products/LIMITED", { token: admin })).body.available).toBe(0);
    expect((await h.call("GET", "/api/v1/coupons/LATER5", { token: admin })).body.redemptions).toBe(paid.filter((o) => o.couponCode === "LATER5").length);
    for (const [i, token] of tokens.entries()) {
      const spent = paid.filter((o) => o.userId === `buyer-${i}`).reduce((n, o) => n + o.total, 0);
      expect((await h.call("GET", "/api/v1/accounts/me", { token })).body.balance).toBe((i % 5 === 0 ? 1 : 100_000) - spent);
    }
    expect(await invariantViolations(h.services.database.db)).toEqual([]);

    // Recorded and settled many per transaction, not one commit per order.
    expect((await batchesOf(h, 1, "tenant")).larger).toBeGreaterThan(0);
    const settles = await batchesOf(h, 1, "settle");
    expect(settles.orders).toBeGreaterThanOrEqual(160);
    expect(settles.larger).toBeGreaterThan(0);
    expect(settles.count).toBeLessThan(settles.orders);
  });
});

describe.runIf(postgresUrl())("the settlement backlog's backpressure on PostgreSQL", () => {
  let h: Harness;
  let url: string;
  let buyer: string;

  beforeAll(async () => {
    const database = await openTestPostgres({ max: 24 });
    url = database.url;
    h = await createHarness(database, { env: { ORDERLY_SETTLEMENT_BACKLOG: "2" } });
    buyer = await h.token("room", "buyer");
    await h.seed("room", { products: [["HELD", 10, 100], ["OTHER", 10, 100]], credits: [["buyer", 10_000]] });
  });
  afterAll(() => h?.close());

  it("past the backlog, a 202 waits until some settlement ends (not its own), and never past its Prefer: wait", async () => {
    const held = new pg.Client({ connectionString: url });
    const other = new pg.Client({ connectionString: url });
    await held.connect();
    await other.connect();
    const place = (sku: string, prefer: string) => {
      const started = performance.now();
      return h
        .call("POST", "/api/v1/orders", { token: buyer, body: h.orderBody([[sku, 1]]), headers: { prefer } })
        .then((r) => ({ status: r.status, ms: performance.now() - started }));
    };
    const lock = async (client: pg.Client, sku: string) => {
      await client.query("begin");
      await client.query("select 1 from stock_levels where tenant_id = 'room' and sku = $1 for update", [sku]);
    };
    try {
      await lock(held, "HELD");
      await lock(other, "OTHER");
      // Two settlements under way (stuck behind the lock) fill the backlog; their 202s do not wait.
      expect((await Promise.all([place("HELD", "respond-async"), place("HELD", "respond-async")])).map((r) => r.status)).toEqual([202, 202]);
      // The third waits for room and, none freed, answers 202 once its 1 s is up: not before, not long after.
      const gaveUp = await place("HELD", "respond-async, wait=1");
      expect(gaveUp.status).toBe(202);
      expect(gaveUp.ms).toBeGreaterThanOrEqual(950);
      expect(gaveUp.ms).toBeLessThan(2_500);
      // The fourth, whose own settlement stays stuck behind OTHER's lock, may wait 20 s: it goes on
      // as soon as HELD's settlements end, with OTHER still locked.
      let answered = false;
      const waiting = place("OTHER", "respond-async, wait=20").finally(() => (answered = true));
      await new Promise((r) => setTimeout(r, 500));
      expect(answered).toBe(false);
      await held.query("commit");
      const room = await waiting;
      expect(room.status).toBe(202);
      expect(room.ms).toBeLessThan(10_000);
      await other.query("commit");
      await h.quiesce();
      const orders = (await h.call("GET", "/api/v1/orders?limit=10", { token: buyer })).body.data as { status: string }[];
      expect(orders.map((o) => o.status)).toEqual(Array(4).fill("PAID"));
      expect(await invariantViolations(h.services.database.db)).toEqual([]);
    } finally {
      await held.end();
      await other.end();
    }
  });
});
