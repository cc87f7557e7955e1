import { describe, expect, it } from "vitest";
import { manualClock } from "../../kit/clock.ts";
import { newId } from "../../kit/ids.ts";
import { createOutbox } from "../../kit/outbox.ts";
import { createTransitionHooks } from "./hooks.ts";
import { createOrders, type NewOrder } from "./orders.ts";

describe("recording a new order", () => {
  const clock = manualClock();
  const orders = createOrders({ hooks: createTransitionHooks(() => {}), clock, outbox: createOutbox({ clock, newId }) });
  const draft = (status: NewOrder["status"], path: NewOrder["path"]): NewOrder => ({
    id: "ord_1",
    tenantId: "t",
    userId: "u",
    status,
    lines: [{ sku: "A", name: "A", quantity: 1, unitPrice: 100, lineTotal: 100 }],
    subtotal: 100,
    discount: 0,
    total: 100,
    currency: "CNY",
    couponCode: null,
    paymentMethod: "balance",
    paymentStatus: "pending",
    paymentDueAt: null,
    shippingAddress: { name: "A", phone: "1", line1: "1", city: "C", country: "CN" },
    shipment: null,
    path,
  });

  it("takes the placement's moves of the state machine's table, and no others", async () => {
    expect((await orders.prepareOrder(draft("PENDING", [{ to: "PENDING", reason: "placed" }]))).ok).toBe(true);
    expect((await orders.prepareOrder(draft("PAID", [{ to: "PENDING", reason: "placed" }, { to: "PAID", reason: "placement" }]))).ok).toBe(true);
    // A placed order is never recorded past what placement may do, nor without starting PENDING.
    await expect(orders.prepareOrder(draft("SHIPPED", [{ to: "PENDING", reason: "placed" }, { to: "SHIPPED", reason: "placement" }]))).rejects.toThrow(/PENDING to SHIPPED/);
    await expect(orders.prepareOrder(draft("PAID", [{ to: "PAID", reason: "placement" }]))).rejects.toThrow(/starts PENDING/);
    await expect(orders.prepareOrder(draft("PAID", [{ to: "PENDING", reason: "placed" }]))).rejects.toThrow(/not at its status PAID/);
  });
});
