import type { Logger } from "pino";
import type { Database, Tx } from "../db/client.ts";
import type { Clock } from "../kit/clock.ts";
import type { Outbox } from "../kit/outbox.ts";
import type { TransitionEvent } from "../modules/orders/hooks.ts";
import { type Orders, systemViewer } from "../modules/orders/orders.ts";
import { type DueRefund, type PaymentProvider, type RefundAnswer, refundRequestOf, type Refunds } from "../modules/payments/refunds.ts";
import { PAYMENT_TOPICS, type PaymentEvent } from "./payment-callback.ts";

/** Between refund requests for one payment: quick at first, then every 6 hours for as long as the money is not back. */
export const REFUND_DELAYS_MS = [5_000, 30_000, 2 * 60_000, 10 * 60_000, 3_600_000, 6 * 3_600_000];

/** Requests sent at once by one run; each run claims only these, so all are sent within their lease. */
const SENT_AT_ONCE = 8;

export type RefundOutcome = RefundAnswer["kind"];

/**
 * At the orders service: a payment kept for refund was refunded. The order's payment reads
 * `refunded` when that payment is the one it was waiting to refund (an order paid twice keeps its
 * capture: only the second payment was refunded).
 */
export async function noteOrderRefunded(orders: Orders, tx: Tx, moves: TransitionEvent[], tenantId: string, event: PaymentEvent): Promise<void> {
  let order = await orders.lockOrder(tx, systemViewer(tenantId), event.orderId);
  if (!order) return;
  // In the split deployment this message may overtake payments.refund-pending: the order hears of both.
  if (order.paymentStatus === "voided") {
    const kept = await orders.move(tx, moves, { order, by: "payment", payment: "refund_pending", reason: "payment_after_cancel", patch: { externalTxnId: event.externalTxnId } });
    if (!kept.ok) throw new Error(`recording the payment kept for refund of order ${order.id} failed: ${kept.reason}`);
    order = kept.value;
  }
  if (order.paymentStatus !== "refund_pending" || order.externalTxnId !== event.externalTxnId) return;
  const moved = await orders.move(tx, moves, { order, by: "payment", payment: "refunded", reason: "refunded" });
  if (!moved.ok) throw new Error(`recording the refund of order ${order.id} failed: ${moved.reason}`);
}

/**
 * Gives back money recorded as refund_pending (api-contract.md §4: a payment for an order that can no
 * longer be paid), through the payment provider, until the payment reads `refunded`. Runs on any
 * number of replicas of the payments service: each claims due payments with SKIP LOCKED and a lease,
 * calls the provider outside any transaction, and records the answer only while its lease holds.
 *
 * A refund is never paid twice: every request for one payment carries the same idempotency key
 * (derived from the payment), so a request repeated after a timeout, a lost lease or a crash between
 * the provider's answer and its record is the same refund to the provider.
 *
 * Once refunded, the order hears of it: in the all-in-one in the same transaction, in the split
 * deployment through the outbox (`payments.refunded`, to the orders service).
 */
export function createRefunder(deps: {
  database: Database;
  refunds: Refunds;
  provider: PaymentProvider;
  clock: Clock;
  log: Logger;
  /** How long one request may take; a claim's lease covers the request and recording its answer, twice over. */
  timeoutMs: number;
  /** The all-in-one moves the order itself; the split deployment tells the orders service. */
  tellOrders: { orders: Orders } | { outbox: Outbox };
  retryDelaysMs?: number[] | undefined;
}) {
  const { database, refunds, provider, clock, log, tellOrders } = deps;
  const delays = deps.retryDelaysMs ?? REFUND_DELAYS_MS;
  const leaseMs = 2 * deps.timeoutMs + 2_000;

  /** After the request numbered `attempts + 1`: the first waits delays[0]. */
  const nextAttemptAt = (attempts: number) => {
    const base = delays[Math.min(attempts, delays.length - 1)] ?? 6 * 3_600_000;
    return new Date(clock.now().getTime() + Math.round(base * (0.8 + Math.random() * 0.4)));
  };

  async function recordAnswer(due: DueRefund, answer: RefundAnswer): Promise<void> {
    const moves: TransitionEvent[] = [];
    const event: PaymentEvent = { orderId: due.orderId, externalTxnId: due.externalTxnId, amount: due.amount, currency: due.currency };
    const recorded = await database.tenant(due.tenantId, async (tx) => {
      const result = await refunds.record(tx, due, answer, nextAttemptAt(due.attempts));
      if (result !== "refunded") return result;
      if ("orders" in tellOrders) await noteOrderRefunded(tellOrders.orders, tx, moves, due.tenantId, event);
      else await tellOrders.outbox.enqueue(tx, { tenantId: due.tenantId, topic: PAYMENT_TOPICS.refunded, payload: event });
      return result;
    });
    if ("orders" in tellOrders) await tellOrders.orders.runAfterHooks(moves);
    const fields = { tenantId: due.tenantId, orderId: due.orderId, externalTxnId: due.externalTxnId, attempt: due.attempts + 1 };
    if (recorded === "lease_lost") log.warn(fields, "a refund's answer came after its lease ended; the payment was left to whoever holds it now");
    else if (answer.kind === "refunded") log.info({ ...fields, providerRefundId: answer.providerRefundId }, "payment refunded");
    else if (answer.kind === "refused") log.warn({ ...fields, reason: answer.reason }, "the payment provider refused a refund; asked again later, and flagged for an operator");
    else if (answer.kind === "unavailable") log.warn({ ...fields, reason: answer.reason }, "a refund request got no answer; asked again later");
  }

  return {
    /**
     * Sends the refund requests that are due, a few at a time, until none is left: the background
     * job's run. `counted` hears each answer. Answers how many requests were sent.
     */
    async refundDue(counted: (outcome: RefundOutcome) => void = () => {}): Promise<number> {
      let sent = 0;
      for (;;) {
        const due = await refunds.claimDue(database.db, SENT_AT_ONCE, leaseMs);
        const results = await Promise.allSettled(
          due.map(async (payment) => {
            const answer = await provider.refund(refundRequestOf(payment));
            await recordAnswer(payment, answer);
            counted(answer.kind);
          }),
        );
        for (const result of results) if (result.status === "rejected") throw result.reason;
        sent += due.length;
        if (due.length < SENT_AT_ONCE) return sent;
      }
    },
  };
}

export type Refunder = ReturnType<typeof createRefunder>;
