import type { Database } from "../db/client.ts";
import type { Outbox } from "../kit/outbox.ts";
import type { Inventory } from "../modules/inventory/inventory.ts";
import { type Orders, systemViewer } from "../modules/orders/orders.ts";
import type { OrderStatus } from "../modules/orders/schema.ts";
import type { Payments } from "../modules/payments/payments.ts";
import type { Shipping } from "../modules/shipping/shipping.ts";

export interface PaymentReport {
  tenantId: string;
  orderId: string;
  externalTxnId: string;
  amount: number;
  currency: string;
  status: "succeeded" | "failed";
}

export type CallbackResult =
  | { kind: "accepted"; orderId: string; status: OrderStatus; duplicate: boolean }
  | { kind: "not_found" }
  | { kind: "amount_mismatch"; detail: string }
  | { kind: "not_payable"; orderId: string; status: OrderStatus; detail: string };

/**
 * A payment provider's report about an external-payment order. The order row is locked first, so
 * every delivery for one order is handled one after another; the (order, transaction) unique key
 * makes a repeat a no-op. Money that arrives for an order that can no longer be paid is recorded
 * as refund_pending, never dropped.
 */
export function createPaymentCallback(deps: { database: Database; orders: Orders; payments: Payments; inventory: Inventory; shipping: Shipping }) {
  const { database, orders, payments, inventory, shipping } = deps;

  return async function handlePaymentReport(report: PaymentReport): Promise<CallbackResult> {
    const { tenantId, orderId } = report;
    return orders.withMoves(database, tenantId, async (tx, moves): Promise<CallbackResult> => {
      const order = await orders.lockOrder(tx, systemViewer(tenantId), orderId);
      if (!order) return { kind: "not_found" };
      if (report.amount !== order.total || report.currency !== order.currency) {
        return { kind: "amount_mismatch", detail: `the order is due ${order.total} ${order.currency}, not ${report.amount} ${report.currency}` };
      }
      const payable = order.status === "CREATED" && order.paymentMethod === "external";
      if (order.status === "PENDING" && report.status === "succeeded") {
        // Placement has not finished; the provider retries and finds it CREATED or CANCELLED.
        return { kind: "not_payable", orderId, status: order.status, detail: "the order is still being placed; retry shortly" };
      }
      const recordStatus = report.status === "failed" ? "failed" : payable ? "captured" : "refund_pending";
      const fresh = await payments.recordPayment(tx, { ...report, status: recordStatus });
      if (!fresh) return { kind: "accepted", orderId, status: order.status, duplicate: true };

      if (recordStatus === "failed") return { kind: "accepted", orderId, status: order.status, duplicate: false };
      if (recordStatus === "refund_pending") {
        if (order.status === "CANCELLED") {
          await orders.updateOrder(tx, order, { paymentStatus: "refund_pending", externalTxnId: report.externalTxnId });
        }
        return { kind: "not_payable", orderId, status: order.status, detail: `the order is ${order.status}; the payment is recorded as refund_pending` };
      }
      const shipment = await shipping.createDocument(tx, { tenantId, orderId, address: order.shippingAddress });
      await inventory.sell(tx, { tenantId, orderId });
      const moved = await orders.transition(tx, moves, {
        order,
        to: "PAID",
        reason: "payment_callback",
        patch: { paymentStatus: "captured", externalTxnId: report.externalTxnId, paymentDueAt: null, shipmentWaybill: shipment.waybill, shipmentStatus: shipment.status },
      });
      if (!moved.ok) throw new Error(`paying order ${orderId} failed: ${moved.reason}`);
      return { kind: "accepted", orderId, status: "PAID", duplicate: false };
    });
  };
}

export type HandlePaymentReport = ReturnType<typeof createPaymentCallback>;

const ORDER_STATUS_OF_INTENT = { open: "CREATED", paid: "PAID", closed: "CANCELLED" } as const;

/**
 * The payments service's handling of a provider report in the split deployment: it answers from its
 * payment intents (kept from the orders service's events) and tells the orders service what happened
 * through the outbox. The intent row is locked first, so deliveries for one order run one at a time.
 */
export function createIntentPaymentCallback(deps: { database: Database; payments: Payments; outbox: Outbox }) {
  const { database, payments, outbox } = deps;
  return async function handlePaymentReport(report: PaymentReport): Promise<CallbackResult> {
    const { tenantId, orderId } = report;
    return database.tenant(tenantId, async (tx): Promise<CallbackResult> => {
      const intent = await payments.lockIntent(tx, tenantId, orderId);
      if (!intent) return { kind: "not_found" };
      if (report.amount !== intent.amount || report.currency !== intent.currency) {
        return { kind: "amount_mismatch", detail: `the order is due ${intent.amount} ${intent.currency}, not ${report.amount} ${report.currency}` };
      }
      const status = ORDER_STATUS_OF_INTENT[intent.status];
      const recordStatus = report.status === "failed" ? "failed" : intent.status === "open" ? "captured" : "refund_pending";
      const fresh = await payments.recordPayment(tx, { ...report, status: recordStatus });
      if (!fresh) return { kind: "accepted", orderId, status, duplicate: true };
      if (recordStatus === "failed") return { kind: "accepted", orderId, status, duplicate: false };
      const event = { orderId, externalTxnId: report.externalTxnId, amount: report.amount, currency: report.currency };
      if (recordStatus === "captured") {
        await payments.settleIntent(tx, { tenantId, orderId, status: "paid" });
        await outbox.enqueue(tx, { tenantId, topic: PAYMENT_TOPICS.captured, payload: event });
        return { kind: "accepted", orderId, status: "PAID", duplicate: false };
      }
      await outbox.enqueue(tx, { tenantId, topic: PAYMENT_TOPICS.refundPending, payload: event });
      return { kind: "not_payable", orderId, status, detail: `the order is ${status}; the payment is recorded as refund_pending` };
    });
  };
}

/** Messages between the orders and payments services about external payments (split deployment). */
export const PAYMENT_TOPICS = {
  /** orders → payments: an external-payment order awaits { orderId, amount, currency }. */
  expected: "orders.payment-expected",
  /** orders → payments: the order was cancelled; it can no longer be paid. */
  closed: "orders.payment-closed",
  /** orders → payments: a capture arrived for an order cancelled meanwhile; keep it to refund. */
  refundNeeded: "orders.refund-needed",
  /** payments → orders: the provider captured the money. */
  captured: "payments.captured",
  /** payments → orders: money arrived for an order that can no longer be paid. */
  refundPending: "payments.refund-pending",
} as const;
