import type { Database, Tx } from "../db/client.ts";
import { AppError } from "../kit/errors.ts";
import type { TransitionEvent } from "../modules/orders/hooks.ts";
import type { OrderRow, Orders, OrderView, Viewer } from "../modules/orders/orders.ts";
import type { Effects } from "./executors.ts";
import { HELD_UNTIL_PAID } from "./placement.ts";
import { updateShipment } from "./steps.ts";

/**
 * CREATED → CANCELLED, by its owner, an admin or the payment timeout: the payment is voided, and the
 * stock and coupon the placement holds until payment are given back (effects: at once in the
 * all-in-one, by commands in the split deployment). A captured payment cannot be voided, so an order
 * whose money arrived can no longer be cancelled.
 */
export async function cancelCreated(
  deps: { orders: Orders; effects: Effects },
  tx: Tx,
  moves: TransitionEvent[],
  order: OrderRow,
  by: "owner" | "admin" | "payment-timeout",
  expectedVersion?: number,
) {
  const reason = ({ owner: "CUSTOMER_CANCELLED", admin: "ADMIN_CANCELLED", "payment-timeout": "PAYMENT_TIMEOUT" } as const)[by];
  const moved = await deps.orders.move(tx, moves, {
    order,
    by,
    to: "CANCELLED",
    payment: "voided",
    reason,
    expectedVersion,
    patch: { cancelReason: reason, paymentDueAt: null },
  });
  if (moved.ok) await deps.effects.cancel(tx, order.tenantId, order.id, HELD_UNTIL_PAID);
  return moved;
}

/** The moves a person asks for after placement: cancel, ship, complete. */
export function createOrderMoves(deps: { database: Database; orders: Orders; effects: Effects }) {
  const { database, orders, effects } = deps;

  /** Locks the viewer's order, makes the move and its effects in one transaction, answers the order as it is now. */
  function apply(viewer: Viewer, orderId: string, move: (tx: Tx, moves: TransitionEvent[], order: OrderRow) => ReturnType<Orders["move"]>): Promise<OrderView> {
    return orders.withMoves(database, viewer.tenantId, async (tx, moves) => {
      const order = await orders.lockOrder(tx, viewer, orderId);
      if (!order) throw new AppError("ORDER_NOT_FOUND", `no order ${orderId}`);
      const moved = await move(tx, moves, order);
      if (!moved.ok) throw new AppError(moved.reason, moved.detail ?? moved.reason);
      return (await orders.getOrder(tx, viewer, orderId)) as OrderView;
    });
  }

  const byViewer = (viewer: Viewer): "admin" | "owner" => (viewer.admin ? "admin" : "owner");

  return {
    /** CREATED → CANCELLED by its owner or an admin. A PENDING order is the placement's to settle: 409. */
    cancel(viewer: Viewer, orderId: string, expectedVersion?: number) {
      return apply(viewer, orderId, (tx, moves, order) => cancelCreated(deps, tx, moves, order, byViewer(viewer), expectedVersion));
    },

    /** PAID → SHIPPED by an admin; the shipping service records the carrier on the shipment document. */
    ship(viewer: Viewer, orderId: string, details: { carrier: string; trackingNumber: string | null }, expectedVersion?: number) {
      return apply(viewer, orderId, async (tx, moves, order) => {
        const moved = await orders.move(tx, moves, {
          order,
          by: "admin",
          to: "SHIPPED",
          reason: "shipped",
          expectedVersion,
          patch: { shipmentCarrier: details.carrier, shipmentTrackingNumber: details.trackingNumber, shipmentStatus: "shipped" },
        });
        if (moved.ok) await effects.send(tx, order.tenantId, updateShipment, { orderId, status: "shipped", ...details });
        return moved;
      });
    },

    /** SHIPPED → COMPLETED by its owner or an admin; the shipment document is marked delivered. */
    complete(viewer: Viewer, orderId: string, expectedVersion?: number) {
      return apply(viewer, orderId, async (tx, moves, order) => {
        const moved = await orders.move(tx, moves, { order, by: byViewer(viewer), to: "COMPLETED", reason: "completed", expectedVersion, patch: { shipmentStatus: "delivered" } });
        if (moved.ok) await effects.send(tx, order.tenantId, updateShipment, { orderId, status: "delivered" });
        return moved;
      });
    },
  };
}

export type OrderMoves = ReturnType<typeof createOrderMoves>;
