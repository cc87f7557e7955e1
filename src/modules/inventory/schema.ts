import { sql } from "drizzle-orm";
import { bigint, bigserial, check, index, integer, pgTable, primaryKey, text, timestamp } from "drizzle-orm/pg-core";

const money = (name: string) => bigint(name, { mode: "number" });
const count = (name: string) => bigint(name, { mode: "number" });

export const products = pgTable(
  "products",
  {
    tenantId: text("tenant_id").notNull(),
    sku: text("sku").notNull(),
    name: text("name").notNull(),
    price: money("price").notNull(),
    currency: text("currency").notNull(),
    /** Counts the changes of name and price, so copies kept from events can tell newer from older. */
    version: integer("version").notNull().default(1),
    createdAt: timestamp("created_at", { withTimezone: true }).notNull().defaultNow(),
    updatedAt: timestamp("updated_at", { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [primaryKey({ columns: [t.tenantId, t.sku] }), index("products_newest").on(t.tenantId, t.createdAt.desc(), t.sku.desc())],
);

/**
 * The hot row of a SKU, kept apart from the catalogue row so renaming a product never waits on buyers.
 * Invariant 1 of the contract: initial + adjusted = available + reserved + sold.
 */
export const stockLevels = pgTable(
  "stock_levels",
  {
    tenantId: text("tenant_id").notNull(),
    sku: text("sku").notNull(),
    initial: count("initial").notNull(),
    adjusted: count("adjusted").notNull().default(0),
    available: count("available").notNull(),
    reserved: count("reserved").notNull().default(0),
    sold: count("sold").notNull().default(0),
  },
  (t) => [
    primaryKey({ columns: [t.tenantId, t.sku] }),
    check("stock_available_not_negative", sql`${t.available} >= 0`),
    check("stock_reserved_not_negative", sql`${t.reserved} >= 0`),
    check("stock_sold_not_negative", sql`${t.sold} >= 0`),
  ],
);

/** One row per (order, sku): what an order holds, so releasing is idempotent and auditable. */
export const stockReservations = pgTable(
  "stock_reservations",
  {
    tenantId: text("tenant_id").notNull(),
    orderId: text("order_id").notNull(),
    sku: text("sku").notNull(),
    quantity: count("quantity").notNull(),
    status: text("status", { enum: ["reserved", "sold", "released"] }).notNull(),
    updatedAt: timestamp("updated_at", { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [primaryKey({ columns: [t.tenantId, t.orderId, t.sku] })],
);

export const stockAdjustments = pgTable("stock_adjustments", {
  id: bigserial("id", { mode: "number" }).primaryKey(),
  tenantId: text("tenant_id").notNull(),
  sku: text("sku").notNull(),
  delta: count("delta").notNull(),
  createdAt: timestamp("created_at", { withTimezone: true }).notNull().defaultNow(),
});
