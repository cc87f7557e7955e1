import { z } from "zod";
import { PrintableId } from "../auth/tokens.ts";
import { ORDER_STATUSES } from "../modules/orders/schema.ts";

// Request and response shapes of API v1 (api-contract.md §2-4). These same schemas validate requests
// and generate /docs/json, so the docs cannot drift from what the server accepts.

export const Sku = z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, "must match ^[A-Za-z0-9._-]{1,64}$");
export const CouponCode = Sku;
export const UserId = PrintableId;
const Amount = z.number().int().min(1).max(1e12);
const Money = z.number().int().describe("integer minor units (fen, cents)");
const Currency = z.string().describe("ISO 4217");
const Timestamp = z.string().describe("ISO 8601 UTC");
// Human text (names, address lines, carriers) is one line of printable text: no C0 control or DEL.
const Text = (max: number) =>
  z
    .string()
    .trim()
    .min(1)
    .max(max)
    .regex(/^[^\x00-\x1f\x7f]*$/, "must not contain control characters");

// U+0000, which PostgreSQL refuses in text (22021) and jsonb (22P05), and a lone UTF-16 surrogate,
// which has no UTF-8 form (refused in jsonb, silently stored as U+FFFD in text). With the u flag a
// paired surrogate is one code point, so \p{Cs} matches only a lone one.
const UNSAFE_TEXT = /[\u0000\p{Cs}]/u;
const UNSAFE_TEXT_MESSAGE = "must not contain U+0000 (NUL) or a lone UTF-16 surrogate";

/** Adds an issue for each string, object key included, anywhere in a request part that holds unsafe text (the first few). */
function refuseUnsafeText(part: unknown, ctx: z.RefinementCtx): void {
  // Breadth first (the shallowest issues first), each path a link to its parent's, a few issues at
  // most: a 1 MiB body can nest deeper than the call stack allows, and a path copied per level or
  // per issue would take time quadratic in the depth.
  type Path = { key: string | number; parent: Path } | undefined;
  const pathOf = (at: Path) => {
    const path: (string | number)[] = [];
    for (let link = at; link; link = link.parent) path.push(link.key);
    return path.reverse();
  };
  let issues = 0;
  const refuse = (at: Path, message: string, input: string) => {
    ctx.addIssue({ code: "custom", path: pathOf(at), message, input });
    issues++;
  };
  const queue: [value: unknown, at: Path][] = [[part, undefined]];
  for (let next = 0; next < queue.length && issues < 10; next++) {
    const [value, at] = queue[next] as [unknown, Path];
    if (typeof value === "string") {
      if (UNSAFE_TEXT.test(value)) refuse(at, UNSAFE_TEXT_MESSAGE, value);
    } else if (Array.isArray(value)) {
      value.forEach((item, index) => queue.push([item, { key: index, parent: at }]));
    } else if (value !== null && typeof value === "object") {
      for (const [key, item] of Object.entries(value)) {
        if (UNSAFE_TEXT.test(key)) refuse({ key, parent: at }, `its name ${UNSAFE_TEXT_MESSAGE}`, key);
        queue.push([item, { key, parent: at }]);
      }
    }
  }
}

/**
 * What every request part (params, querystring, headers, body) is validated with: no unsafe text
 * anywhere, then the route's own schema. Applied once, by the validator compiler (app.ts), so no
 * route can forget it and it runs after a route's own preValidation (the callback's HMAC).
 */
export const withSafeText = <T extends z.ZodType>(schema: T) => z.unknown().superRefine(refuseUnsafeText).pipe(schema);

export const ListQuery = z.strictObject({
  limit: z.coerce.number().int().min(1).max(100).default(20),
  cursor: z.string().max(512).optional(),
});

const page = <T extends z.ZodType>(item: T) => z.object({ data: z.array(item), nextCursor: z.string().nullable() });

export const Problem = z
  .object({
    type: z.string(),
    title: z.string(),
    status: z.number().int(),
    detail: z.string(),
    code: z.string().describe("stable UPPER_SNAKE identifier; branch on this"),
    traceId: z.string(),
    errors: z.array(z.object({ path: z.string(), message: z.string() })).optional(),
    orderId: z.string().optional(),
  })
  .meta({
    id: "Problem",
    examples: [
      {
        type: "urn:orderly:problem:out-of-stock",
        title: "Out of stock",
        status: 409,
        detail: "not enough stock of SKU-1",
        code: "OUT_OF_STOCK",
        traceId: "4bf92f3577b34da6a3ce929d0e0e4736",
      },
    ],
  });

// Products
export const SkuParams = z.strictObject({ sku: Sku });
export const PutProductBody = z.strictObject({
  name: Text(200),
  price: Amount,
  stock: z.number().int().min(0).max(1e12).optional().describe("initial on-hand count; only when creating"),
});
export const StockAdjustmentBody = z.strictObject({
  delta: z
    .number()
    .int()
    .min(-1e12)
    .max(1e12)
    .refine((d) => d !== 0, "must not be 0"),
});
export const Product = z
  .object({ sku: z.string(), name: z.string(), price: Money, currency: Currency, available: z.number().int() })
  .meta({ id: "Product" });
export const ProductPage = page(Product);

// Wallets
export const UserParams = z.strictObject({ userId: UserId });
export const CreditBody = z.strictObject({ amount: Amount });
export const Wallet = z.object({ userId: z.string(), balance: Money, currency: Currency }).meta({ id: "Wallet" });

// Coupons
export const CodeParams = z.strictObject({ code: CouponCode });
export const Discount = z.discriminatedUnion("type", [
  z.strictObject({ type: z.literal("amount"), value: Amount }),
  z.strictObject({ type: z.literal("percent"), value: z.number().int().min(1).max(100) }),
]);
export const PutCouponBody = z.strictObject({
  discount: Discount,
  userId: UserId.optional(),
  minSubtotal: Amount.optional(),
  expiresAt: z.iso.datetime({ offset: true }).optional(),
  maxRedemptions: z.number().int().min(1).max(1e9).optional(),
});
export const Coupon = z
  .object({
    code: z.string(),
    discount: z.object({ type: z.enum(["amount", "percent"]), value: z.number().int() }),
    userId: z.string().nullable(),
    minSubtotal: Money.nullable(),
    expiresAt: Timestamp.nullable(),
    maxRedemptions: z.number().int(),
    redemptions: z.number().int(),
  })
  .meta({ id: "Coupon" });

// Orders
const Address = z.strictObject({
  name: Text(200),
  phone: Text(200),
  line1: Text(200),
  line2: Text(200).optional(),
  city: Text(200),
  postalCode: Text(32).optional(),
  country: z.string().regex(/^[A-Z]{2}$/, "must be an ISO 3166-1 alpha-2 code such as CN"),
});

export const PlaceOrderBody = z.strictObject({
  items: z
    .array(z.strictObject({ sku: Sku, quantity: z.number().int().min(1).max(999) }))
    .min(1)
    .max(50)
    .refine((items) => new Set(items.map((i) => i.sku)).size === items.length, "SKUs must be distinct"),
  couponCode: CouponCode.optional(),
  payment: z.strictObject({ method: z.enum(["balance", "external"]) }),
  shippingAddress: Address,
}).meta({
  examples: [
    {
      items: [{ sku: "SKU-1", quantity: 2 }],
      couponCode: "WELCOME5",
      payment: { method: "balance" },
      shippingAddress: { name: "Alice", phone: "+86 10 5555 0100", line1: "1 Demo Road", city: "Beijing", postalCode: "100000", country: "CN" },
    },
  ],
});

export const OrderParams = z.strictObject({ id: z.string().min(1).max(64) });
export const ListOrdersQuery = ListQuery.extend({
  status: z.enum(ORDER_STATUSES).optional(),
  userId: UserId.optional().describe("admin only"),
  orderNumber: z.string().trim().min(1).max(64).optional().describe("exact, e.g. ORD-100001"),
});
export const ShipBody = z.strictObject({ carrier: Text(100), trackingNumber: Text(100).optional() });

export const Order = z
  .object({
    id: z.string(),
    orderNumber: z.string(),
    tenantId: z.string(),
    userId: z.string(),
    status: z.enum(ORDER_STATUSES),
    version: z.number().int(),
    items: z.array(z.object({ sku: z.string(), name: z.string(), quantity: z.number().int(), unitPrice: Money, lineTotal: Money })),
    subtotal: Money,
    discount: Money,
    total: Money,
    currency: Currency,
    couponCode: z.string().nullable(),
    payment: z.object({
      method: z.enum(["balance", "external"]),
      status: z.enum(["pending", "captured", "voided", "refund_pending", "refunded"]),
      externalTxnId: z.string().nullable(),
    }),
    shipment: z
      .object({
        waybill: z.string(),
        carrier: z.string().nullable(),
        trackingNumber: z.string().nullable(),
        status: z.enum(["pending", "shipped", "delivered", "cancelled"]),
      })
      .nullable(),
    shippingAddress: z.object({
      name: z.string(),
      phone: z.string(),
      line1: z.string(),
      line2: z.string().optional(),
      city: z.string(),
      postalCode: z.string().optional(),
      country: z.string(),
    }),
    cancelReason: z.string().nullable(),
    history: z.array(z.object({ from: z.string().nullable(), to: z.string(), at: Timestamp, reason: z.string().nullable() })),
    createdAt: Timestamp,
    updatedAt: Timestamp,
  })
  .meta({ id: "Order" });
export const OrderPage = page(Order);

export const IdempotencyHeaders = z.looseObject({
  "idempotency-key": z.string().optional().describe("1..255 printable characters; kept at least 24 h per (tenant, user)"),
});
/** POST /orders: Idempotency-Key, and how long to wait for the outcome. */
export const PlacementHeaders = IdempotencyHeaders.extend({
  prefer: z.string().optional().describe("respond-async and/or wait=N (seconds)"),
});

// Payment callback
export const PaymentCallbackBody = z.object({
  tenantId: PrintableId,
  orderId: z.string().min(1).max(64),
  externalTxnId: z.string().regex(/^[\x21-\x7e]{1,128}$/, "must be 1 to 128 printable characters"),
  amount: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  currency: z.string().regex(/^[A-Z]{3}$/, "must be an ISO 4217 code"),
  status: z.enum(["succeeded", "failed"]),
});
export const PaymentCallbackAnswer = z.object({ orderId: z.string(), status: z.enum(ORDER_STATUSES), duplicate: z.boolean() });

/** Problem answers a route can give, for the docs; any route can answer 503 while the database is unreachable. */
export const problems = (...statuses: number[]) => Object.fromEntries([...statuses, 503].map((s) => [s, Problem]));
