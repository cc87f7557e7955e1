export type Discount = { type: "amount"; value: number } | { type: "percent"; value: number };

/** What a discount takes off a subtotal: never more than the subtotal, percent rounded down. */
export function discountFor(subtotal: number, discount: Discount): number {
  if (discount.type === "amount") return Math.min(discount.value, subtotal);
  return Number((BigInt(subtotal) * BigInt(discount.value)) / 100n);
}

export interface PricedLine {
  sku: string;
  name: string;
  quantity: number;
  unitPrice: number;
  lineTotal: number;
}

/** Sum of line totals; undefined when it leaves the range of exact integers. */
export function subtotalOf(lines: PricedLine[]): number | undefined {
  const total = lines.reduce((sum, l) => sum + BigInt(l.unitPrice) * BigInt(l.quantity), 0n);
  return total <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(total) : undefined;
}
