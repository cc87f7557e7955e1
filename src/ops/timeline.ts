import { type SQL, sql } from "drizzle-orm";
import { anyOf, type Database, type Queryable, rows } from "../db/client.ts";
import { STUCK_AFTER_MS } from "../kit/backlog.ts";
import type { DeadLetter } from "../kit/dead-letters.ts";
import type { StepProgress } from "../kit/saga.ts";
import type { OrderView, Orders } from "../modules/orders/orders.ts";

/** One thing that happened to an order, as an operator reads it (api-contract.md §6). */
export interface TimelineEvent {
  at: string;
  kind: "state" | "saga" | "saga-step" | "message" | "message-handled" | "payment" | "notification" | "dead-letter" | "dead-letter-action";
  /** One line for a person. */
  title: string;
  /** How long it took, when it is something that takes time (a saga step, a message until published). */
  durationMs: number | null;
  /** The W3C trace id of the change behind it, where one was stored. */
  traceId: string | null;
  /** The id of the saga, message, payment or dead letter it is about. */
  ref: string | null;
  details: Record<string, unknown>;
}

export interface Timeline {
  order: OrderView;
  events: TimelineEvent[];
}

export interface SagaSummary {
  id: string;
  type: string;
  status: "running" | "compensating" | "completed" | "compensated";
  /** Not settled STUCK_AFTER_MS after it started. */
  stuck: boolean;
  orderId: string | null;
  abortReason: string | null;
  steps: { step: string; state: string; attempts: number; ops: NonNullable<StepProgress["ops"]> }[];
  createdAt: string;
  updatedAt: string;
}

const iso = (value: Date | string) => new Date(value).toISOString();
const traceIdOf = (traceparent: string | null | undefined) => (traceparent ? (/^[\da-f]{2}-([\da-f]{32})-/.exec(traceparent)?.[1] ?? null) : null);
const ms = (from: Date | string, to: Date | string | null | undefined) => (to ? new Date(to).getTime() - new Date(from).getTime() : null);

interface SagaRow {
  id: string;
  type: string;
  status: SagaSummary["status"];
  context: { orderId?: string };
  steps: Record<string, StepProgress>;
  abort_reason: string | null;
  created_at: Date | string;
  updated_at: Date | string;
}

function summarise(row: SagaRow, now: Date): SagaSummary {
  const active = row.status === "running" || row.status === "compensating";
  return {
    id: row.id,
    type: row.type,
    status: row.status,
    stuck: active && now.getTime() - new Date(row.created_at).getTime() > STUCK_AFTER_MS,
    orderId: typeof row.context?.orderId === "string" ? row.context.orderId : null,
    abortReason: row.abort_reason,
    steps: Object.entries(row.steps).map(([step, p]) => ({ step, state: p.state, attempts: p.attempts, ops: p.ops ?? [] })),
    createdAt: iso(row.created_at),
    updatedAt: iso(row.updated_at),
  };
}

/** Whether this database holds a table (a split service's database holds only its own tables). */
async function hasTable(q: Queryable, table: string): Promise<boolean> {
  const [row] = await rows<{ found: boolean }>(q, sql`select to_regclass(${table}) is not null as found`);
  return row?.found === true;
}

/**
 * Reads what an operator needs to see and fix orders. Read-only, one tenant at a time. It reads the
 * orders module's and the tx kit's tables and, for the timeline, the payments table where `payments`
 * says so: a process that runs the payments service too (the all-in-one) reads it; a split orders
 * service never does, even on a database it shares with the payments service (each service reads
 * only its own tables), and shows the payment as it heard of it (messages, the order's payment
 * status). "if-present": the CLI's operator, who may point it at any database.
 */
export function createOperations(deps: { database: Database; orders: Orders; clock: { now(): Date }; payments: boolean | "if-present" }) {
  const { database, orders, clock } = deps;

  /**
   * Outbox rows about the order: its events, the commands and replies of its sagas, payment events.
   * Scans the tenant's rows of these tables, which retention keeps to days (ORDERLY_RETENTION_HOURS).
   */
  const aboutOrder = (column: SQL, orderId: string, sagaIds: string[]) =>
    sql`(${column}->>'orderId' = ${orderId} or ${column}->>'id' = ${orderId}
         or ${column}->>'sagaId' = ${anyOf(sagaIds)})`;

  async function timeline(tenantId: string, orderId: string): Promise<Timeline | undefined> {
    const viewer = { tenantId, userId: "", admin: true };
    const found = await database.tenant(tenantId, async (tx) => {
      const order = await orders.getOrder(tx, viewer, orderId);
      if (!order) return undefined;
      // The placement saga carries the order's id; the capture saga is `cap_<order id>` (src/flows).
      const sagas = await rows<SagaRow>(
        tx,
        sql`select id, type, status, context, steps, abort_reason, created_at, updated_at from sagas
            where tenant_id = ${tenantId} and (id = ${orderId} or id = ${`cap_${orderId}`}) order by created_at`,
      );
      const sagaIds = sagas.map((s) => s.id);
      const messages = await rows<{
        id: string;
        topic: string;
        status: string;
        consumer: string | null;
        redrive_of: string | null;
        traceparent: string | null;
        attempts: number;
        last_error: string | null;
        payload: Record<string, unknown>;
        created_at: Date | string;
        published_at: Date | string | null;
      }>(
        tx,
        sql`select id, topic, status, consumer, redrive_of, traceparent, attempts, last_error, payload, created_at, published_at
            from outbox_messages where tenant_id = ${tenantId} and ${aboutOrder(sql`payload`, orderId, sagaIds)} order by created_at, id`,
      );
      const handled = await rows<{ consumer: string; message_id: string; processed_at: Date | string }>(
        tx,
        sql`select consumer, message_id, processed_at from inbox_messages
            where tenant_id = ${tenantId} and message_id = ${anyOf(messages.map((m) => m.id))}`,
      );
      const readsPayments = deps.payments === "if-present" ? await hasTable(tx, "payments") : deps.payments;
      const payments = readsPayments
        ? await rows<{ external_txn_id: string; outcome: string; status: string; amount: number | string; currency: string; created_at: Date | string; refund_attempts: number; refund_error: string | null; provider_refund_id: string | null; refunded_at: Date | string | null }>(
            tx,
            sql`select external_txn_id, outcome, status, amount, currency, created_at, refund_attempts, refund_error, provider_refund_id, refunded_at from payments where tenant_id = ${tenantId} and order_id = ${orderId} order by created_at`,
          )
        : [];
      // Merchants' webhooks (the orders service's tables): each delivery of an event about it and its attempts.
      const notifications = await rows<{
        id: string;
        endpoint_id: string;
        event_type: string;
        event_id: string;
        status: string;
        settled_at: Date | string | null;
        at: Date | string | null;
        duration_ms: number | null;
        status_code: number | null;
        error: string | null;
      }>(
        tx,
        sql`select d.id, d.endpoint_id, d.event_type, d.event_id, d.status, d.settled_at, a.at, a.duration_ms, a.status_code, a.error
            from webhook_deliveries d left join webhook_attempts a on a.delivery_id = d.id
            where d.tenant_id = ${tenantId} and d.order_id = ${orderId} order by d.created_at, d.id, a.at, a.id`,
      );
      return { order, sagas, messages, handled, payments, notifications };
    });
    if (!found) return undefined;
    const { order, sagas, messages, handled, payments, notifications } = found;

    // Dead letters are the operator's table (no tenant role): read as the owner, filtered by tenant.
    const references = [...sagas.map((s) => s.id), ...messages.map((m) => m.id)];
    const letters = await rows<DeadLetter & { created_at: Date | string; updated_at: Date | string }>(
      database.db,
      sql`select id, source, reference, consumer, topic, reason, status, note, created_at, updated_at from dead_letters
          where tenant_id = ${tenantId}
            and (reference = ${anyOf(references)} or ${aboutOrder(sql`payload`, orderId, sagas.map((s) => s.id))})
          order by created_at`,
    );
    const actions = await rows<{ dead_letter_id: string; action: string; actor: string; note: string | null; at: Date | string }>(
      database.db,
      sql`select dead_letter_id, action, actor, note, at from dead_letter_actions
          where dead_letter_id = ${anyOf(letters.map((l) => l.id))} order by id`,
    );

    const events: TimelineEvent[] = [];
    const add = (event: Omit<TimelineEvent, "durationMs" | "traceId" | "ref"> & Partial<TimelineEvent>) =>
      events.push({ durationMs: null, traceId: null, ref: null, ...event });
    for (const move of order.history) {
      add({ at: move.at, kind: "state", title: `${move.from ?? "new"} → ${move.to}${move.reason ? ` (${move.reason})` : ""}`, details: { ...move } });
    }
    for (const saga of sagas) {
      const settled = saga.status === "completed" || saga.status === "compensated";
      add({ at: iso(saga.created_at), kind: "saga", title: `saga ${saga.type} started`, ref: saga.id, details: { type: saga.type } });
      if (settled) {
        add({
          at: iso(saga.updated_at),
          kind: "saga",
          title: `saga ${saga.type} ${saga.status}${saga.abort_reason ? ` (${saga.abort_reason})` : ""}`,
          durationMs: ms(saga.created_at, saga.updated_at),
          ref: saga.id,
          details: { type: saga.type, status: saga.status, abortReason: saga.abort_reason },
        });
      }
      for (const [step, progress] of Object.entries(saga.steps)) {
        for (const op of progress.ops ?? []) {
          add({
            at: op.sentAt,
            kind: "saga-step",
            title: `${step} ${op.op}: ${op.outcome ?? "awaiting answer"}`,
            durationMs: ms(op.sentAt, op.settledAt),
            ref: saga.id,
            details: { saga: saga.type, step, op: op.op, outcome: op.outcome ?? null, settledAt: op.settledAt ?? null },
          });
        }
      }
    }
    const topics = new Map(messages.map((m) => [m.id, m.topic]));
    for (const m of messages) {
      add({
        at: iso(m.created_at),
        kind: "message",
        title: `${m.topic} ${m.status === "published" ? "sent" : m.status}${m.consumer ? ` to ${m.consumer}` : ""}`,
        durationMs: ms(m.created_at, m.published_at),
        traceId: traceIdOf(m.traceparent),
        ref: m.id,
        details: {
          topic: m.topic,
          status: m.status,
          attempts: m.attempts,
          publishedAt: m.published_at ? iso(m.published_at) : null,
          lastError: m.last_error,
          consumer: m.consumer,
          redriveOf: m.redrive_of,
          ...(m.payload.op ? { step: m.payload.step, op: m.payload.op } : {}),
        },
      });
    }
    for (const h of handled) {
      add({ at: iso(h.processed_at), kind: "message-handled", title: `${h.consumer} handled ${topics.get(h.message_id) ?? h.message_id}`, ref: h.message_id, details: { consumer: h.consumer } });
    }
    for (const p of payments) {
      add({
        at: iso(p.created_at),
        kind: "payment",
        title: `payment ${p.outcome} (${p.status}): ${p.amount} ${p.currency}`,
        ref: p.external_txn_id,
        details: { externalTxnId: p.external_txn_id, outcome: p.outcome, status: p.status, amount: Number(p.amount), currency: p.currency },
      });
      if (p.refunded_at) {
        add({
          at: iso(p.refunded_at),
          kind: "payment",
          title: `refunded by the provider: ${p.amount} ${p.currency}`,
          ref: p.external_txn_id,
          details: { externalTxnId: p.external_txn_id, providerRefundId: p.provider_refund_id, requests: p.refund_attempts },
        });
      }
    }
    notifications.forEach((n, i) => {
      const last = notifications[i + 1]?.id !== n.id;
      const target = `webhook ${n.event_type} to ${n.endpoint_id}`;
      const details = { delivery: n.id, eventId: n.event_id, endpoint: n.endpoint_id, status: n.status, statusCode: n.status_code, error: n.error };
      if (n.at !== null) {
        // The last attempt of a settled delivery says how it ended.
        const ending = last && n.status === "delivered" ? ", delivered" : last && n.status === "given_up" && n.settled_at !== null && iso(n.settled_at) === iso(n.at) ? ", given up" : "";
        add({ at: iso(n.at), kind: "notification", title: `${target}: ${n.status_code ?? n.error}${ending}`, durationMs: n.duration_ms, ref: n.id, details });
      }
      // Given up without an attempt of its own (its endpoint was deleted).
      if (last && n.status === "given_up" && n.settled_at !== null && (n.at === null || iso(n.settled_at) !== iso(n.at))) {
        add({ at: iso(n.settled_at), kind: "notification", title: `${target}: given up (the endpoint was deleted)`, ref: n.id, details });
      }
    });
    for (const l of letters) {
      add({
        at: iso(l.created_at),
        kind: "dead-letter",
        title: `dead letter (${l.source}${l.consumer ? `/${l.consumer}` : ""}): ${l.reason}`,
        ref: l.id,
        details: { source: l.source, reference: l.reference, consumer: l.consumer, topic: l.topic, status: l.status, note: l.note },
      });
    }
    for (const a of actions) {
      add({ at: iso(a.at), kind: "dead-letter-action", title: `dead letter ${a.action} by ${a.actor}${a.note ? `: ${a.note}` : ""}`, ref: a.dead_letter_id, details: { ...a, at: iso(a.at) } });
    }
    // Time order; at equal times, the order they were added (a state move before the saga it started).
    const ranked = events.map((event, i) => ({ event, i }));
    ranked.sort((a, b) => Date.parse(a.event.at) - Date.parse(b.event.at) || a.i - b.i);
    return { order, events: ranked.map((r) => r.event) };
  }

  /** The tenant's sagas in a state, newest first; `stuck`: running or compensating, started over 30 s ago. */
  async function listSagas(
    tenantId: string,
    filter: { state: "running" | "compensating" | "stuck"; limit: number; after?: { at: Date; key: string } },
  ): Promise<SagaSummary[]> {
    const now = clock.now();
    const state =
      filter.state === "stuck"
        ? sql`status in ('running', 'compensating') and created_at < ${new Date(now.getTime() - STUCK_AFTER_MS).toISOString()}::timestamptz`
        : sql`status = ${filter.state}`;
    const after = filter.after ? sql`and (created_at, id) < (${filter.after.at.toISOString()}::timestamptz, ${filter.after.key})` : sql``;
    const found = await database.tenant(tenantId, (tx) =>
      rows<SagaRow>(
        tx,
        sql`select id, type, status, context, steps, abort_reason, created_at, updated_at from sagas
            where tenant_id = ${tenantId} and ${state} ${after} order by created_at desc, id desc limit ${filter.limit + 1}`,
      ),
    );
    return found.map((row) => summarise(row, now));
  }

  /** The tenant an order belongs to (the CLI is given only the id); undefined when no such order is here. */
  async function tenantOfOrder(orderId: string): Promise<string | undefined> {
    if (!(await hasTable(database.db, "orders"))) return undefined;
    const [row] = await rows<{ tenant_id: string }>(database.db, sql`select tenant_id from orders where id = ${orderId}`);
    return row?.tenant_id;
  }

  return { timeline, listSagas, tenantOfOrder };
}

export type Operations = ReturnType<typeof createOperations>;
