import type { Database } from "../db/client.ts";
import type { Inventory } from "../modules/inventory/inventory.ts";
import type { Orders, Viewer } from "../modules/orders/orders.ts";
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
    const system: Viewer = { tenantId, userId: "", admin: true };
    return orders.withMoves(database, tenantId, async (tx, moves): Promise<CallbackResult> => {
      const order = await orders.lockOrder(tx, system, orderId);
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
