import type { Tx } from "../db/client.ts";
import { ok, type Outcome, refuse } from "../kit/outcome.ts";
import type { SagaRunner } from "../kit/saga.ts";
import type { TransitionEvent } from "../modules/orders/hooks.ts";
import { type OrderRow, type Orders, systemViewer } from "../modules/orders/orders.ts";
import type { Address } from "../modules/shipping/schema.ts";
import { type Effects, type Flow, type Results, sagaOf } from "./executors.ts";
import { createShipment, reserveStock } from "./steps.ts";

/** What paying an external-payment order needs: its shipment document comes first, so no order is PAID without a waybill. */
export interface CaptureContext {
  orderId: string;
  externalTxnId: string;
  address: Address;
}

/**
 * Capture, defined once: the provider took the money, so the order must end PAID. Its one step can be
 * delayed (the shipping service is down) but never refused, so the saga waits rather than gives up.
 */
export const CAPTURE: Flow<CaptureContext> = {
  type: "capture-order",
  givesUp: false,
  steps: [{ step: createShipment, command: (c) => ({ orderId: c.orderId, address: c.address }) }],
};

export const captureContext = (order: OrderRow, externalTxnId: string): CaptureContext => ({ orderId: order.id, externalTxnId, address: order.shippingAddress });

/** The order once its money was captured and its shipment document exists: PAID, its reservation a sale. */
export async function payOrder(
  deps: { orders: Orders; effects: Effects },
  tx: Tx,
  moves: TransitionEvent[],
  order: OrderRow,
  context: CaptureContext,
  results: Results,
): Promise<Outcome<OrderRow, string>> {
  const shipment = results[createShipment.id] as { waybill: string; status: "pending" };
  const moved = await deps.orders.move(tx, moves, {
    order,
    by: "payment",
    to: "PAID",
    payment: "captured",
    reason: "payment_callback",
    patch: { externalTxnId: context.externalTxnId, paymentDueAt: null, shipmentWaybill: shipment.waybill, shipmentStatus: shipment.status },
  });
  if (!moved.ok) return refuse(moved.reason, moved.detail);
  await deps.effects.confirm(tx, order.tenantId, order.id, reserveStock);
  return ok(moved.value);
}

/** The capture saga (split deployment), run by the orders service once the payments service reports a capture. */
export function registerCaptureSaga(deps: { runner: SagaRunner; orders: Orders; effects: Effects; stepDeadlineMs: number }): void {
  const { orders } = deps;
  deps.runner.register(
    sagaOf(CAPTURE, deps.stepDeadlineMs, {
      async onCompleted(tx, saga, afterCommit) {
        const order = await orders.lockOrder(tx, systemViewer(saga.tenantId), saga.context.orderId);
        // Captured orders cannot be cancelled, so this finds the order CREATED; a repeat finds it PAID.
        if (order?.status !== "CREATED") return ok(undefined);
        const moves: TransitionEvent[] = [];
        const paid = await payOrder(deps, tx, moves, order, saga.context, saga.results);
        if (!paid.ok) throw new Error(`paying order ${order.id} failed: ${paid.reason}`);
        afterCommit(() => orders.runAfterHooks(moves));
        return ok(undefined);
      },
      // Unreachable: the step cannot be refused and the saga never gives up on it.
      async onCompensated(_tx, saga, reason) {
        throw new Error(`capture of order ${saga.context.orderId} was compensated (${reason}); a capture must end PAID`);
      },
    }),
  );
}
