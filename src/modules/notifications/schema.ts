import { sql } from "drizzle-orm";
import { bigserial, index, integer, jsonb, pgTable, primaryKey, text, timestamp, uniqueIndex } from "drizzle-orm/pg-core";

// Merchant notifications (api-contract.md §7): the orders service's tables, migrated with its set.

/** Where a tenant wants its order events, which ones, and the secret their signatures use. */
export const webhookEndpoints = pgTable(
  "webhook_endpoints",
  {
    tenantId: text("tenant_id").notNull(),
    id: text("id").notNull(),
    url: text("url").notNull(),
    events: jsonb("events").$type<string[]>().notNull(),
    secret: text("secret").notNull(),
    createdAt: timestamp("created_at", { withTimezone: true }).notNull(),
    updatedAt: timestamp("updated_at", { withTimezone: true }).notNull(),
  },
  (t) => [primaryKey({ columns: [t.tenantId, t.id] })],
);

export const DELIVERY_STATUSES = ["pending", "delivered", "given_up"] as const;
export type DeliveryStatus = (typeof DELIVERY_STATUSES)[number];

/**
 * One event for one endpoint: its body, made once when the event was fanned out and sent verbatim on
 * every attempt (so one event id is never two different events), and when to try next.
 */
export const webhookDeliveries = pgTable(
  "webhook_deliveries",
  {
    id: text("id").primaryKey(),
    tenantId: text("tenant_id").notNull(),
    endpointId: text("endpoint_id").notNull(),
    eventId: text("event_id").notNull(),
    eventType: text("event_type").notNull(),
    orderId: text("order_id").notNull(),
    body: text("body").notNull(),
    status: text("status").$type<DeliveryStatus>().notNull(),
    attempts: integer("attempts").notNull(),
    nextAttemptAt: timestamp("next_attempt_at", { withTimezone: true }).notNull(),
    createdAt: timestamp("created_at", { withTimezone: true }).notNull(),
    settledAt: timestamp("settled_at", { withTimezone: true }),
  },
  (t) => [
    uniqueIndex("webhook_deliveries_once").on(t.tenantId, t.endpointId, t.eventId),
    index("webhook_deliveries_due").on(t.nextAttemptAt).where(sql`${t.status} = 'pending'`),
    index("webhook_deliveries_order").on(t.tenantId, t.orderId),
    index("webhook_deliveries_settled").on(t.settledAt).where(sql`${t.status} <> 'pending'`),
  ],
);

/** Every attempt and its answer, for the order's timeline. */
export const webhookAttempts = pgTable(
  "webhook_attempts",
  {
    id: bigserial("id", { mode: "number" }).primaryKey(),
    deliveryId: text("delivery_id").notNull(),
    tenantId: text("tenant_id").notNull(),
    at: timestamp("at", { withTimezone: true }).notNull(),
    durationMs: integer("duration_ms").notNull(),
    /** The HTTP status answered, or null when none came (refused, timed out, not allowed). */
    statusCode: integer("status_code"),
    error: text("error"),
  },
  (t) => [index("webhook_attempts_delivery").on(t.deliveryId, t.at)],
);
