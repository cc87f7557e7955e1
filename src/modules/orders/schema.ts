import { relations, sql } from "drizzle-orm";
import { bigint, bigserial, index, integer, jsonb, pgSequence, pgTable, primaryKey, text, timestamp, uniqueIndex } from "drizzle-orm/pg-core";
import type { Address } from "../shipping/schema.ts";

export const ORDER_STATUSES = ["PENDING", "CREATED", "PAID", "SHIPPED", "COMPLETED", "CANCELLED"] as const;
export type OrderStatus = (typeof ORDER_STATUSES)[number];

export const CANCEL_REASONS = [
  "OUT_OF_STOCK",
  "INSUFFICIENT_FUNDS",
  "COUPON_UNAVAILABLE",
  "PAYMENT_TIMEOUT",
  "CUSTOMER_CANCELLED",
  "ADMIN_CANCELLED",
] as const;
export type CancelReason = (typeof CANCEL_REASONS)[number];

export const PAYMENT_METHODS = ["balance", "external"] as const;
export type PaymentMethod = (typeof PAYMENT_METHODS)[number];
export type PaymentStatus = "pending" | "captured" | "voided" | "refund_pending" | "refunded";
export type ShipmentStatus = "pending" | "shipped" | "delivered" | "cancelled";

/** Order numbers come from a sequence: unique without a contended counter row. */
export const orderNumbers = pgSequence("order_number_seq", { startWith: 100001 });

export const orders = pgTable(
  "orders",
  {
    id: text("id").primaryKey(),
    tenantId: text("tenant_id").notNull(),
    orderNumber: text("order_number").notNull(),
    userId: text("user_id").notNull(),
    status: text("status").$type<OrderStatus>().notNull(),
    version: integer("version").notNull(),
    subtotal: bigint("subtotal", { mode: "number" }).notNull(),
    discount: bigint("discount", { mode: "number" }).notNull(),
    total: bigint("total", { mode: "number" }).notNull(),
    currency: text("currency").notNull(),
    couponCode: text("coupon_code"),
    paymentMethod: text("payment_method").$type<PaymentMethod>().notNull(),
    paymentStatus: text("payment_status").$type<PaymentStatus>().notNull(),
    externalTxnId: text("external_txn_id"),
    shippingAddress: jsonb("shipping_address").$type<Address>().notNull(),
    // The order's copy of its shipment document, kept by the placement and the ship/complete moves.
    shipmentWaybill: text("shipment_waybill"),
    shipmentCarrier: text("shipment_carrier"),
    shipmentTrackingNumber: text("shipment_tracking_number"),
    shipmentStatus: text("shipment_status").$type<ShipmentStatus>(),
    cancelReason: text("cancel_reason").$type<CancelReason>(),
    paymentDueAt: timestamp("payment_due_at", { withTimezone: true }),
    createdAt: timestamp("created_at", { withTimezone: true }).notNull(),
    updatedAt: timestamp("updated_at", { withTimezone: true }).notNull(),
  },
  (t) => [
    uniqueIndex("orders_number").on(t.tenantId, t.orderNumber),
    index("orders_tenant_newest").on(t.tenantId, t.createdAt.desc(), t.id.desc()),
    index("orders_user_newest").on(t.tenantId, t.userId, t.createdAt.desc(), t.id.desc()),
    index("orders_status").on(t.status, t.createdAt),
    index("orders_payment_due").on(t.paymentDueAt).where(sql`${t.status} = 'CREATED'`),
  ],
);

export const orderItems = pgTable(
  "order_items",
  {
    tenantId: text("tenant_id").notNull(),
    orderId: text("order_id")
      .notNull()
      .references(() => orders.id),
    sku: text("sku").notNull(),
    name: text("name").notNull(),
    quantity: integer("quantity").notNull(),
    unitPrice: bigint("unit_price", { mode: "number" }).notNull(),
    lineTotal: bigint("line_total", { mode: "number" }).notNull(),
  },
  (t) => [primaryKey({ columns: [t.orderId, t.sku] })],
);

export const orderHistory = pgTable(
  "order_history",
  {
    id: bigserial("id", { mode: "number" }).primaryKey(),
    tenantId: text("tenant_id").notNull(),
    orderId: text("order_id")
      .notNull()
      .references(() => orders.id),
    from: text("from_status").$type<OrderStatus>(),
    to: text("to_status").$type<OrderStatus>().notNull(),
    reason: text("reason"),
    at: timestamp("at", { withTimezone: true }).notNull(),
  },
  (t) => [index("order_history_order").on(t.orderId, t.id)],
);

export const ordersRelations = relations(orders, ({ many }) => ({
  items: many(orderItems),
  history: many(orderHistory),
}));
export const orderItemsRelations = relations(orderItems, ({ one }) => ({
  order: one(orders, { fields: [orderItems.orderId], references: [orders.id] }),
}));
export const orderHistoryRelations = relations(orderHistory, ({ one }) => ({
  order: one(orders, { fields: [orderHistory.orderId], references: [orders.id] }),
}));

/**
 * The orders service's copy of product names and prices, kept from the inventory service's
 * `inventory.product-changed` events: in the split deployment placement prices orders from it
 * without reading another service's tables.
 */
export const catalogueEntries = pgTable(
  "order_catalogue",
  {
    tenantId: text("tenant_id").notNull(),
    sku: text("sku").notNull(),
    name: text("name").notNull(),
    price: bigint("price", { mode: "number" }).notNull(),
    /** The product's version this copy is of: an older event never overwrites a newer copy. */
    version: integer("version").notNull().default(0),
    updatedAt: timestamp("updated_at", { withTimezone: true }).notNull(),
  },
  (t) => [primaryKey({ columns: [t.tenantId, t.sku] })],
);

/**
 * The two-phase-commit coordinator's decision log (src/flows/two-phase-placement.ts): one row per
 * placement that reached a decision, written and committed before any participant's prepared
 * transaction is committed or rolled back. No row for a prepared placement means no decision yet;
 * whoever inserts the row first (the coordinator's commit, or recovery's abort of a placement left
 * in doubt) decides, so the two can never disagree.
 */
export const placementDecisions = pgTable(
  "placement_decisions",
  {
    orderId: text("order_id").primaryKey(),
    /** Null when recovery decided: a prepared transaction does not say whose it is. */
    tenantId: text("tenant_id"),
    decision: text("decision").$type<"commit" | "abort">().notNull(),
    /** The prepared transactions (their identifiers) the decision is about; empty when recovery decided. */
    participants: text("participants").array().notNull().default(sql`'{}'`),
    decidedAt: timestamp("decided_at", { withTimezone: true }).notNull().defaultNow(),
    /** When no participant held a prepared transaction of it any more. */
    completedAt: timestamp("completed_at", { withTimezone: true }),
  },
  (t) => [index("placement_decisions_open").on(t.decidedAt).where(sql`completed_at is null`)],
);
