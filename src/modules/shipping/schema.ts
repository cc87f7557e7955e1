import { jsonb, pgTable, primaryKey, text, timestamp, uniqueIndex } from "drizzle-orm/pg-core";

export interface Address {
  name: string;
  phone: string;
  line1: string;
  line2?: string | undefined;
  city: string;
  postalCode?: string | undefined;
  country: string;
}

/** The shipment document: created when an order is paid, the waybill its identity. */
export const shipments = pgTable(
  "shipments",
  {
    tenantId: text("tenant_id").notNull(),
    orderId: text("order_id").notNull(),
    waybill: text("waybill").notNull(),
    carrier: text("carrier"),
    trackingNumber: text("tracking_number"),
    status: text("status", { enum: ["pending", "shipped", "delivered", "cancelled"] }).notNull(),
    address: jsonb("address").$type<Address>().notNull(),
    createdAt: timestamp("created_at", { withTimezone: true }).notNull().defaultNow(),
    updatedAt: timestamp("updated_at", { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [primaryKey({ columns: [t.tenantId, t.orderId] }), uniqueIndex("shipments_waybill").on(t.waybill)],
);
