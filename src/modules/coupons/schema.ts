import { sql } from "drizzle-orm";
import { bigint, check, integer, pgTable, primaryKey, text, timestamp } from "drizzle-orm/pg-core";

export const coupons = pgTable(
  "coupons",
  {
    tenantId: text("tenant_id").notNull(),
    code: text("code").notNull(),
    discountType: text("discount_type", { enum: ["amount", "percent"] }).notNull(),
    discountValue: bigint("discount_value", { mode: "number" }).notNull(),
    userId: text("user_id"),
    minSubtotal: bigint("min_subtotal", { mode: "number" }),
    expiresAt: timestamp("expires_at", { withTimezone: true }),
    maxRedemptions: integer("max_redemptions").notNull(),
    redemptions: integer("redemptions").notNull().default(0),
    createdAt: timestamp("created_at", { withTimezone: true }).notNull().defaultNow(),
    updatedAt: timestamp("updated_at", { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [
    primaryKey({ columns: [t.tenantId, t.code] }),
    check("coupon_redemptions_within_limit", sql`${t.redemptions} >= 0 and ${t.redemptions} <= ${t.maxRedemptions}`),
  ],
);

/** One row per order that redeemed a coupon; `restored` when the order was cancelled. */
export const couponRedemptions = pgTable(
  "coupon_redemptions",
  {
    tenantId: text("tenant_id").notNull(),
    orderId: text("order_id").notNull(),
    code: text("code").notNull(),
    userId: text("user_id").notNull(),
    status: text("status", { enum: ["redeemed", "restored"] }).notNull(),
    createdAt: timestamp("created_at", { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [primaryKey({ columns: [t.tenantId, t.orderId] })],
);
