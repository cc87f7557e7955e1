import type { OrderStatus, PaymentStatus } from "./schema.ts";

/** Who moves an order: the flow or person on whose behalf a move is made. */
export type OrderActor = "placement" | "payment" | "owner" | "admin" | "payment-timeout";

/** Every allowed move of an order and who may make it (api-contract.md §4, state machine). Anything else is refused. */
export const ORDER_MOVES: readonly { from: OrderStatus; to: OrderStatus; by: readonly OrderActor[] }[] = [
  { from: "PENDING", to: "CREATED", by: ["placement"] },
  { from: "PENDING", to: "PAID", by: ["placement"] },
  { from: "PENDING", to: "CANCELLED", by: ["placement"] },
  { from: "CREATED", to: "PAID", by: ["payment"] },
  { from: "CREATED", to: "CANCELLED", by: ["owner", "admin", "payment-timeout"] },
  { from: "PAID", to: "SHIPPED", by: ["admin"] },
  { from: "SHIPPED", to: "COMPLETED", by: ["owner", "admin"] },
];

export function canMove(from: OrderStatus, to: OrderStatus, by: OrderActor): boolean {
  return ORDER_MOVES.some((m) => m.from === from && m.to === to && m.by.includes(by));
}

/**
 * The order's payment has its own moves. A captured payment is never voided: once the provider took
 * the money the order is on its way to PAID, so it can no longer be cancelled. Money that arrives for
 * an order that can no longer be paid is kept to be refunded.
 */
export const PAYMENT_MOVES: Readonly<Record<PaymentStatus, readonly PaymentStatus[]>> = {
  pending: ["captured", "voided"],
  captured: [],
  voided: ["refund_pending"],
  refund_pending: ["refunded"],
  refunded: [],
};

export function canMovePayment(from: PaymentStatus, to: PaymentStatus): boolean {
  return PAYMENT_MOVES[from].includes(to);
}
