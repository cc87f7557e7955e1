import { sql } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Queryable } from "../src/db/client.ts";
import { openTestPglite } from "./support/databases.ts";
import { createHarness, type Harness } from "./support/harness.ts";
import { invariantViolations } from "./support/invariants.ts";

// The checker every invariant suite and the bench rely on: it must see each kind of break it looks for.
describe("the invariant checker", () => {
  let h: Harness;
  let orderId: string;

  beforeAll(async () => {
    h = await createHarness(await openTestPglite());
    // Two tenants with the same SKUs and coupon code: what one holds must never be counted for the other.
    for (const tenant of ["inv", "other"]) {
      const admin = await h.token(tenant, "root", ["admin"]);
      await h.seed(tenant, { products: [["A", 100, 10], ["B", 50, 10]], credits: [["u1", 1_000]] });
      await h.call("PUT", "/api/v1/coupons/TEN", { token: admin, body: { discount: { type: "amount", value: 10 }, maxRedemptions: 5 } });
      const placed = await h.call("POST", "/api/v1/orders", { token: await h.token(tenant, "u1"), body: h.orderBody([["A", 2], ["B", 1]], { couponCode: "TEN" }) });
      expect(placed.status).toBe(201);
      if (tenant === "inv") orderId = placed.body.id;
    }
    await h.quiesce();
  });
  afterAll(() => h?.close());

  /** The violations found after `corrupt`, inside a transaction that is then rolled back. */
  async function violationsAfter(corrupt: (t: Queryable) => Promise<unknown>): Promise<string[]> {
    let found: string[] = [];
    await h.services.database.db
      .transaction(async (t) => {
        await corrupt(t);
        found = await invariantViolations(t);
        throw new Error("roll back");
      })
      .catch((error: Error) => {
        if (error.message !== "roll back") throw error;
      });
    return found;
  }

  it("finds nothing in a shop where an order was placed and paid", async () => {
    expect(await invariantViolations(h.services.database.db)).toEqual([]);
  });

  it("sees stock that does not add up, sold units no order holds, and a paid order still holding a reservation, in its own tenant only", async () => {
    expect(await violationsAfter((t) => t.execute(sql`update stock_levels set available = available - 1 where tenant_id = 'inv' and sku = 'A'`))).toEqual([
      "stock inv/A: 10+0 != 7+0+2",
    ]);
    expect(await violationsAfter((t) => t.execute(sql`update stock_reservations set status = 'reserved' where order_id = ${orderId} and sku = 'B'`))).toEqual([
      "stock inv/B: reserved 0 != held by orders 1",
      "stock inv/B: sold 1 != sold to orders 0",
      `reservation of order ${orderId} outlives it (status PAID)`,
      `paid order ${orderId} still holds a reservation`,
    ]);
  });

  it("sees a coupon's counter that disagrees with its redemptions", async () => {
    expect(await violationsAfter((t) => t.execute(sql`update coupons set redemptions = redemptions + 1 where tenant_id = 'inv' and code = 'TEN'`))).toEqual([
      "coupon inv/TEN: counter 2 != redemptions 1",
    ]);
  });
});
