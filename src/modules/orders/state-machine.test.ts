import { describe, expect, it } from "vitest";
import { ORDER_STATUSES, type OrderStatus, type PaymentStatus } from "./schema.ts";
import { canMove, canMovePayment, type OrderActor } from "./state-machine.ts";

const ACTORS: OrderActor[] = ["placement", "payment", "owner", "admin", "payment-timeout"];
const PAYMENT_STATUSES: PaymentStatus[] = ["pending", "captured", "voided", "refund_pending", "refunded"];

describe("order state machine", () => {
  // The contract's table: from, to, by.
  const allowed: [OrderStatus, OrderStatus, OrderActor[]][] = [
    ["PENDING", "CREATED", ["placement"]],
    ["PENDING", "PAID", ["placement"]],
    ["PENDING", "CANCELLED", ["placement"]],
    ["CREATED", "PAID", ["payment"]],
    ["CREATED", "CANCELLED", ["owner", "admin", "payment-timeout"]],
    ["PAID", "SHIPPED", ["admin"]],
    ["SHIPPED", "COMPLETED", ["owner", "admin"]],
  ];

  it("allows exactly the contract's moves, each only by whom the contract names", () => {
    for (const from of ORDER_STATUSES) {
      for (const to of ORDER_STATUSES) {
        for (const by of ACTORS) {
          const expected = allowed.some(([f, t, who]) => f === from && t === to && who.includes(by));
          expect(canMove(from, to, by), `${from} -> ${to} by ${by}`).toBe(expected);
        }
      }
    }
  });

  it("lets nobody but the placement take an order out of PENDING", () => {
    for (const by of ACTORS.filter((a) => a !== "placement")) {
      for (const to of ORDER_STATUSES) expect(canMove("PENDING", to, by)).toBe(false);
    }
  });

  it("has no way out of COMPLETED or CANCELLED", () => {
    for (const to of ORDER_STATUSES) {
      for (const by of ACTORS) {
        expect(canMove("COMPLETED", to, by)).toBe(false);
        expect(canMove("CANCELLED", to, by)).toBe(false);
      }
    }
  });

  it("never voids a captured payment and only refunds money that could not pay the order", () => {
    const moves = PAYMENT_STATUSES.flatMap((from) => PAYMENT_STATUSES.filter((to) => canMovePayment(from, to)).map((to) => `${from}->${to}`));
    expect(moves.sort()).toEqual(["pending->captured", "pending->voided", "refund_pending->refunded", "voided->refund_pending"]);
  });
});
