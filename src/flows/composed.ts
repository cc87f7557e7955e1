import { createHash } from "node:crypto";
import { sql } from "drizzle-orm";
import { type Database, type Queryable, literal, rows, transaction } from "../db/client.ts";
import { sqlState } from "../db/errors.ts";
import type { OrderContext } from "./steps.ts";
import type { Flow } from "./executors.ts";

/** SQLSTATE of a step's refusal raised inside the composed statement: its message is the reason, its detail the detail. */
const REFUSED = "OR001";
const LOCK_TIMEOUT = "55P03";

/** What one run of the composed statement is given: each step's call, the prices to check, the order record. */
export interface ComposedArgs {
  tenantId: string;
  lockTimeoutMs: number;
  /** The lines' unit prices as priced before the statement: a price changed since refuses PRICE_CHANGED. */
  prices: { sku: string; unitPrice: number }[];
  /** By step id, the input of the step's SQL function; a step absent here does not run. */
  calls: Record<string, object>;
  /** The order as its writer takes it (see OrderWriter). */
  order: object;
  /** W3C trace context of the request: the outbox rows the statement writes carry it (kit migration 0005). */
  traceparent?: string | undefined;
}

export type ComposedOutcome =
  | { kind: "recorded"; orderNumber: string }
  | { kind: "refused"; reason: string; detail: string }
  | { kind: "lock-timeout" };

/** One order's outcome in a batch; "alone": it deadlocked with another transaction, nothing of it remains, run it on its own. */
export type BatchOutcome = ComposedOutcome | { kind: "alone" };

/**
 * What the statement does with the order, between its steps and the hot ones: records a new one
 * (orders_record, PreparedOrder.record) or settles one recorded PENDING (orders_settle, PreparedSettlement.record).
 */
export type OrderWriter = "record" | "settle";
const ORDER_WRITERS: Record<OrderWriter, string> = { record: "orders_record", settle: "orders_settle" };

/**
 * The local executor in one round trip: a PL/pgSQL function generated from a flow, calling each
 * step's own SQL function (defined by its module's migrations) in the flow's order, the order record
 * (orders_record) before the hot steps, and raising on the first refusal so nothing remains. It sets
 * the tenant role, tenant id and lock timeout itself, so one autocommit statement places an order.
 * Its name carries a hash of its text: processes of different versions never replace each other's.
 */
export function composeFlow<C extends OrderContext>(flow: Flow<C>, order: OrderWriter = "record") {
  const refuseUnless = `IF r ? 'refused' THEN RAISE EXCEPTION USING ERRCODE = ${literal(REFUSED)}, MESSAGE = r->>'refused', DETAIL = coalesce(r->>'detail', ''); END IF;`;
  const stepCall = ({ step }: Flow<C>["steps"][number]) =>
    `  IF p_calls ? ${literal(step.id)} THEN\n    r := ${step.fn}(p_tenant, p_calls->${literal(step.id)});\n    ${refuseUnless}\n  END IF;`;
  const body = [
    "  PERFORM set_config('role', 'orderly_app', true), set_config('orderly.tenant_id', p_tenant, true), set_config('lock_timeout', p_lock_timeout, true),",
    "    set_config('orderly.traceparent', coalesce(p_traceparent, ''), true);",
    `  r := inventory_prices_match(p_tenant, p_prices);\n  ${refuseUnless}`,
    ...flow.steps.filter((s) => !s.hot).map(stepCall),
    `  v_number := ${ORDER_WRITERS[order]}(p_tenant, p_order);`,
    ...flow.steps.filter((s) => s.hot).map(stepCall),
    "  RETURN v_number;",
  ].join("\n");
  const hash = createHash("sha256").update(body).digest("hex").slice(0, 12);
  const name = `orderly_${flow.type.replaceAll("-", "_")}${order === "record" ? "" : `_${order}`}_${hash}`;
  const ddl = `CREATE OR REPLACE FUNCTION ${name}(p_tenant text, p_lock_timeout text, p_prices jsonb, p_calls jsonb, p_order jsonb, p_traceparent text)
RETURNS text LANGUAGE plpgsql AS $composed$
DECLARE
  r jsonb;
  v_number text;
BEGIN
${body}
END $composed$`;
  return { name, ddl, batch: composeBatch(name) };
}

/**
 * Many orders in one transaction, each all or nothing: the composed function once per order, each
 * call in its own subtransaction (a PL/pgSQL block with an exception handler), so a refusal, a lock
 * waited on too long or a deadlock undoes that order only. What the hot-SKU writer runs: the hot row
 * is locked by the first order and written by every order of the batch, then freed by one commit.
 * Any other error rolls the whole batch back. p_orders: [{lockTimeout, prices, calls, order,
 * traceparent}], one outcome per order in the same order.
 */
function composeBatch(single: string) {
  const body = `DECLARE
  v_item jsonb;
  v_out jsonb[] := '{}';
  v_message text;
  v_detail text;
BEGIN
  FOR v_item IN SELECT value FROM jsonb_array_elements(p_orders) LOOP
    BEGIN
      v_out := v_out || jsonb_build_object('number', ${single}(p_tenant, v_item->>'lockTimeout', v_item->'prices', v_item->'calls', v_item->'order', v_item->>'traceparent'));
    EXCEPTION
      WHEN SQLSTATE ${literal(REFUSED)} THEN
        GET STACKED DIAGNOSTICS v_message = MESSAGE_TEXT, v_detail = PG_EXCEPTION_DETAIL;
        v_out := v_out || jsonb_build_object('refused', v_message, 'detail', v_detail);
      WHEN lock_not_available THEN
        v_out := v_out || jsonb_build_object('lockTimeout', true);
      WHEN deadlock_detected THEN
        v_out := v_out || jsonb_build_object('alone', true);
    END;
  END LOOP;
  RETURN to_jsonb(v_out);
END`;
  const name = `${single}_batch_${createHash("sha256").update(body).digest("hex").slice(0, 8)}`;
  const ddl = `CREATE OR REPLACE FUNCTION ${name}(p_tenant text, p_orders jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $batch$
${body} $batch$`;
  return { name, ddl };
}

type BatchRow = { number: string } | { refused: string; detail: string | null } | { lockTimeout: true } | { alone: true };

function batchOutcome(row: BatchRow): BatchOutcome {
  if ("number" in row) return { kind: "recorded", orderNumber: row.number };
  if ("refused" in row) return { kind: "refused", reason: row.refused, detail: row.detail ?? "" };
  return "lockTimeout" in row ? { kind: "lock-timeout" } : { kind: "alone" };
}

/** Runs a flow's composed function, creating it first if this database does not have it yet. */
export function composedRunner<C extends OrderContext>(database: Database, flow: Flow<C>, order: OrderWriter = "record") {
  const { name, ddl, batch } = composeFlow(flow, order);
  let created: Promise<void> | undefined;
  const create = async () => {
    const found = await rows<{ proname: string }>(database.db, sql`select proname from pg_proc where proname in (${name}, ${batch.name})`);
    if (found.length === 2) return;
    await transaction(database.db, async (tx) => {
      await tx.execute(sql`select pg_advisory_xact_lock(hashtext(${name}))`);
      await tx.execute(sql.raw(ddl));
      await tx.execute(sql.raw(batch.ddl));
    });
  };

  return {
    name,
    ddl,
    /** Creates the function if this database lacks it; before run(), outside any transaction (PGlite has one connection). */
    async ready(): Promise<void> {
      created ??= create().catch((error: unknown) => {
        created = undefined;
        throw error;
      });
      await created;
    },
    /**
     * One statement: every step, the order record and its outbox event commit together or not at all.
     * On the database handle it is its own transaction; on a transaction it joins it.
     */
    async run(args: ComposedArgs, q: Queryable = database.db): Promise<ComposedOutcome> {
      try {
        const [row] = await rows<{ number: string }>(q, sql`
          select ${sql.raw(name)}(${args.tenantId}, ${`${args.lockTimeoutMs}ms`}, ${JSON.stringify(args.prices)}::jsonb,
                                  ${JSON.stringify(args.calls)}::jsonb, ${JSON.stringify(args.order)}::jsonb, ${args.traceparent ?? null}::text) as number`);
        return { kind: "recorded", orderNumber: (row as { number: string }).number };
      } catch (error) {
        const state = sqlState(error);
        if (state === LOCK_TIMEOUT) return { kind: "lock-timeout" };
        if (state !== REFUSED) throw error;
        const raised = raisedBy(error);
        return { kind: "refused", reason: raised.message, detail: raised.detail ?? "" };
      }
    },
    /**
     * Many orders of one tenant in one statement (see composeBatch): one outcome per order, in order.
     * On the database handle it is its own transaction; on a transaction it joins it.
     */
    async runBatch(tenantId: string, batchArgs: Omit<ComposedArgs, "tenantId">[], q: Queryable = database.db): Promise<BatchOutcome[]> {
      const items = batchArgs.map((a) => ({ lockTimeout: `${a.lockTimeoutMs}ms`, prices: a.prices, calls: a.calls, order: a.order, traceparent: a.traceparent }));
      const [row] = await rows<{ outcomes: BatchRow[] }>(q, sql`select ${sql.raw(batch.name)}(${tenantId}, ${JSON.stringify(items)}::jsonb) as outcomes`);
      return (row as { outcomes: BatchRow[] }).outcomes.map(batchOutcome);
    },
  };
}

/** The database's error raised for a refusal (drizzle wraps it): its message is the reason. */
function raisedBy(error: unknown): { message: string; detail?: string } {
  for (let e: unknown = error; e && typeof e === "object"; e = (e as { cause?: unknown }).cause) {
    if ((e as { code?: unknown }).code === REFUSED) return e as { message: string; detail?: string };
  }
  return { message: "PLACEMENT_FAILED" };
}
