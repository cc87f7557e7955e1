import { sql } from "drizzle-orm";
import { bigint, bigserial, check, index, integer, pgTable, primaryKey, text, timestamp, uniqueIndex } from "drizzle-orm/pg-core";
import type { OrderStatus, PaymentMethod, PaymentStatus } from "../orders/schema.ts";

export const wallets = pgTable(
  "wallets",
  {
    tenantId: text("tenant_id").notNull(),
    userId: text("user_id").notNull(),
    balance: bigint("balance", { mode: "number" }).notNull(),
    currency: text("currency").notNull(),
    updatedAt: timestamp("updated_at", { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [primaryKey({ columns: [t.tenantId, t.userId] }), check("wallet_balance_not_negative", sql`${t.balance} >= 0`)],
);

/** Every movement of wallet money. Signed amount; at most one debit and one refund per order. */
export const walletEntries = pgTable(
  "wallet_entries",
  {
    id: bigserial("id", { mode: "number" }).primaryKey(),
    tenantId: text("tenant_id").notNull(),
    userId: text("user_id").notNull(),
    kind: text("kind", { enum: ["credit", "debit", "refund"] }).notNull(),
    amount: bigint("amount", { mode: "number" }).notNull(),
    orderId: text("order_id"),
    createdAt: timestamp("created_at", { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [uniqueIndex("wallet_entries_once_per_order").on(t.tenantId, t.orderId, t.kind).where(sql`${t.orderId} is not null`)],
);

/**
 * Money reported by the payment provider, one row per (order, provider transaction, reported outcome):
 * the same report again is a duplicate, a different outcome for the same transaction (succeeded after
 * failed) is news. At most one capture per order; money for an order that can no longer be paid is
 * kept as refund_pending.
 */
export const payments = pgTable(
  "payments",
  {
    tenantId: text("tenant_id").notNull(),
    orderId: text("order_id").notNull(),
    externalTxnId: text("external_txn_id").notNull(),
    /** What the provider reported. */
    outcome: text("outcome", { enum: ["succeeded", "failed"] }).notNull().default("succeeded"),
    amount: bigint("amount", { mode: "number" }).notNull(),
    currency: text("currency").notNull(),
    /** What became of the money. */
    status: text("status", { enum: ["captured", "failed", "refund_pending", "refunded"] }).notNull(),
    createdAt: timestamp("created_at", { withTimezone: true }).notNull().defaultNow(),
    /** Refund requests sent to the provider for refund_pending money (src/modules/payments/refunds.ts). */
    refundAttempts: integer("refund_attempts").notNull().default(0),
    /** When the next refund request is due; while one is being sent, the end of its sender's lease. Null: due now. */
    refundNextAt: timestamp("refund_next_at", { withTimezone: true }),
    /** Why the last request did not refund, as the provider or the network said it. */
    refundError: text("refund_error"),
    /** The provider's id of the refund, once it is done. */
    providerRefundId: text("provider_refund_id"),
    refundedAt: timestamp("refunded_at", { withTimezone: true }),
  },
  (t) => [
    primaryKey({ columns: [t.tenantId, t.orderId, t.externalTxnId, t.outcome] }),
    uniqueIndex("payments_one_capture_per_order").on(t.tenantId, t.orderId).where(sql`${t.status} = 'captured'`),
    index("payments_refunds_due").on(t.refundNextAt).where(sql`${t.status} = 'refund_pending'`),
  ],
);

/**
 * What the payments service knows of each order (split deployment), kept from the orders service's
 * events: the amount due, its payment method, and its status and payment status as of `orderVersion`.
 * Events may arrive out of order; an older version never overwrites a newer one.
 */
export const paymentIntents = pgTable(
  "payment_intents",
  {
    tenantId: text("tenant_id").notNull(),
    orderId: text("order_id").notNull(),
    amount: bigint("amount", { mode: "number" }).notNull(),
    currency: text("currency").notNull(),
    paymentMethod: text("payment_method").$type<PaymentMethod>().notNull().default("external"),
    orderStatus: text("order_status").$type<OrderStatus>().notNull().default("CREATED"),
    paymentStatus: text("payment_status").$type<PaymentStatus>().notNull().default("pending"),
    orderVersion: integer("order_version").notNull().default(0),
    updatedAt: timestamp("updated_at", { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [primaryKey({ columns: [t.tenantId, t.orderId] })],
);
