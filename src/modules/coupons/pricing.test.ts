import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { discountFor, subtotalOf } from "./pricing.ts";

describe("pricing", () => {
  it("takes an amount discount off, never more than the subtotal", () => {
    expect(discountFor(3900, { type: "amount", value: 500 })).toBe(500);
    expect(discountFor(300, { type: "amount", value: 500 })).toBe(300);
  });

  it("rounds a percent discount down to the minor unit", () => {
    expect(discountFor(3900, { type: "percent", value: 10 })).toBe(390);
    expect(discountFor(999, { type: "percent", value: 15 })).toBe(149);
    expect(discountFor(1234, { type: "percent", value: 100 })).toBe(1234);
  });

  it("keeps every discount within 0..subtotal, exact for large amounts", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
        fc.oneof(
          fc.record({ type: fc.constant("amount" as const), value: fc.integer({ min: 1, max: 1e12 }) }),
          fc.record({ type: fc.constant("percent" as const), value: fc.integer({ min: 1, max: 100 }) }),
        ),
        (subtotal, discount) => {
          const off = discountFor(subtotal, discount);
          return Number.isSafeInteger(off) && off >= 0 && off <= subtotal;
        },
      ),
    );
  });

  it("sums line totals, and refuses a sum past exact integers", () => {
    const line = (unitPrice: number, quantity: number) => ({ sku: "S", name: "n", unitPrice, quantity, lineTotal: unitPrice * quantity });
    expect(subtotalOf([line(3900, 2), line(100, 3)])).toBe(8100);
    expect(subtotalOf(Array.from({ length: 50 }, () => line(1e12, 999)))).toBeUndefined();
  });
});
