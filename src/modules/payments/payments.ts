import { and, eq, sql } from "drizzle-orm";
import type { Tx } from "../../db/client.ts";
import { paymentIntents, payments } from "./schema.ts";

export type PaymentIntent = typeof paymentIntents.$inferSelect;

export type PaymentRecordStatus = "captured" | "failed" | "refund_pending";

/** The payments module's record of provider money: one row per (order, provider transaction). */
export function createPayments() {
  return {
    /**
     * Records one provider report. False when this (order, transaction) was recorded before: the
     * unique key decides, so concurrent and repeated deliveries have one effect.
     */
    async recordPayment(
      tx: Tx,
      args: { tenantId: string; orderId: string; externalTxnId: string; amount: number; currency: string; status: PaymentRecordStatus },
    ): Promise<boolean> {
      const inserted = await tx.insert(payments).values(args).onConflictDoNothing().returning({ orderId: payments.orderId });
      return inserted.length === 1;
    },

    /** Split deployment: an external-payment order now awaits this amount. Idempotent. */
    async expectPayment(tx: Tx, intent: { tenantId: string; orderId: string; amount: number; currency: string }): Promise<void> {
      await tx.insert(paymentIntents).values({ ...intent, status: "open" }).onConflictDoNothing();
    },

    async lockIntent(tx: Tx, tenantId: string, orderId: string): Promise<PaymentIntent | undefined> {
      const [intent] = await tx
        .select()
        .from(paymentIntents)
        .where(and(eq(paymentIntents.tenantId, tenantId), eq(paymentIntents.orderId, orderId)))
        .for("update");
      return intent;
    },

    /** Moves an intent on: open → paid (captured) or closed (the order was cancelled). */
    async settleIntent(tx: Tx, args: { tenantId: string; orderId: string; status: "paid" | "closed" }): Promise<void> {
      await tx
        .update(paymentIntents)
        .set({ status: args.status, updatedAt: sql`now()` })
        .where(and(eq(paymentIntents.tenantId, args.tenantId), eq(paymentIntents.orderId, args.orderId), eq(paymentIntents.status, "open")));
    },

    /** A capture that arrived for an order cancelled meanwhile: the money is kept to be refunded. */
    async markRefundPending(tx: Tx, args: { tenantId: string; orderId: string; externalTxnId: string }): Promise<void> {
      await tx
        .update(payments)
        .set({ status: "refund_pending" })
        .where(and(eq(payments.tenantId, args.tenantId), eq(payments.orderId, args.orderId), eq(payments.externalTxnId, args.externalTxnId)));
      await tx
        .update(paymentIntents)
        .set({ status: "closed", updatedAt: sql`now()` })
        .where(and(eq(paymentIntents.tenantId, args.tenantId), eq(paymentIntents.orderId, args.orderId)));
    },
  };
}

export type Payments = ReturnType<typeof createPayments>;
