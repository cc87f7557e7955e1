import type { OrderStatus } from "./schema.ts";

/** Every allowed move of an order (api-contract.md §4, state machine). Anything else is refused. */
export const ORDER_TRANSITIONS: Readonly<Record<OrderStatus, readonly OrderStatus[]>> = {
  PENDING: ["CREATED", "PAID", "CANCELLED"],
  CREATED: ["PAID", "CANCELLED"],
  PAID: ["SHIPPED"],
  SHIPPED: ["COMPLETED"],
  COMPLETED: [],
  CANCELLED: [],
};

export function canTransition(from: OrderStatus, to: OrderStatus): boolean {
  return ORDER_TRANSITIONS[from].includes(to);
}
