import { and, eq, sql } from "drizzle-orm";
import type { Tx } from "../../db/client.ts";
import type { OrderStatus, PaymentMethod, PaymentStatus } from "../orders/schema.ts";
import { paymentIntents, payments } from "./schema.ts";

export type PaymentIntent = typeof paymentIntents.$inferSelect;

export type PaymentRecordStatus = "captured" | "failed" | "refund_pending";

/** A provider's report about an order's money, as the callback receives it. */
export interface PaymentReport {
  tenantId: string;
  orderId: string;
  externalTxnId: string;
  amount: number;
  currency: string;
  status: "succeeded" | "failed";
}

/** What a payment report means for an order, whichever service holds the order's state. */
export type PaymentDecision =
  | { kind: "amount_mismatch"; detail: string }
  /** Placement has not finished: the provider retries and then finds the order CREATED or CANCELLED. */
  | { kind: "still_pending" }
  | { kind: "record"; status: PaymentRecordStatus };

/** The part of an order a payment decision reads. */
export interface PayableOrder {
  status: OrderStatus;
  paymentMethod: PaymentMethod;
  paymentStatus: PaymentStatus;
  total: number;
  currency: string;
}

/**
 * Decides what a provider report does. Money is captured only for an external-payment order that is
 * awaiting it; money for any other order is kept as refund_pending, never dropped.
 */
export function decidePayment(order: PayableOrder, report: PaymentReport): PaymentDecision {
  if (report.amount !== order.total || report.currency !== order.currency) {
    return { kind: "amount_mismatch", detail: `the order is due ${order.total} ${order.currency}, not ${report.amount} ${report.currency}` };
  }
  if (report.status === "failed") return { kind: "record", status: "failed" };
  if (order.status === "PENDING") return { kind: "still_pending" };
  const payable = order.status === "CREATED" && order.paymentMethod === "external" && order.paymentStatus === "pending";
  return { kind: "record", status: payable ? "captured" : "refund_pending" };
}

/** The payments module's record of provider money, and (split deployment) its copy of each order. */
export function createPayments() {
  const intentOf = (tenantId: string, orderId: string) => and(eq(paymentIntents.tenantId, tenantId), eq(paymentIntents.orderId, orderId));

  return {
    /**
     * Records one provider report. False when this (order, transaction, outcome) was recorded before:
     * the unique key decides, so concurrent and repeated deliveries have one effect, while a different
     * outcome for the same transaction (succeeded after failed) is recorded as news.
     */
    async recordPayment(tx: Tx, report: PaymentReport, status: PaymentRecordStatus): Promise<boolean> {
      const { status: outcome, ...rest } = report;
      const inserted = await tx
        .insert(payments)
        .values({ ...rest, outcome, status })
        .onConflictDoNothing()
        .returning({ orderId: payments.orderId });
      return inserted.length === 1;
    },

    /**
     * Keeps the copy of an order from one of its events (split deployment). Applied only when newer
     * than the copy, so a late `order.created` can never reopen an order already cancelled.
     */
    async keepOrder(
      tx: Tx,
      order: { tenantId: string; id: string; total: number; currency: string; paymentMethod: PaymentMethod; status: OrderStatus; paymentStatus: PaymentStatus; version: number },
    ): Promise<void> {
      const copy = {
        tenantId: order.tenantId,
        orderId: order.id,
        amount: order.total,
        currency: order.currency,
        paymentMethod: order.paymentMethod,
        orderStatus: order.status,
        paymentStatus: order.paymentStatus,
        orderVersion: order.version,
        updatedAt: sql`now()`,
      };
      const { tenantId: _t, orderId: _o, ...changes } = copy;
      await tx
        .insert(paymentIntents)
        .values(copy)
        .onConflictDoUpdate({ target: [paymentIntents.tenantId, paymentIntents.orderId], set: changes, setWhere: sql`${paymentIntents.orderVersion} < excluded.order_version` });
    },

    async lockIntent(tx: Tx, tenantId: string, orderId: string): Promise<PaymentIntent | undefined> {
      const [intent] = await tx.select().from(paymentIntents).where(intentOf(tenantId, orderId)).for("update");
      return intent;
    },

    /** Notes on the copy that this service captured the order's payment, before the order's own event says so. */
    async noteCaptured(tx: Tx, tenantId: string, orderId: string): Promise<void> {
      await tx.update(paymentIntents).set({ paymentStatus: "captured", updatedAt: sql`now()` }).where(intentOf(tenantId, orderId));
    },

    /** A capture of an order that was cancelled meanwhile: the money is kept to be refunded. Idempotent. */
    async holdCaptureForRefund(tx: Tx, tenantId: string, orderId: string): Promise<void> {
      await tx
        .update(payments)
        .set({ status: "refund_pending" })
        .where(and(eq(payments.tenantId, tenantId), eq(payments.orderId, orderId), eq(payments.status, "captured")));
    },
  };
}

export type Payments = ReturnType<typeof createPayments>;
