import type { Tx } from "../db/client.ts";
import { type Discount, type PricedLine, subtotalOf } from "../modules/coupons/pricing.ts";
import { bySku, type Move, type NewOrder, type OrderPatch, type OrderView } from "../modules/orders/orders.ts";
import { CANCEL_REASONS, type CancelReason, type OrderStatus, type PaymentMethod, type PaymentStatus } from "../modules/orders/schema.ts";
import type { Address } from "../modules/shipping/schema.ts";
import type { Flow, Results } from "./executors.ts";
import { createShipment, debitWallet, redeemCoupon, reserveStock } from "./steps.ts";

export type PlacementRefusal = "OUT_OF_STOCK" | "INSUFFICIENT_FUNDS" | "COUPON_UNAVAILABLE" | "TRANSITION_VETOED" | "PLACEMENT_FAILED";

export interface PlaceOrderInput {
  tenantId: string;
  userId: string;
  items: { sku: string; quantity: number }[];
  couponCode?: string | undefined;
  paymentMethod: PaymentMethod;
  shippingAddress: Address;
}

export type PlacementResult =
  | { kind: "placed"; order: OrderView }
  | { kind: "pending"; order: OrderView }
  | { kind: "refused"; reason: PlacementRefusal; detail: string; orderId?: string }
  | { kind: "invalid"; code: "UNKNOWN_PRODUCT" | "AMOUNT_TOO_LARGE"; detail: string };

/** Called inside the placement's transaction with its result, e.g. to store the idempotent answer with it. */
export type RecordResult = (tx: Tx, result: Extract<PlacementResult, { kind: "placed" | "pending" }>) => Promise<void>;

export interface PlaceOptions {
  respondAsync: boolean;
  waitMs: number;
  record?: RecordResult;
}

/** How POST /orders places, whichever executor runs it. */
export interface Placement {
  place(input: PlaceOrderInput, options: PlaceOptions): Promise<PlacementResult>;
}

/** How long a request waits for its placement by default (`Prefer: wait=N` changes it). */
export const DEFAULT_WAIT_MS = 3_000;

/** Prices the requested items from a catalogue (name and price per SKU), lines sorted by SKU. */
export function priceItems(
  catalogue: Map<string, { name: string; price: number }>,
  items: { sku: string; quantity: number }[],
): { lines: PricedLine[]; subtotal: number } | Extract<PlacementResult, { kind: "invalid" }> {
  const unknown = items.map((i) => i.sku).filter((sku) => !catalogue.has(sku));
  if (unknown.length > 0) return { kind: "invalid", code: "UNKNOWN_PRODUCT", detail: `no product ${unknown.join(", ")}` };
  const lines = items
    .map((item) => {
      const { name, price: unitPrice } = catalogue.get(item.sku) as { name: string; price: number };
      return { sku: item.sku, name, quantity: item.quantity, unitPrice, lineTotal: unitPrice * item.quantity };
    })
    .sort(bySku);
  const subtotal = subtotalOf(lines);
  if (subtotal === undefined) return { kind: "invalid", code: "AMOUNT_TOO_LARGE", detail: "the order total is too large" };
  return { lines, subtotal };
}

/** What placing one order needs to know, in both executors. */
export interface PlacementContext {
  orderId: string;
  userId: string;
  lines: PricedLine[];
  subtotal: number;
  couponCode: string | null;
  paymentMethod: PaymentMethod;
  address: Address;
  /** ISO time the order was recorded: its payment is due a timeout after it. */
  createdAt: string;
  /**
   * The coupon's discount rule and the discount, when the order was priced before its steps run
   * (local executor): the debit need not wait for the redemption, which refuses a rule changed since.
   */
  priced?: { rule: Discount; discount: number } | undefined;
}

const discountOf = (c: PlacementContext, results: Results) =>
  c.priced?.discount ?? (results[redeemCoupon.id] as { discount: number } | undefined)?.discount ?? 0;
const paidFromWallet = (c: PlacementContext) => c.paymentMethod === "balance";

/**
 * Placement, defined once. The local executor runs these steps in this order in one transaction: the
 * hot stock rows are locked last, so they are held only until the commit. The saga executor sends the
 * coupon, shipment and stock steps at once and the wallet debit once the discount is known.
 */
export const PLACEMENT: Flow<PlacementContext> = {
  type: "place-order",
  givesUp: true,
  steps: [
    {
      step: redeemCoupon,
      command: (c) =>
        c.couponCode ? { orderId: c.orderId, code: c.couponCode, userId: c.userId, subtotal: c.subtotal, ...(c.priced ? { expected: c.priced.rule } : {}) } : undefined,
    },
    {
      step: debitWallet,
      needs: [redeemCoupon.id],
      command: (c, results) => (paidFromWallet(c) ? { orderId: c.orderId, userId: c.userId, amount: c.subtotal - discountOf(c, results) } : undefined),
    },
    {
      step: createShipment,
      command: (c) => (paidFromWallet(c) ? { orderId: c.orderId, address: c.address } : undefined),
    },
    {
      step: reserveStock,
      hot: true,
      command: (c) => ({ orderId: c.orderId, lines: c.lines.map(({ sku, quantity }) => ({ sku, quantity })) }),
    },
  ],
};

/** The steps whose holds a CREATED order gives back when it is cancelled (its wallet was not debited). */
export const HELD_UNTIL_PAID = [redeemCoupon, reserveStock] as const;

/** What a placed order looks like, whichever executor placed it. */
export interface Settlement {
  status: Extract<OrderStatus, "PAID" | "CREATED">;
  paymentStatus: PaymentStatus;
  patch: Required<Pick<OrderPatch, "discount" | "total" | "paymentDueAt" | "shipmentWaybill" | "shipmentStatus">>;
}

export function settlementOf(context: PlacementContext, results: Results, paymentTimeoutMs: number): Settlement {
  const discount = discountOf(context, results);
  const paid = paidFromWallet(context);
  const shipment = results[createShipment.id] as { waybill: string; status: "pending" } | undefined;
  return {
    status: paid ? "PAID" : "CREATED",
    paymentStatus: paid ? "captured" : "pending",
    patch: {
      discount,
      total: context.subtotal - discount,
      paymentDueAt: paid ? null : new Date(Date.parse(context.createdAt) + paymentTimeoutMs),
      shipmentWaybill: shipment?.waybill ?? null,
      shipmentStatus: shipment?.status ?? null,
    },
  };
}

/** The move that ends a placement that could not be made: CANCELLED, with the refusal as its reason. */
export function refusedMove(reason: string): Pick<Move, "to" | "payment" | "reason" | "patch"> {
  const cancelReason = (CANCEL_REASONS as readonly string[]).includes(reason) ? (reason as CancelReason) : null;
  return { to: "CANCELLED", payment: "voided", reason, patch: { cancelReason } };
}

/** The placement context of a new order. */
export function placementContext(input: PlaceOrderInput, priced: { lines: PricedLine[]; subtotal: number }, orderId: string, createdAt: Date): PlacementContext {
  return {
    orderId,
    userId: input.userId,
    lines: priced.lines,
    subtotal: priced.subtotal,
    couponCode: input.couponCode ?? null,
    paymentMethod: input.paymentMethod,
    address: input.shippingAddress,
    createdAt: createdAt.toISOString(),
  };
}

/** A new order as recorded: PENDING (nothing taken yet, not yet discounted), or placed at once. */
export function newOrder(tenantId: string, context: PlacementContext, currency: string, settlement?: Settlement): NewOrder {
  return {
    id: context.orderId,
    tenantId,
    userId: context.userId,
    lines: context.lines,
    subtotal: context.subtotal,
    couponCode: context.couponCode,
    paymentMethod: context.paymentMethod,
    shippingAddress: context.address,
    currency,
    status: settlement?.status ?? "PENDING",
    discount: settlement?.patch.discount ?? 0,
    total: settlement?.patch.total ?? context.subtotal,
    paymentStatus: settlement?.paymentStatus ?? "pending",
    paymentDueAt: settlement?.patch.paymentDueAt ?? null,
    shipment: settlement?.patch.shipmentWaybill ? { waybill: settlement.patch.shipmentWaybill, status: settlement.patch.shipmentStatus ?? "pending" } : null,
    path: settlement ? [{ to: "PENDING", reason: "placed" }, { to: settlement.status, reason: "placement" }] : [{ to: "PENDING", reason: "placed" }],
  };
}
