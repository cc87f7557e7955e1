import { sql } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { rows } from "../src/db/client.ts";
import { openTestPostgres, postgresUrl } from "./support/databases.ts";
import { createHarness, type Harness } from "./support/harness.ts";

// The reconciliation report (api-contract.md §6): the checks of §5 on a real PostgreSQL, first on a
// shop where everything holds, then after each kind of damage is done to its tables by hand: every
// check names what it found, for its tenant only, through the admin API.

describe.runIf(postgresUrl())("reconciliation (PostgreSQL, all-in-one)", () => {
  let h: Harness;
  let admin: string;
  let buyer: string;
  const db = () => h.services.database.db;

  beforeAll(async () => {
    h = await createHarness(await openTestPostgres({ max: 4 }));
    admin = await h.token("rec", "olga", ["admin"]);
    buyer = await h.token("rec", "bea");
    await h.seed("rec", { products: [["BOX", 500, 50], ["PEN", 100, 50]], credits: [["bea", 100_000]] });
    await h.seed("tidy", { products: [["BOX", 500, 50]], credits: [["tom", 10_000]] });
    expect((await h.call("PUT", "/api/v1/coupons/TEN", { token: admin, body: { discount: { type: "amount", value: 10 }, maxRedemptions: 5 } })).status).toBe(201);
    for (const body of [h.orderBody([["BOX", 1]], { couponCode: "TEN" }), h.orderBody([["PEN", 2]]), h.orderBody([["BOX", 1]], { payment: { method: "external" } })]) {
      expect((await h.call("POST", "/api/v1/orders", { token: buyer, body })).status).toBe(201);
    }
    expect((await h.call("POST", "/api/v1/orders", { token: await h.token("tidy", "tom"), body: h.orderBody([["BOX", 1]]) })).status).toBe(201);
  });
  afterAll(() => h?.close());

  const checksFound = async (tenantToken: string) => {
    const run = await h.call("POST", "/api/v1/admin/reconciliation", { token: tenantToken });
    expect(run.status).toBe(200);
    return [...new Set((run.body.findings as { check: string }[]).map((f) => f.check))].sort();
  };

  it("finds nothing where every invariant holds, and runs every check in the all-in-one", async () => {
    const run = await h.call("POST", "/api/v1/admin/reconciliation", { token: admin });
    expect(run.body).toMatchObject({ scope: "coupons,inventory,orders,payments,shipping", findings: [] });
    expect(run.body.checks).toHaveLength(12);
    expect((await h.call("POST", "/api/v1/admin/reconciliation", { token: buyer })).status).toBe(403);
  });

  it("names each kind of damage, for its tenant only, and keeps the latest run for the admin API", async () => {
    const [external] = await rows<{ id: string }>(db(), sql`select id from orders where tenant_id = 'rec' and status = 'CREATED' limit 1`);
    const [paidByWallet] = await rows<{ id: string }>(db(), sql`select id from orders where tenant_id = 'rec' and status = 'PAID' and coupon_code is null limit 1`);
    // Stock appears from nowhere; a cancel that returned nothing and left a shipment document live; a
    // coupon counter off by one; money from nowhere in a wallet; an order stuck PENDING; money taken for
    // a cancelled order.
    await db().execute(sql`update stock_levels set available = available + 1 where tenant_id = 'rec' and sku = 'PEN'`);
    // (Cancelled a minute ago: a repair leaves alone what changed within the last 30 s.)
    await db().execute(sql`update orders set status = 'CANCELLED', updated_at = now() - interval '1 minute' where id = ${external!.id}`);
    await db().execute(sql`insert into shipments (tenant_id, order_id, waybill, status, address) values ('rec', ${external!.id}, 'WB-LIVE', 'pending', '{}'::jsonb)`);
    await db().execute(sql`update coupons set redemptions = redemptions + 1 where tenant_id = 'rec' and code = 'TEN'`);
    await db().execute(sql`update wallets set balance = balance + 100 where tenant_id = 'rec' and user_id = 'bea'`);
    await db().execute(sql`update orders set status = 'PENDING', created_at = now() - interval '1 minute' where id = ${paidByWallet!.id}`);
    await db().execute(sql`insert into payments (tenant_id, order_id, external_txn_id, amount, currency, status) values ('rec', ${external!.id}, 'txn-late', 500, 'CNY', 'refund_pending')`);

    expect(await checksFound(admin)).toEqual([
      "cancelled-order-live-shipment",
      "coupon-counter",
      "order-pending-too-long",
      "refund-pending",
      "reservation-outlives-order",
      "stock-balance",
      "stock-sold-to-unpaid-order",
      "wallet-balance",
      "wallet-debits-match-orders",
    ]);
    const latest = await h.call("GET", "/api/v1/admin/reconciliation", { token: admin });
    expect(latest.body.runs).toHaveLength(1);
    const findings = latest.body.runs[0].findings as { check: string; subject: string; detail: string; repaired: boolean }[];
    expect(findings.find((f) => f.check === "stock-balance")).toMatchObject({ subject: "PEN", detail: "initial 50 + adjusted 0 <> available 49 + reserved 0 + sold 2" });
    expect(findings.find((f) => f.check === "reservation-outlives-order")?.subject).toBe(external!.id);
    expect(findings.find((f) => f.check === "refund-pending")?.detail).toBe(
      "500 CNY taken by transaction txn-late is waiting to be refunded (no refund endpoint is configured: ORDERLY_REFUND_URL)",
    );
    // What has one right answer was put right in that run; the next finds only what is left for an operator.
    expect(findings.filter((f) => f.repaired).map((f) => f.check).sort()).toEqual(["cancelled-order-live-shipment", "coupon-counter", "reservation-outlives-order"]);
    expect(await checksFound(admin)).toEqual(["order-pending-too-long", "refund-pending", "stock-balance", "stock-sold-to-unpaid-order", "wallet-balance", "wallet-debits-match-orders"]);
    const [box] = await rows<{ reserved: number }>(db(), sql`select reserved::int as reserved from stock_levels where tenant_id = 'rec' and sku = 'BOX'`);
    expect(box?.reserved).toBe(0);
    const [ten] = await rows<{ redemptions: number }>(db(), sql`select redemptions::int as redemptions from coupons where tenant_id = 'rec' and code = 'TEN'`);
    expect(ten?.redemptions).toBe(1);
    // The other tenant's shop is untouched: its admin sees nothing of this one's.
    expect(await checksFound(await h.token("tidy", "root", ["admin"]))).toEqual([]);
  });

  it("runs on one replica at a time: the scheduled run skips while another holds the lock", async () => {
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    let locked!: () => void;
    const isLocked = new Promise<void>((resolve) => (locked = resolve));
    const holder = db().transaction(async (tx) => {
      await tx.execute(sql`select pg_advisory_xact_lock(hashtext('orderly.reconciliation.coupons,inventory,orders,payments,shipping'))`);
      locked();
      await held;
    });
    await isLocked;
    expect(await h.services.reconciliation.run({ wait: false })).toBeUndefined();
    release();
    await holder;
    expect(await h.services.reconciliation.run({ wait: false })).toMatchObject({ scope: "coupons,inventory,orders,payments,shipping" });
  });
});
