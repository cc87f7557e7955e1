import { sql } from "drizzle-orm";
import type { ServiceName } from "../../src/config.ts";
import { type Queryable, rows } from "../../src/db/client.ts";

/** Where each service's tables are: one database for all, or one each (split deployment). */
export type ServiceDatabases = Queryable | Record<ServiceName, Queryable>;

const of = (where: ServiceDatabases, service: ServiceName): Queryable =>
  "execute" in where ? where : (where as Record<ServiceName, Queryable>)[service];

const n = (value: unknown) => Number(value ?? 0);

function groupBy<T>(items: T[], key: (item: T) => string): Map<string, T[]> {
  const groups = new Map<string, T[]>();
  for (const item of items) {
    const k = key(item);
    const group = groups.get(k);
    if (group) group.push(item);
    else groups.set(k, [item]);
  }
  return groups;
}

/**
 * Checks invariants 1-3 of api-contract.md §5 straight from the tables, for every tenant, whether the
 * services share one database or each has its own: each service's facts are read from its own
 * tables and compared here. Returns the violations found (an empty list when all hold).
 */
export async function invariantViolations(where: ServiceDatabases): Promise<string[]> {
  const violations: string[] = [];
  const orders = await rows<{ id: string; tenant_id: string; status: string; payment_method: string; payment_status: string; total: string; shipment_waybill: string | null }>(
    of(where, "orders"),
    sql`select id, tenant_id, status, payment_method, payment_status, total, shipment_waybill from orders`,
  );
  const orderById = new Map(orders.map((o) => [o.id, o]));
  const paid = (status: string | undefined) => status === "PAID" || status === "SHIPPED" || status === "COMPLETED";

  // 1. Stock: initial + adjustments = available + reserved by live orders + sold; available >= 0.
  const inventory = of(where, "inventory");
  const stock = await rows<{ tenant_id: string; sku: string; initial: string; adjusted: string; available: string; reserved: string; sold: string }>(
    inventory,
    sql`select tenant_id, sku, initial, adjusted, available, reserved, sold from stock_levels`,
  );
  const reservations = await rows<{ tenant_id: string; order_id: string; sku: string; quantity: string; status: string }>(
    inventory,
    sql`select tenant_id, order_id, sku, quantity, status from stock_reservations where status <> 'released'`,
  );
  // Grouped once: after a bench load there are tens of thousands of stock rows, orders and reservations each.
  const reservationsOfSku = groupBy(reservations, (r) => `${r.tenant_id}/${r.sku}`);
  const reservationsOfOrder = groupBy(reservations, (r) => r.order_id);
  for (const s of stock) {
    const [initial, adjusted, available, reserved, sold] = [s.initial, s.adjusted, s.available, s.reserved, s.sold].map(n) as [number, number, number, number, number];
    const mine = reservationsOfSku.get(`${s.tenant_id}/${s.sku}`) ?? [];
    const held = mine.filter((r) => r.status === "reserved").reduce((sum, r) => sum + n(r.quantity), 0);
    const soldRows = mine.filter((r) => r.status === "sold").reduce((sum, r) => sum + n(r.quantity), 0);
    if (initial + adjusted !== available + reserved + sold) violations.push(`stock ${s.tenant_id}/${s.sku}: ${initial}+${adjusted} != ${available}+${reserved}+${sold}`);
    if (available < 0) violations.push(`stock ${s.tenant_id}/${s.sku}: available ${available} < 0`);
    if (reserved !== held) violations.push(`stock ${s.tenant_id}/${s.sku}: reserved ${reserved} != held by orders ${held}`);
    if (sold !== soldRows) violations.push(`stock ${s.tenant_id}/${s.sku}: sold ${sold} != sold to orders ${soldRows}`);
  }
  // Invariant 5's second half: no reservation outlives its order; a sale belongs to a paid order.
  for (const r of reservations) {
    const order = orderById.get(r.order_id);
    if (r.status === "reserved" && order?.status !== "PENDING" && order?.status !== "CREATED") {
      violations.push(`reservation of order ${r.order_id} outlives it (status ${order?.status ?? "none"})`);
    }
    if (r.status === "sold" && order && !paid(order.status)) violations.push(`stock sold to order ${r.order_id}, which is ${order.status}`);
  }
  for (const o of orders.filter((o) => paid(o.status))) {
    if (!o.shipment_waybill) violations.push(`paid order ${o.id} has no waybill`);
    if ((reservationsOfOrder.get(o.id) ?? []).some((r) => r.status !== "sold")) violations.push(`paid order ${o.id} still holds a reservation`);
  }

  // 2. Money: credits = balances + totals of wallet-paid orders not refunded; no wallet below 0.
  const payments = of(where, "payments");
  const money = await rows<{ tenant_id: string; credits: string; balances: string; debits: string; negative: string }>(
    payments,
    sql`select t.tenant_id,
          coalesce((select sum(amount) from wallet_entries e where e.tenant_id = t.tenant_id and e.kind = 'credit'), 0) as credits,
          coalesce((select sum(balance) from wallets w where w.tenant_id = t.tenant_id), 0) as balances,
          coalesce((select sum(-amount) from wallet_entries e where e.tenant_id = t.tenant_id and e.kind = 'debit'
                    and not exists (select 1 from wallet_entries r where r.tenant_id = e.tenant_id and r.order_id = e.order_id and r.kind = 'refund')), 0) as debits,
          (select count(*) from wallets w where w.tenant_id = t.tenant_id and w.balance < 0) as negative
        from (select distinct tenant_id from wallets) t`,
  );
  const walletPaid = new Map<string, number>();
  for (const o of orders.filter((o) => o.payment_method === "balance" && paid(o.status) && o.payment_status === "captured")) {
    walletPaid.set(o.tenant_id, (walletPaid.get(o.tenant_id) ?? 0) + n(o.total));
  }
  for (const m of money) {
    const paidTotal = walletPaid.get(m.tenant_id) ?? 0;
    if (n(m.credits) !== n(m.balances) + paidTotal) violations.push(`money ${m.tenant_id}: credits ${m.credits} != balances ${m.balances} + wallet-paid orders ${paidTotal}`);
    if (n(m.debits) !== paidTotal) violations.push(`money ${m.tenant_id}: unrefunded debits ${m.debits} != wallet-paid orders ${paidTotal}`);
    if (n(m.negative) > 0) violations.push(`money ${m.tenant_id}: ${m.negative} wallets below zero`);
  }
  // Invariant 4's second half: one capture per order.
  const captures = await rows<{ order_id: string; n: number }>(payments, sql`select order_id, count(*)::int as n from payments where status = 'captured' group by order_id having count(*) > 1`);
  for (const c of captures) violations.push(`order ${c.order_id} captured ${c.n} times`);

  // 3. Coupons: at most maxRedemptions live (not cancelled) orders each; the counter matches the rows.
  const coupons = of(where, "coupons");
  const couponRows = await rows<{ tenant_id: string; code: string; max_redemptions: number; redemptions: number }>(
    coupons,
    sql`select tenant_id, code, max_redemptions, redemptions from coupons`,
  );
  const redemptions = await rows<{ tenant_id: string; code: string; order_id: string }>(
    coupons,
    sql`select tenant_id, code, order_id from coupon_redemptions where status = 'redeemed'`,
  );
  const redemptionsOfCoupon = groupBy(redemptions, (r) => `${r.tenant_id}/${r.code}`);
  for (const c of couponRows) {
    const mine = redemptionsOfCoupon.get(`${c.tenant_id}/${c.code}`) ?? [];
    const live = mine.filter((r) => orderById.get(r.order_id)?.status !== "CANCELLED").length;
    if (live > c.max_redemptions) violations.push(`coupon ${c.tenant_id}/${c.code}: ${live} live redemptions > max ${c.max_redemptions}`);
    if (mine.length !== c.redemptions) violations.push(`coupon ${c.tenant_id}/${c.code}: counter ${c.redemptions} != redemptions ${mine.length}`);
    const kept = mine.filter((r) => orderById.get(r.order_id)?.status === "CANCELLED");
    for (const r of kept) violations.push(`coupon ${c.tenant_id}/${c.code} still redeemed by cancelled order ${r.order_id}`);
  }

  // Shipment documents: a paid order's document exists; a cancelled order's is withdrawn.
  const shipments = await rows<{ order_id: string; status: string; waybill: string }>(of(where, "shipping"), sql`select order_id, status, waybill from shipments`);
  const documentOf = new Map(shipments.map((s) => [s.order_id, s]));
  for (const o of orders) {
    const document = documentOf.get(o.id);
    if (paid(o.status) && document?.waybill !== o.shipment_waybill) violations.push(`paid order ${o.id}: waybill ${o.shipment_waybill} but document ${document?.waybill ?? "none"}`);
    if (o.status === "CANCELLED" && document && document.status !== "cancelled") violations.push(`cancelled order ${o.id} has a live shipment document (${document.status})`);
  }
  return violations;
}
