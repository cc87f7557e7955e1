import type { Database } from "../db/client.ts";
import type { Outbox } from "../kit/outbox.ts";
import { type Orders, systemViewer } from "../modules/orders/orders.ts";
import type { OrderStatus } from "../modules/orders/schema.ts";
import { decidePayment, type PaymentReport, type Payments } from "../modules/payments/payments.ts";
import { CAPTURE, captureContext, payOrder } from "./capture.ts";
import { type Effects, runSteps } from "./executors.ts";
import type { StepModules } from "./steps.ts";

export type CallbackResult =
  | { kind: "accepted"; orderId: string; status: OrderStatus; duplicate: boolean }
  | { kind: "not_found" }
  | { kind: "amount_mismatch"; detail: string }
  | { kind: "not_payable"; orderId: string; status: OrderStatus; detail: string };

export type HandlePaymentReport = (report: PaymentReport) => Promise<CallbackResult>;

const stillPending = (orderId: string): CallbackResult => ({ kind: "not_payable", orderId, status: "PENDING", detail: "the order is still being placed; retry shortly" });
const keptForRefund = (orderId: string, status: OrderStatus): CallbackResult => ({
  kind: "not_payable",
  orderId,
  status,
  detail: `the order is ${status}; the payment is recorded as refund_pending`,
});

/**
 * A payment provider's report, all-in-one: the order row is locked first, so every delivery for one
 * order is handled one after another, and the capture flow runs in the same transaction. The
 * (order, transaction, outcome) unique key makes a repeat a no-op.
 */
export function createPaymentCallback(deps: { database: Database; orders: Orders; payments: Payments; steps: StepModules; effects: Effects }): HandlePaymentReport {
  const { database, orders, payments } = deps;
  return (report) =>
    orders.withMoves(database, report.tenantId, async (tx, moves): Promise<CallbackResult> => {
      const { orderId } = report;
      const order = await orders.lockOrder(tx, systemViewer(report.tenantId), orderId);
      if (!order) return { kind: "not_found" };
      const decision = decidePayment(order, report);
      if (decision.kind === "amount_mismatch") return decision;
      if (decision.kind === "still_pending") return stillPending(orderId);
      if (!(await payments.recordPayment(tx, report, decision.status))) return { kind: "accepted", orderId, status: order.status, duplicate: true };
      if (decision.status === "failed") return { kind: "accepted", orderId, status: order.status, duplicate: false };
      if (decision.status === "refund_pending") {
        if (order.paymentStatus === "voided") {
          await orders.move(tx, moves, { order, by: "payment", payment: "refund_pending", reason: "payment_callback", patch: { externalTxnId: report.externalTxnId } });
        }
        return keptForRefund(orderId, order.status);
      }
      const context = captureContext(order, report.externalTxnId);
      const ran = await runSteps(deps.steps, CAPTURE, tx, report.tenantId, context, { confirm: true });
      if (!ran.ok) throw new Error(`capturing order ${orderId} failed: ${ran.reason}`); // its one step cannot be refused
      const paid = await payOrder(deps, tx, moves, order, context, ran.value);
      if (!paid.ok) throw new Error(`paying order ${orderId} failed: ${paid.reason}`);
      return { kind: "accepted", orderId, status: "PAID", duplicate: false };
    });
}

/** Messages about external payments between the payments and orders services (split deployment). */
export const PAYMENT_TOPICS = {
  /** payments → orders: the provider captured the money. */
  captured: "payments.captured",
  /** payments → orders: money arrived for an order that can no longer be paid. */
  refundPending: "payments.refund-pending",
  /** payments → orders: money kept for refund was given back (src/flows/refunds.ts). */
  refunded: "payments.refunded",
} as const;

export interface PaymentEvent {
  orderId: string;
  externalTxnId: string;
  amount: number;
  currency: string;
}

/**
 * A payment provider's report, split deployment: the payments service answers from its copy of the
 * order (kept from the orders service's events), locked first so deliveries for one order run one at
 * a time, and tells the orders service what happened through the outbox.
 */
export function createIntentPaymentCallback(deps: { database: Database; payments: Payments; outbox: Outbox }): HandlePaymentReport {
  const { database, payments, outbox } = deps;
  return (report) =>
    database.tenant(report.tenantId, async (tx): Promise<CallbackResult> => {
      const { tenantId, orderId } = report;
      const copy = await payments.lockIntent(tx, tenantId, orderId);
      if (!copy) return { kind: "not_found" };
      // Captured here, and on its way to PAID at the orders service: that is what the provider is told.
      const status = copy.orderStatus === "CREATED" && copy.paymentStatus === "captured" ? "PAID" : copy.orderStatus;
      const order = { status: copy.orderStatus, paymentMethod: copy.paymentMethod, paymentStatus: copy.paymentStatus, total: copy.amount, currency: copy.currency };
      const decision = decidePayment(order, report);
      if (decision.kind === "amount_mismatch") return decision;
      if (decision.kind === "still_pending") return stillPending(orderId);
      if (!(await payments.recordPayment(tx, report, decision.status))) return { kind: "accepted", orderId, status, duplicate: true };
      if (decision.status === "failed") return { kind: "accepted", orderId, status, duplicate: false };
      const event: PaymentEvent = { orderId, externalTxnId: report.externalTxnId, amount: report.amount, currency: report.currency };
      if (decision.status === "captured") {
        await payments.noteCaptured(tx, tenantId, orderId);
        await outbox.enqueue(tx, { tenantId, topic: PAYMENT_TOPICS.captured, payload: event });
        return { kind: "accepted", orderId, status: "PAID", duplicate: false };
      }
      await outbox.enqueue(tx, { tenantId, topic: PAYMENT_TOPICS.refundPending, payload: event });
      return keptForRefund(orderId, status);
    });
}
