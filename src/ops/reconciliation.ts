import { type SQL, sql } from "drizzle-orm";
import type { ServiceName } from "../config.ts";
import { type Database, rows, type Tx } from "../db/client.ts";
import type { Coupons } from "../modules/coupons/coupons.ts";
import type { Inventory } from "../modules/inventory/inventory.ts";
import type { Shipping } from "../modules/shipping/shipping.ts";
import type { Clock } from "../kit/clock.ts";
import { newId } from "../kit/ids.ts";
import { STUCK_AFTER_MS } from "../kit/backlog.ts";
import { isTransientDatabaseError } from "../db/errors.ts";

/** Something a check found that contract §5 says cannot be: for an operator to look at. */
export interface Finding {
  tenantId: string;
  check: string;
  /** What it is about: a SKU, a user's wallet, an order, a coupon code. */
  subject: string;
  detail: string;
  /** Whether the run put it right (a finding with one right answer), or left it for an operator. */
  repaired: boolean;
}

export interface ReconciliationRun {
  id: string;
  /** The services whose tables the run checked ("orders,inventory,…"), and whether it compared them with each other. */
  scope: string;
  checks: string[];
  startedAt: string;
  finishedAt: string;
  findings: Finding[];
}

/** What a run found for one tenant: all an admin of that tenant may see. */
export const ofTenant = (findings: readonly Finding[], tenantId: string): Finding[] => findings.filter((f) => f.tenantId === tenantId);

interface Check {
  name: string;
  /** The services whose tables it reads: a check runs only where one process has them all (api-contract.md §5, invariant 6). */
  needs: ServiceName[];
  /** Rows of (tenant_id, subject, detail). */
  query(now: Date, context: { refunding: boolean }): SQL;
  /**
   * For a finding with one right answer: puts it right in the run's transaction, through the owning
   * module where it has the function, after looking again under a lock. False when what it found
   * no longer holds or is too fresh to be sure of (then it stays flagged).
   */
  repair?(tx: Tx, finding: { tenantId: string; subject: string }, modules: RepairModules, now: Date): Promise<boolean>;
}

/** The module front doors repairs go through. */
export interface RepairModules {
  inventory: Inventory;
  coupons: Coupons;
  shipping: Shipping;
}

/**
 * The order, locked, when it has been `status` for at least SETTLED_AFTER_MS: in the saga strategy a
 * cancel's compensations arrive a moment after it, and a repair must not race them (they are
 * idempotent, so the race would be harmless, but a finding younger than that is not yet damage).
 */
async function settledOrder(tx: Tx, tenantId: string, orderId: string, now: Date): Promise<{ status: string } | undefined> {
  const [order] = await rows<{ status: string }>(
    tx,
    sql`select status from orders where tenant_id = ${tenantId} and id = ${orderId}
          and updated_at < ${new Date(now.getTime() - SETTLED_AFTER_MS).toISOString()}::timestamptz for update skip locked`,
  );
  return order;
}

const PAID = sql`('PAID', 'SHIPPED', 'COMPLETED')`;

/** How long an order must have been as it is before a repair acts on it. */
const SETTLED_AFTER_MS = STUCK_AFTER_MS;

/** A refund still not done this long after the money arrived is for an operator to look at. */
const REFUND_OVERDUE_MS = 3_600_000;

/**
 * The checks of contract §5, each on the tables of the services it names. A service checks its own
 * tables on its own; the checks across services run where one process holds every table they read
 * (the all-in-one). Constraints already forbid some states (negative stock or wallets, two captures
 * of one order, a coupon past its limit): these look for what constraints cannot see.
 */
const CHECKS: readonly Check[] = [
  {
    name: "stock-balance",
    needs: ["inventory"],
    query: () => sql`select tenant_id, sku as subject,
        format('initial %s + adjusted %s <> available %s + reserved %s + sold %s', initial, adjusted, available, reserved, sold) as detail
      from stock_levels where initial + adjusted <> available + reserved + sold`,
  },
  {
    name: "stock-reservations",
    needs: ["inventory"],
    query: () => sql`select l.tenant_id, l.sku as subject,
        format('reserved %s, sold %s; reservations hold %s, sold %s', l.reserved, l.sold, coalesce(r.held, 0), coalesce(r.sold, 0)) as detail
      from stock_levels l left join (
        select tenant_id, sku, sum(quantity) filter (where status = 'reserved') as held, sum(quantity) filter (where status = 'sold') as sold
        from stock_reservations group by tenant_id, sku) r on r.tenant_id = l.tenant_id and r.sku = l.sku
      where l.reserved <> coalesce(r.held, 0) or l.sold <> coalesce(r.sold, 0)`,
  },
  {
    name: "wallet-balance",
    needs: ["payments"],
    query: () => sql`select t.tenant_id, 'wallets' as subject,
        format('credits %s <> balances %s + debits not refunded %s', t.credits, t.balances, t.debits) as detail
      from (
        select w.tenant_id,
          coalesce((select sum(amount) from wallet_entries e where e.tenant_id = w.tenant_id and e.kind = 'credit'), 0) as credits,
          sum(w.balance) as balances,
          coalesce((select sum(-amount) from wallet_entries e where e.tenant_id = w.tenant_id and e.kind = 'debit'
            and not exists (select 1 from wallet_entries r where r.tenant_id = e.tenant_id and r.order_id = e.order_id and r.kind = 'refund')), 0) as debits
        from wallets w group by w.tenant_id) t
      where t.credits <> t.balances + t.debits`,
  },
  {
    // Refunds under way are the refunder's (src/flows/refunds.ts); an operator sees those the provider
    // refused or did not answer, those waiting over an hour, and all of them where nothing refunds.
    name: "refund-pending",
    needs: ["payments"],
    query: (now, { refunding }) => sql`select tenant_id, order_id as subject,
        format('%s %s taken by transaction %s is waiting to be refunded', amount, currency, external_txn_id)
          || case when refund_error is not null then format(' (%s requests; the last: %s)', refund_attempts, refund_error)
                  when refund_next_at = 'infinity' then ' (recorded before Orderly refunded: refund it by hand, or release it to the refunder; see the runbook)'
                  when not ${refunding} then ' (no refund endpoint is configured: ORDERLY_REFUND_URL)' else '' end as detail
      from payments where status = 'refund_pending'
        and (not ${refunding} or refund_error is not null or refund_next_at = 'infinity' or created_at < ${new Date(now.getTime() - REFUND_OVERDUE_MS).toISOString()}::timestamptz)`,
  },
  {
    name: "coupon-counter",
    needs: ["coupons"],
    query: () => sql`select c.tenant_id, c.code as subject, format('counter %s, redemptions %s', c.redemptions, coalesce(r.n, 0)) as detail
      from coupons c left join (
        select tenant_id, code, count(*) as n from coupon_redemptions where status = 'redeemed' group by tenant_id, code) r
        on r.tenant_id = c.tenant_id and r.code = c.code
      where c.redemptions <> coalesce(r.n, 0)`,
    // The redemptions are the truth (one row per order, made with the counter in one statement). The
    // coupon's row is locked first, so the count (a statement of its own, after the lock) sees every
    // redemption and restore that committed before it.
    async repair(tx, { tenantId, subject }) {
      const [locked] = await rows<{ code: string }>(tx, sql`select code from coupons where tenant_id = ${tenantId} and code = ${subject} for update skip locked`);
      if (!locked) return false;
      const fixed = await rows(
        tx,
        sql`with counted as (select count(*) as n from coupon_redemptions where tenant_id = ${tenantId} and code = ${subject} and status = 'redeemed')
            update coupons c set redemptions = counted.n, updated_at = now() from counted
            where c.tenant_id = ${tenantId} and c.code = ${subject} and c.redemptions <> counted.n
            returning c.code`,
      );
      return fixed.length > 0;
    },
  },
  {
    name: "order-pending-too-long",
    needs: ["orders"],
    query: (now) => sql`select tenant_id, id as subject, format('PENDING since %s', created_at) as detail
      from orders where status = 'PENDING' and created_at < ${new Date(now.getTime() - STUCK_AFTER_MS).toISOString()}::timestamptz`,
  },
  {
    name: "paid-order-without-waybill",
    needs: ["orders"],
    query: () => sql`select tenant_id, id as subject, format('%s without a shipment document', status) as detail
      from orders where status in ${PAID} and shipment_waybill is null`,
  },
  {
    name: "reservation-outlives-order",
    needs: ["orders", "inventory"],
    query: () => sql`select r.tenant_id, r.order_id as subject, format('%s × %s still reserved for a %s order', r.quantity, r.sku, o.status) as detail
      from stock_reservations r join orders o on o.tenant_id = r.tenant_id and o.id = r.order_id
      where r.status = 'reserved' and o.status not in ('PENDING', 'CREATED')`,
    // A cancelled order's stock goes back; a paid order's reservation becomes the sale it is.
    async repair(tx, { tenantId, subject }, { inventory }, now) {
      const order = await settledOrder(tx, tenantId, subject, now);
      if (order?.status === "CANCELLED") await inventory.release(tx, { tenantId, orderId: subject });
      else if (order && ["PAID", "SHIPPED", "COMPLETED"].includes(order.status)) await inventory.sell(tx, { tenantId, orderId: subject });
      else return false;
      return true;
    },
  },
  {
    name: "stock-sold-to-unpaid-order",
    needs: ["orders", "inventory"],
    query: () => sql`select r.tenant_id, r.order_id as subject, format('%s × %s sold to a %s order', r.quantity, r.sku, o.status) as detail
      from stock_reservations r join orders o on o.tenant_id = r.tenant_id and o.id = r.order_id
      where r.status = 'sold' and o.status not in ${PAID}`,
  },
  {
    name: "wallet-debits-match-orders",
    needs: ["orders", "payments"],
    query: () => sql`select coalesce(d.tenant_id, o.tenant_id) as tenant_id, 'wallet-paid orders' as subject,
        format('debits not refunded %s <> wallet-paid orders %s', coalesce(d.debits, 0), coalesce(o.paid, 0)) as detail
      from (
        select tenant_id, sum(-amount) as debits from wallet_entries e where kind = 'debit'
          and not exists (select 1 from wallet_entries r where r.tenant_id = e.tenant_id and r.order_id = e.order_id and r.kind = 'refund')
        group by tenant_id) d
      full join (
        select tenant_id, sum(total) as paid from orders
        where payment_method = 'balance' and status in ${PAID} and payment_status = 'captured' group by tenant_id) o
        on o.tenant_id = d.tenant_id
      where coalesce(d.debits, 0) <> coalesce(o.paid, 0)`,
  },
  {
    name: "coupon-redeemed-by-cancelled-order",
    needs: ["orders", "coupons"],
    query: () => sql`select r.tenant_id, r.order_id as subject, format('coupon %s still redeemed by a cancelled order', r.code) as detail
      from coupon_redemptions r join orders o on o.tenant_id = r.tenant_id and o.id = r.order_id
      where r.status = 'redeemed' and o.status = 'CANCELLED'`,
    async repair(tx, { tenantId, subject }, { coupons }, now) {
      if ((await settledOrder(tx, tenantId, subject, now))?.status !== "CANCELLED") return false;
      await coupons.restore(tx, { tenantId, orderId: subject });
      return true;
    },
  },
  {
    name: "cancelled-order-live-shipment",
    needs: ["orders", "shipping"],
    query: () => sql`select s.tenant_id, s.order_id as subject, format('shipment document %s is %s for a cancelled order', s.waybill, s.status) as detail
      from shipments s join orders o on o.tenant_id = s.tenant_id and o.id = s.order_id
      where o.status = 'CANCELLED' and s.status <> 'cancelled'`,
    // Only a document never shipped can be withdrawn; a parcel on its way is for an operator.
    async repair(tx, { tenantId, subject }, { shipping }, now) {
      if ((await settledOrder(tx, tenantId, subject, now))?.status !== "CANCELLED") return false;
      return shipping.cancelDocument(tx, { tenantId, orderId: subject });
    },
  },
];

/**
 * Reconciliation (api-contract.md §6): the checks of §5 on the tables of the services this process
 * runs, stored as a run (kit table, so every service can keep its own), for operators through the
 * admin API. A run takes an advisory lock named after its scope: on many replicas, one runs at a
 * time and the scheduled job skips while another holds it. What has one right answer (a coupon
 * counter, a cancelled order's leftover reservation, redemption or shipment document, a paid order's
 * reservation not yet a sale) is repaired in the run's transaction; the rest is flagged.
 */
export function createReconciliation(deps: {
  database: Database;
  clock: Clock;
  roles: ReadonlySet<ServiceName>;
  /** Whether this process gives refund_pending money back (a payment provider is configured). */
  refunding: boolean;
  modules: RepairModules;
}) {
  const { database, clock, roles, refunding } = deps;
  const checks = CHECKS.filter((c) => c.needs.every((service) => roles.has(service)));
  const scope = [...roles].sort().join(",");

  const view = (row: { id: string; scope: string; checks: string[]; started_at: Date | string; finished_at: Date | string; findings: Finding[] }, tenantId?: string): ReconciliationRun => ({
    id: row.id,
    scope: row.scope,
    checks: row.checks,
    startedAt: new Date(row.started_at).toISOString(),
    finishedAt: new Date(row.finished_at).toISOString(),
    findings: (tenantId === undefined ? row.findings : ofTenant(row.findings, tenantId)).map((f) => ({ ...f, repaired: f.repaired ?? false })),
  });

  /**
   * A repair in a short transaction of its own (the run's holds only its advisory lock and reads), so
   * no row it locks waits for the rest of the run. Rows another transaction holds are skipped: the
   * finding stays flagged and the next run looks again.
   */
  async function repairApart(repair: NonNullable<Check["repair"]>, finding: { tenantId: string; subject: string }): Promise<boolean> {
    try {
      return await database.db.transaction((tx) => repair(tx, finding, deps.modules, clock.now()));
    } catch (error) {
      if (isTransientDatabaseError(error)) return false;
      throw error;
    }
  }

  return {
    /** Runs every check this process can, and stores the run. `wait: false`: undefined when another replica is running one. */
    async run(options: { wait: boolean }): Promise<ReconciliationRun | undefined> {
      return database.db.transaction(async (tx) => {
        const lock = sql`hashtext(${`orderly.reconciliation.${scope}`})`;
        if (options.wait) await tx.execute(sql`select pg_advisory_xact_lock(${lock})`);
        else {
          const [got] = await rows<{ locked: boolean }>(tx, sql`select pg_try_advisory_xact_lock(${lock}) as locked`);
          if (!got?.locked) return undefined;
        }
        const startedAt = clock.now();
        const findings: Finding[] = [];
        for (const check of checks) {
          const found = await rows<{ tenant_id: string; subject: string; detail: string }>(tx, check.query(startedAt, { refunding }));
          for (const f of found) {
            const finding = { tenantId: f.tenant_id, check: check.name, subject: String(f.subject), detail: f.detail };
            findings.push({ ...finding, repaired: check.repair ? await repairApart(check.repair, finding) : false });
          }
        }
        const row = { id: newId("rec"), scope, checks: checks.map((c) => c.name), started_at: startedAt, finished_at: clock.now(), findings };
        await tx.execute(sql`insert into reconciliation_runs (id, scope, checks, started_at, finished_at, findings)
          values (${row.id}, ${scope}, ${JSON.stringify(row.checks)}::jsonb, ${startedAt.toISOString()}::timestamptz, ${row.finished_at.toISOString()}::timestamptz, ${JSON.stringify(findings)}::jsonb)`);
        return view(row);
      });
    },

    /** The latest run of each scope this database holds, with one tenant's findings. */
    async latest(tenantId: string): Promise<ReconciliationRun[]> {
      const found = await rows<{ id: string; scope: string; checks: string[]; started_at: Date | string; finished_at: Date | string; findings: Finding[] }>(
        database.db,
        sql`select distinct on (scope) id, scope, checks, started_at, finished_at, findings from reconciliation_runs order by scope, started_at desc`,
      );
      return found.map((r) => view(r, tenantId));
    },

    /** Runs older than `before`, but never a scope's latest; how many were deleted. */
    async purge(before: Date): Promise<number> {
      const [row] = await rows<{ n: number }>(
        database.db,
        sql`with gone as (delete from reconciliation_runs r where r.started_at < ${before.toISOString()}::timestamptz
              and exists (select 1 from reconciliation_runs newer where newer.scope = r.scope and newer.started_at > r.started_at) returning 1)
            select count(*)::int as n from gone`,
      );
      return row?.n ?? 0;
    },
  };
}

export type Reconciliation = ReturnType<typeof createReconciliation>;
