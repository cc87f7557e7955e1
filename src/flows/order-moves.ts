import type { Database, Tx } from "../db/client.ts";
import { AppError } from "../kit/errors.ts";
import type { OrderRow, Orders, OrderView, Viewer } from "../modules/orders/orders.ts";
import type { OrderStatus } from "../modules/orders/schema.ts";
import type { Shipping } from "../modules/shipping/shipping.ts";
import type { ReleaseHolds } from "./saga-payments.ts";

export interface MoveDeps {
  database: Database;
  orders: Orders;
  shipping: Shipping;
  /** Gives back a CREATED order's stock and coupon (local: in the transaction; saga: by commands). */
  releaseHolds: ReleaseHolds;
}

type Patch = Parameters<Orders["transition"]>[2]["patch"];

interface Move {
  to: OrderStatus;
  reason: string;
  expectedVersion: number | undefined;
  patch?: Patch;
  /** A reason to refuse the move for this order beyond the transition table. */
  guard?: (order: OrderRow) => string | undefined;
  /** What else changes with the move, in its transaction, once the move was allowed. */
  effects: (tx: Tx, ids: { tenantId: string; orderId: string }) => Promise<unknown>;
}

/** The moves a person asks for after placement: cancel, ship, complete. */
export function createOrderMoves(deps: MoveDeps) {
  const { database, orders, shipping, releaseHolds } = deps;

  function apply(viewer: Viewer, orderId: string, move: Move): Promise<OrderView> {
    return orders.withMoves(database, viewer.tenantId, async (tx, moves) => {
      const order = await orders.lockOrder(tx, viewer, orderId);
      if (!order) throw new AppError("ORDER_NOT_FOUND", `no order ${orderId}`);
      const refusal = move.guard?.(order);
      if (refusal) throw new AppError("INVALID_TRANSITION", refusal);
      const moved = await orders.transition(tx, moves, { order, ...move });
      if (!moved.ok) throw new AppError(moved.reason, moved.detail ?? moved.reason);
      await move.effects(tx, { tenantId: order.tenantId, orderId });
      return (await orders.getOrder(tx, viewer, orderId)) as OrderView;
    });
  }

  return {
    /** CREATED → CANCELLED by its owner or an admin: the coupon and the reserved stock come back. */
    cancel(viewer: Viewer, orderId: string, expectedVersion?: number) {
      const reason = viewer.admin ? "ADMIN_CANCELLED" : "CUSTOMER_CANCELLED";
      return apply(viewer, orderId, {
        to: "CANCELLED",
        reason,
        expectedVersion,
        patch: { cancelReason: reason, paymentStatus: "voided", paymentDueAt: null },
        // Split deployment: once the provider captured the money the order is on its way to PAID.
        guard: (order) => (order.paymentStatus === "captured" ? "the payment was captured; the order is being paid" : undefined),
        effects: releaseHolds,
      });
    },

    /** PAID → SHIPPED by an admin, with the carrier's tracking details on the shipment document. */
    ship(viewer: Viewer, orderId: string, details: { carrier: string; trackingNumber: string | null }, expectedVersion?: number) {
      return apply(viewer, orderId, {
        to: "SHIPPED",
        reason: "shipped",
        expectedVersion,
        patch: { shipmentCarrier: details.carrier, shipmentTrackingNumber: details.trackingNumber, shipmentStatus: "shipped" },
        effects: (tx, ids) => shipping.markShipped(tx, { ...ids, ...details }),
      });
    },

    /** SHIPPED → COMPLETED by its owner or an admin. */
    complete(viewer: Viewer, orderId: string, expectedVersion?: number) {
      return apply(viewer, orderId, {
        to: "COMPLETED",
        reason: "completed",
        expectedVersion,
        patch: { shipmentStatus: "delivered" },
        effects: (tx, ids) => shipping.markDelivered(tx, ids),
      });
    },
  };
}

export type OrderMoves = ReturnType<typeof createOrderMoves>;
