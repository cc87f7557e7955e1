import { sql } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { rows } from "../src/db/client.ts";
import { systemViewer } from "../src/modules/orders/orders.ts";
import { createHarness, databaseStrategyCases, gatedBus, type Harness } from "./support/harness.ts";
import { invariantViolations } from "./support/invariants.ts";

// Only the placement takes an order out of PENDING (api-contract.md §4, state machine). Cancelling a
// PENDING order used to answer 200 and, in the split deployment, leave the wallet debited.

describe.each(databaseStrategyCases())("an order being placed, on $name", ({ database, strategy }) => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness(await database.open(), { strategy });
    await h.seed("own", { products: [["MUG", 1_000, 50]], credits: [["ann", 40_000]] });
  });
  afterAll(() => h.close());

  it("cannot be cancelled by its owner or an admin: 409 INVALID_TRANSITION, and its wallet is debited once", async () => {
    const ann = await h.token("own", "ann");
    const admin = await h.token("own", "root", ["admin"]);
    for (let i = 0; i < 10; i++) {
      const placed = await h.call("POST", "/api/v1/orders", { token: ann, body: h.orderBody([["MUG", 1]]), headers: { prefer: "respond-async" } });
      expect(placed.status).toBe(202);
      const cancelled = await h.call("POST", `/api/v1/orders/${placed.body.id}/cancel`, { token: i % 2 ? admin : ann });
      // Still PENDING, or already PAID: neither can be cancelled.
      expect(cancelled.status).toBe(409);
      expect(cancelled.body.code).toBe("INVALID_TRANSITION");
    }
    await h.quiesce();
    const [paid] = await rows<{ n: number }>(h.services.database.db, sql`select count(*)::int as n from orders where tenant_id = 'own' and status = 'PAID'`);
    expect(paid?.n).toBe(10);
    expect((await h.call("GET", "/api/v1/accounts/me", { token: ann })).body.balance).toBe(40_000 - 10 * 1_000);
    expect(await invariantViolations(h.services.database.db)).toEqual([]);
  });
});

describe("a saga whose order left PENDING some other way", () => {
  // A reason that is not a placement refusal (CUSTOMER_CANCELLED) once reached the waiting request as a status it had no code for: a 500.
  it.each([null, "CUSTOMER_CANCELLED"] as const)("compensates every step that ran, and the waiting request gets 409 PLACEMENT_FAILED, not a 500 (cancel reason %s)", async (cancelReason) => {
    const bus = gatedBus();
    const h = await createHarness(await databaseStrategyCases()[0]!.database.open(), { bus });
    try {
      await h.seed("odd", { products: [["MUG", 1_000, 5]], credits: [["ann", 5_000]] });
      await h.call("PUT", "/api/v1/coupons/TEN", { token: await h.token("odd", "root", ["admin"]), body: { discount: { type: "amount", value: 100 }, maxRedemptions: 1 } });
      const ann = await h.token("odd", "ann");
      bus.hold(); // the saga's commands wait
      const answer = h.call("POST", "/api/v1/orders", { token: ann, body: h.orderBody([["MUG", 2]], { couponCode: "TEN" }), headers: { prefer: "wait=10" } });
      let orderId: string | undefined;
      for (let i = 0; i < 200 && !orderId; i++) {
        [{ id: orderId } = { id: undefined }] = await rows<{ id: string }>(h.services.database.db, sql`select id from orders where tenant_id = 'odd'`);
        if (!orderId) await new Promise((r) => setTimeout(r, 10));
      }
      // Something other than the saga ends the order (an operator, a bug): it moves as the placement would.
      await h.services.orders.withMoves(h.services.database, "odd", async (tx, moves) => {
        const order = await h.services.orders.lockOrder(tx, systemViewer("odd"), orderId as string);
        expect((await h.services.orders.move(tx, moves, { order: order!, by: "placement", to: "CANCELLED", payment: "voided", reason: "ended by hand", patch: { cancelReason } })).ok).toBe(true);
      });
      bus.release(); // every step now runs, and the saga finds its order gone from PENDING
      const r = await answer;
      expect(r.status).toBe(409);
      expect(r.body).toMatchObject({ code: "PLACEMENT_FAILED", orderId });
      await h.quiesce();
      expect((await h.call("GET", "/api/v1/accounts/me", { token: ann })).body.balance).toBe(5_000);
      expect((await h.call("GET", "/api/v1/products/MUG", { token: ann })).body.available).toBe(5);
      const [saga] = await rows<{ status: string; abort_reason: string }>(h.services.database.db, sql`select status, abort_reason from sagas where id = ${orderId}`);
      expect(saga?.status).toBe("compensated");
      expect(await invariantViolations(h.services.database.db)).toEqual([]);
    } finally {
      bus.release();
      await h.close();
    }
  });
});
