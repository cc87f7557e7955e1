import { sql } from "drizzle-orm";
import { bigint, bigserial, check, pgTable, primaryKey, text, timestamp, uniqueIndex } from "drizzle-orm/pg-core";

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
 * Money reported by the payment provider, one row per (order, provider transaction). At most one
 * capture per order; money for an order that can no longer be paid is kept as refund_pending.
 */
export const payments = pgTable(
  "payments",
  {
    tenantId: text("tenant_id").notNull(),
    orderId: text("order_id").notNull(),
    externalTxnId: text("external_txn_id").notNull(),
    amount: bigint("amount", { mode: "number" }).notNull(),
    currency: text("currency").notNull(),
    status: text("status", { enum: ["captured", "failed", "refund_pending"] }).notNull(),
    createdAt: timestamp("created_at", { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [
    primaryKey({ columns: [t.tenantId, t.orderId, t.externalTxnId] }),
    uniqueIndex("payments_one_capture_per_order").on(t.tenantId, t.orderId).where(sql`${t.status} = 'captured'`),
  ],
);

/**
 * What the payments service knows of an external-payment order (split deployment), from the orders
 * service's events: the amount due, and whether it can still be paid.
 */
export const paymentIntents = pgTable(
  "payment_intents",
  {
    tenantId: text("tenant_id").notNull(),
    orderId: text("order_id").notNull(),
    amount: bigint("amount", { mode: "number" }).notNull(),
    currency: text("currency").notNull(),
    status: text("status", { enum: ["open", "paid", "closed"] }).notNull(),
    updatedAt: timestamp("updated_at", { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [primaryKey({ columns: [t.tenantId, t.orderId] })],
);
