import type { Database, Tx } from "../db/client.ts";
import type { Subscription } from "../kit/bus.ts";
import { inboxHandler } from "../kit/inbox.ts";
import type { Outbox } from "../kit/outbox.ts";
import type { SagaRunner } from "../kit/saga.ts";
import type { TransitionEvent } from "../modules/orders/hooks.ts";
import { type Orders, systemViewer } from "../modules/orders/orders.ts";
import type { Payments } from "../modules/payments/payments.ts";
import type { Address } from "../modules/shipping/schema.ts";
import type { ShipmentDocument } from "../modules/shipping/shipping.ts";
import { PAYMENT_TOPICS } from "./payment-callback.ts";
import { STEP } from "./saga-participants.ts";

// External payment in the split deployment. The orders service tells the payments service what an
// order is due (and when it can no longer be paid); the payments service answers the provider from
// that and reports captures. A capture becomes PAID through a one-step saga that first creates the
// shipment document, so no order is ever PAID without a waybill.

export const CAPTURE_ORDER_SAGA = "capture-order";

interface CaptureContext {
  orderId: string;
  externalTxnId: string;
  address: Address;
}

interface PaymentEvent {
  orderId: string;
  externalTxnId: string;
  amount: number;
  currency: string;
}

export type ReleaseHolds = (tx: Tx, ids: { tenantId: string; orderId: string }) => Promise<void>;

/**
 * What cancelling a CREATED order gives back, in the saga strategy: the cancel commands of its
 * placement saga's steps (their barrier makes them safe whatever ran), and the payment intent closed.
 */
export function sagaReleaseHolds(outbox: Outbox): ReleaseHolds {
  return async (tx, { tenantId, orderId }) => {
    const cancel = (service: string, step: string) =>
      outbox.enqueue(tx, { tenantId, topic: `${service}.${step}`, payload: { sagaId: orderId, step, op: "cancel", orderId } });
    await cancel("coupons", STEP.redeemCoupon);
    await cancel("inventory", STEP.reserveStock);
    await outbox.enqueue(tx, { tenantId, topic: PAYMENT_TOPICS.closed, payload: { orderId } });
  };
}

/** The orders service's part: the capture saga and the consumers of the payments service's events. */
export function ordersPaymentSubscriptions(deps: { database: Database; orders: Orders; runner: SagaRunner; outbox: Outbox }): Subscription[] {
  const { database, orders, runner, outbox } = deps;

  runner.register<CaptureContext>({
    type: CAPTURE_ORDER_SAGA,
    steps: [
      {
        id: STEP.createShipment,
        run: (c) => ({ topic: `shipping.${STEP.createShipment}`, payload: { orderId: c.orderId, address: c.address } }),
        compensate: (c) => ({ topic: `shipping.${STEP.createShipment}`, payload: { orderId: c.orderId } }),
      },
    ],
    async onCompleted(tx, saga, afterCommit) {
      const order = await orders.lockOrder(tx, systemViewer(saga.tenantId), saga.context.orderId);
      if (order?.status !== "CREATED") return;
      const shipment = saga.results[STEP.createShipment] as ShipmentDocument;
      const moves: TransitionEvent[] = [];
      const moved = await orders.transition(tx, moves, {
        order,
        to: "PAID",
        reason: "payment_callback",
        patch: { paymentStatus: "captured", paymentDueAt: null, shipmentWaybill: shipment.waybill, shipmentStatus: shipment.status },
      });
      if (!moved.ok) throw new Error(`paying order ${order.id} failed: ${moved.reason}`);
      // The placement's reservation becomes a sale (TCC confirm of its reserve-stock step).
      await outbox.enqueue(tx, {
        tenantId: saga.tenantId,
        topic: `inventory.${STEP.reserveStock}`,
        payload: { sagaId: order.id, step: STEP.reserveStock, op: "confirm", orderId: order.id },
      });
      afterCommit(() => orders.runAfterHooks(moves));
    },
    // The shipping service did not answer within its retries: the money stays captured and the order
    // CREATED; the saga's dead letter and the order's payment status show it to an operator.
    async onCompensated() {},
  });

  return [
    {
      consumer: "orders-payments",
      topics: [PAYMENT_TOPICS.captured, PAYMENT_TOPICS.refundPending],
      handler: inboxHandler(database, "orders-payments", async (tx, message) => {
        const event = message.payload as PaymentEvent;
        const order = await orders.lockOrder(tx, systemViewer(message.tenantId), event.orderId);
        if (!order) return;
        if (message.topic === PAYMENT_TOPICS.captured && order.status === "CREATED" && order.paymentStatus === "pending") {
          // Captured: the order can no longer be cancelled; it becomes PAID once its document exists.
          await orders.updateOrder(tx, order, { paymentStatus: "captured", externalTxnId: event.externalTxnId, paymentDueAt: null });
          const context: CaptureContext = { orderId: order.id, externalTxnId: event.externalTxnId, address: order.shippingAddress };
          await runner.start(tx, CAPTURE_ORDER_SAGA, { id: `cap_${order.id}`, tenantId: message.tenantId, context });
          return;
        }
        if (order.status !== "CANCELLED") return; // a second capture of a paid order: kept by payments
        await orders.updateOrder(tx, order, { paymentStatus: "refund_pending", externalTxnId: event.externalTxnId });
        if (message.topic === PAYMENT_TOPICS.captured) {
          await outbox.enqueue(tx, { tenantId: message.tenantId, topic: PAYMENT_TOPICS.refundNeeded, payload: event });
        }
      }),
    },
  ];
}

/** The payments service's part: keep the intents the orders service announces. */
export function paymentsPaymentSubscriptions(deps: { database: Database; payments: Payments }): Subscription[] {
  const { database, payments } = deps;
  return [
    {
      consumer: "payments-intents",
      topics: [PAYMENT_TOPICS.expected, PAYMENT_TOPICS.closed, PAYMENT_TOPICS.refundNeeded],
      handler: inboxHandler(database, "payments-intents", async (tx, message) => {
        const tenantId = message.tenantId;
        if (message.topic === PAYMENT_TOPICS.expected) {
          const { orderId, amount, currency } = message.payload as PaymentEvent;
          await payments.expectPayment(tx, { tenantId, orderId, amount, currency });
        } else if (message.topic === PAYMENT_TOPICS.closed) {
          await payments.settleIntent(tx, { tenantId, orderId: (message.payload as { orderId: string }).orderId, status: "closed" });
        } else {
          const { orderId, externalTxnId } = message.payload as PaymentEvent;
          await payments.markRefundPending(tx, { tenantId, orderId, externalTxnId });
        }
      }),
    },
  ];
}
