import { describe, expect, it } from "vitest";
import { ORDER_STATUSES, type OrderStatus } from "./schema.ts";
import { canTransition, ORDER_TRANSITIONS } from "./state-machine.ts";

describe("order state machine", () => {
  const allowed: [OrderStatus, OrderStatus][] = [
    ["PENDING", "CREATED"],
    ["PENDING", "PAID"],
    ["PENDING", "CANCELLED"],
    ["CREATED", "PAID"],
    ["CREATED", "CANCELLED"],
    ["PAID", "SHIPPED"],
    ["SHIPPED", "COMPLETED"],
  ];

  it("allows exactly the contract's moves and refuses every other pair", () => {
    for (const from of ORDER_STATUSES) {
      for (const to of ORDER_STATUSES) {
        const expected = allowed.some(([f, t]) => f === from && t === to);
        expect(canTransition(from, to), `${from} -> ${to}`).toBe(expected);
      }
    }
  });

  it("has no way out of COMPLETED or CANCELLED", () => {
    expect(ORDER_TRANSITIONS.COMPLETED).toEqual([]);
    expect(ORDER_TRANSITIONS.CANCELLED).toEqual([]);
  });
});
