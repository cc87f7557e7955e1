import type { Database } from "../db/client.ts";
import type { Clock } from "../kit/clock.ts";
import type { Orders } from "../modules/orders/orders.ts";
import type { Effects } from "./executors.ts";
import { cancelCreated } from "./order-moves.ts";

/**
 * Cancels CREATED orders not paid by their due time (PAYMENT_TIMEOUT), giving back stock and coupon.
 * Due orders are claimed with FOR UPDATE SKIP LOCKED, so any number of processes may sweep at once
 * and each order is cancelled once.
 */
export function createPaymentTimeouts(deps: { database: Database; orders: Orders; effects: Effects; clock: Clock }) {
  const { database, orders, clock } = deps;
  /** Cancels one overdue order in its own short transaction; false when none is due. */
  const cancelOne = () =>
    orders.withSystemMoves(database, async (tx, moves) => {
      const [order] = await orders.lockOverdue(tx, clock.now(), 1);
      if (!order) return false;
      const moved = await cancelCreated(deps, tx, moves, order, "payment-timeout");
      if (!moved.ok) throw new Error(`cancelling overdue order ${order.id} failed: ${moved.reason}`);
      return true;
    });

  return {
    /**
     * Cancels up to `batch` overdue orders. One transaction per order: a batch in one transaction
     * would take SKU locks of several orders out of sorted order and could deadlock with placements.
     */
    async sweep(batch = 100): Promise<number> {
      let cancelled = 0;
      while (cancelled < batch && (await cancelOne())) cancelled++;
      return cancelled;
    },
  };
}

export type PaymentTimeouts = ReturnType<typeof createPaymentTimeouts>;
