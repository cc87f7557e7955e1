import { sql } from "drizzle-orm";
import { type Queryable, rows } from "../../src/db/client.ts";

/**
 * Checks invariants 1-3 of api-contract.md §5 straight from the tables, for every tenant.
 * Returns the violations found (an empty list when all hold).
 */
export async function invariantViolations(q: Queryable): Promise<string[]> {
  const violations: string[] = [];
  const stock = await rows<{ tenant_id: string; sku: string; initial: string; adjusted: string; available: string; reserved: string; sold: string; held: string; sold_rows: string }>(
    q,
    sql`select s.tenant_id, s.sku, s.initial, s.adjusted, s.available, s.reserved, s.sold,
          coalesce((select sum(quantity) from stock_reservations r where r.tenant_id = s.tenant_id and r.sku = s.sku and r.status = 'reserved'), 0) as held,
          coalesce((select sum(quantity) from stock_reservations r where r.tenant_id = s.tenant_id and r.sku = s.sku and r.status = 'sold'), 0) as sold_rows
        from stock_levels s`,
  );
  for (const s of stock) {
    const [initial, adjusted, available, reserved, sold] = [s.initial, s.adjusted, s.available, s.reserved, s.sold].map(Number) as number[];
    if (initial! + adjusted! !== available! + reserved! + sold!) violations.push(`stock ${s.tenant_id}/${s.sku}: ${initial}+${adjusted} != ${available}+${reserved}+${sold}`);
    if (available! < 0) violations.push(`stock ${s.tenant_id}/${s.sku}: available ${available} < 0`);
    if (reserved !== Number(s.held)) violations.push(`stock ${s.tenant_id}/${s.sku}: reserved ${reserved} != held by orders ${s.held}`);
    if (sold !== Number(s.sold_rows)) violations.push(`stock ${s.tenant_id}/${s.sku}: sold ${sold} != sold to orders ${s.sold_rows}`);
  }
  const orphans = await rows<{ order_id: string; status: string | null }>(
    q,
    sql`select r.order_id, o.status from stock_reservations r left join orders o on o.id = r.order_id
        where r.status = 'reserved' and (o.status is null or o.status not in ('PENDING', 'CREATED'))`,
  );
  for (const o of orphans) violations.push(`reservation of order ${o.order_id} outlives it (status ${o.status})`);
  const unsold = await rows<{ id: string }>(
    q,
    sql`select o.id from orders o where o.status in ('PAID', 'SHIPPED', 'COMPLETED')
        and (o.shipment_waybill is null or exists (select 1 from stock_reservations r where r.order_id = o.id and r.status <> 'sold'))`,
  );
  for (const o of unsold) violations.push(`paid order ${o.id} lacks a waybill or still holds a reservation`);

  const money = await rows<{ tenant_id: string; credits: string; balances: string; paid: string; negative: string }>(
    q,
    sql`select t.tenant_id,
          coalesce((select sum(amount) from wallet_entries e where e.tenant_id = t.tenant_id and e.kind = 'credit'), 0) as credits,
          coalesce((select sum(balance) from wallets w where w.tenant_id = t.tenant_id), 0) as balances,
          coalesce((select sum(total) from orders o where o.tenant_id = t.tenant_id and o.payment_method = 'balance'
                    and o.status in ('PAID', 'SHIPPED', 'COMPLETED') and o.payment_status = 'captured'), 0) as paid,
          (select count(*) from wallets w where w.tenant_id = t.tenant_id and w.balance < 0) as negative
        from (select distinct tenant_id from wallets union select distinct tenant_id from orders) t`,
  );
  for (const m of money) {
    if (Number(m.credits) !== Number(m.balances) + Number(m.paid)) {
      violations.push(`money ${m.tenant_id}: credits ${m.credits} != balances ${m.balances} + wallet-paid orders ${m.paid}`);
    }
    if (Number(m.negative) > 0) violations.push(`money ${m.tenant_id}: ${m.negative} wallets below zero`);
  }

  const couponRows = await rows<{ tenant_id: string; code: string; max_redemptions: number; redemptions: number; live: string; redeemed: string }>(
    q,
    sql`select c.tenant_id, c.code, c.max_redemptions, c.redemptions,
          (select count(*) from coupon_redemptions r join orders o on o.id = r.order_id
             where r.tenant_id = c.tenant_id and r.code = c.code and r.status = 'redeemed' and o.status <> 'CANCELLED') as live,
          (select count(*) from coupon_redemptions r where r.tenant_id = c.tenant_id and r.code = c.code and r.status = 'redeemed') as redeemed
        from coupons c`,
  );
  for (const c of couponRows) {
    if (Number(c.live) > c.max_redemptions) violations.push(`coupon ${c.tenant_id}/${c.code}: ${c.live} live redemptions > max ${c.max_redemptions}`);
    if (Number(c.redeemed) !== c.redemptions) violations.push(`coupon ${c.tenant_id}/${c.code}: counter ${c.redemptions} != redemptions ${c.redeemed}`);
  }
  return violations;
}
