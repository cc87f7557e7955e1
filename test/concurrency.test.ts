import { sql } from "drizzle-orm";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { rows } from "../src/db/client.ts";
import { openTestPostgres, postgresUrl } from "./support/databases.ts";
import { createHarness, duplicatingBus, type Harness, STRATEGIES } from "./support/harness.ts";
import { invariantViolations } from "./support/invariants.ts";

// PGlite runs one transaction at a time and can never show a lock wait or a deadlock, so these run
// on real PostgreSQL only. In CI, a missing DATABASE_URL fails here instead of skipping.
const variants = [
  ...STRATEGIES.map(({ strategy }) => ({ strategy, twice: false, name: `${strategy} strategy` })),
  { strategy: "saga" as const, twice: true, name: "saga strategy, every message delivered twice" },
];

describe.runIf(postgresUrl()).each(variants)("concurrent placement on PostgreSQL, $name", ({ strategy, twice }) => {
  let h: Harness;
  let admin: string;
  const BUYERS = 60;
  const tokens: string[] = [];

  beforeAll(async () => {
    h = await createHarness(await openTestPostgres({ max: 32 }), twice ? { bus: duplicatingBus() } : { strategy });
    admin = await h.token("flash", "root", ["admin"]);
    for (let i = 0; i < BUYERS; i++) tokens.push(await h.token("flash", `buyer-${i}`));
    // Each buyer can afford about three hot units: some orders must fail for money, not only for stock.
    await h.seed("flash", {
      products: [["HOT", 1000, 150], ...Array.from({ length: 12 }, (_, i) => [`SKU-${i}`, 100 + i, 40] as [string, number, number])],
      credits: Array.from({ length: BUYERS }, (_, i) => [`buyer-${i}`, 3_000 + (i % 3) * 1_000] as [string, number]),
    });
    await h.call("PUT", "/api/v1/coupons/FLASH50", { token: admin, body: { discount: { type: "amount", value: 50 }, maxRedemptions: 40 } });
  });
  afterAll(() => h?.close());

  const place = (i: number, body: object) => h.call("POST", "/api/v1/orders", { token: tokens[i % BUYERS], body });
  /** Orders of the flash tenant that hold stock (not cancelled), with the quantity of one SKU. */
  const liveOrders = (sku: string) =>
    rows<{ quantity: number; coupon_code: string | null }>(
      h.services.database.db,
      sql`select i.quantity, o.coupon_code from orders o join order_items i on i.order_id = o.id
          where o.tenant_id = 'flash' and o.status <> 'CANCELLED' and i.sku = ${sku}`,
    );
  const cancelledFor = async (reason: string) =>
    (await rows<{ n: number }>(h.services.database.db, sql`select count(*)::int as n from orders where tenant_id = 'flash' and cancel_reason = ${reason}`))[0]?.n ?? 0;

  it("never oversells one hot SKU, never overdraws a wallet, never over-redeems a coupon under 400 simultaneous buyers", async () => {
    const results = await Promise.all(
      Array.from({ length: 400 }, (_, i) =>
        place(i, h.orderBody([["HOT", 1 + (i % 3)]], {
          ...(i % 3 === 0 ? { couponCode: "FLASH50" } : {}),
          payment: { method: i % 5 === 0 ? "external" : "balance" },
        })),
      ),
    );
    expect(results.map((r) => r.status).filter((s) => s >= 500)).toEqual([]);
    // 201 placed, 202 still settling (the saga under this load), 409 refused.
    expect(results.every((r) => [201, 202, 409].includes(r.status))).toBe(true);
    await h.quiesce();
    const live = await liveOrders("HOT");
    expect(live.length).toBeGreaterThan(0);
    const refusedForStock =
      results.filter((r) => r.body.code === "OUT_OF_STOCK").length + (await cancelledFor("OUT_OF_STOCK"));
    expect(refusedForStock).toBeGreaterThan(0);
    const units = live.reduce((sum, o) => sum + o.quantity, 0);
    expect(units).toBeLessThanOrEqual(150);
    const hot = (await h.call("GET", "/api/v1/products/HOT", { token: admin })).body;
    expect(hot.available).toBe(150 - units);
    const couponUses = live.filter((o) => o.coupon_code === "FLASH50").length;
    expect(couponUses).toBeLessThanOrEqual(40);
    expect((await h.call("GET", "/api/v1/coupons/FLASH50", { token: admin })).body.redemptions).toBe(couponUses);
    expect(await invariantViolations(h.services.database.db)).toEqual([]);
  });

  it("keeps every invariant under 400 simultaneous multi-SKU orders in random order, with cancels racing them", async () => {
    let seed = 42;
    const random = (n: number) => {
      seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31;
      return seed % n;
    };
    const bodies = Array.from({ length: 400 }, () => {
      const skus = [...new Set(Array.from({ length: 1 + random(4) }, () => `SKU-${random(12)}`))];
      return h.orderBody(
        skus.map((sku) => [sku, 1 + random(3)]),
        { payment: { method: random(2) === 0 ? "external" : "balance" } },
      );
    });
    const cancels: Promise<{ status: number }>[] = [];
    const results = await Promise.all(
      bodies.map(async (body, i) => {
        const r = await place(i, body);
        // Cancel every other external order while the rest are still being placed.
        if (r.status === 201 && r.body.status === "CREATED" && i % 2 === 0) {
          cancels.push(h.call("POST", `/api/v1/orders/${r.body.id}/cancel`, { token: tokens[i % BUYERS] }));
        }
        return r;
      }),
    );
    const cancelled = await Promise.all(cancels);
    await h.quiesce();
    expect(results.map((r) => r.status).filter((s) => s >= 500)).toEqual([]);
    expect(cancelled.map((r) => r.status).every((s) => s === 200)).toBe(true);
    const [placed] = await rows<{ n: number }>(
      h.services.database.db,
      sql`select count(*)::int as n from orders where tenant_id = 'flash' and (status in ('PAID', 'CREATED') or cancel_reason = 'CUSTOMER_CANCELLED')
            and id in (select order_id from order_items where sku like 'SKU-%')`,
    );
    expect(placed?.n).toBeGreaterThan(50);
    expect(await invariantViolations(h.services.database.db)).toEqual([]);
  });
});

// A placement's statement that waits on a stock row's lock while the holder gives stock back must
// see the count it waited for. inventory_reserve once filtered the rows it took by the count as of its
// statement's snapshot (before the wait): it locked and checked every line, took only some, and raised
// "reservation of order … took 1 of 2 lines" (a 500); an order of that SKU alone was refused OUT_OF_STOCK.
describe.runIf(postgresUrl())("a placement waiting on a stock row while its stock comes back, on PostgreSQL", () => {
  let h: Harness;
  let url: string;
  let buyer: string;

  beforeAll(async () => {
    const database = await openTestPostgres({ max: 8 });
    url = database.url;
    h = await createHarness(database);
    buyer = await h.token("back", "buyer");
    // One unit each: an order of 3 fits only with the units that come back while it waits.
    await h.seed("back", { products: [["SHORT-A", 10, 1], ["SHORT-B", 10, 1], ["PLENTY", 10, 100]] });
  });
  afterAll(() => h?.close());

  /** Places `items` while another transaction holds `sku`'s row and adds 3 units to it, committing once the placement waits on it. */
  async function placeWhileStockComesBack(sku: string, items: [string, number][]) {
    const holder = new pg.Client({ connectionString: url });
    await holder.connect();
    try {
      const [{ pid }] = (await holder.query("select pg_backend_pid() as pid")).rows as [{ pid: number }];
      await holder.query("begin");
      // Stands for a release or a restock (initial + adjusted = available + reserved + sold holds).
      await holder.query("update stock_levels set available = available + 3, adjusted = adjusted + 3 where tenant_id = 'back' and sku = $1", [sku]);
      const placing = h.call("POST", "/api/v1/orders", { token: buyer, body: h.orderBody(items, { payment: { method: "external" } }) });
      for (let waited = 0; ; waited += 10) {
        const [row] = await rows<{ n: number }>(
          h.services.database.db,
          sql`select count(*)::int as n from pg_stat_activity where ${pid}::int = any (pg_blocking_pids(pid))`,
        );
        if (row?.n) break;
        if (waited > 10_000) throw new Error("the placement never waited on the held row");
        await new Promise((r) => setTimeout(r, 10));
      }
      await holder.query("commit");
      return await placing;
    } finally {
      await holder.end();
    }
  }

  it("takes every line of an order of several SKUs, with the units that came back", async () => {
    const r = await placeWhileStockComesBack("SHORT-A", [["PLENTY", 1], ["SHORT-A", 3]]);
    expect({ status: r.status, code: r.body.code }).toEqual({ status: 201, code: undefined });
    expect(await invariantViolations(h.services.database.db)).toEqual([]);
  });

  it("takes an order of that SKU alone instead of refusing it OUT_OF_STOCK", async () => {
    const r = await placeWhileStockComesBack("SHORT-B", [["SHORT-B", 3]]);
    expect({ status: r.status, code: r.body.code }).toEqual({ status: 201, code: undefined });
    expect(await invariantViolations(h.services.database.db)).toEqual([]);
  });
});
