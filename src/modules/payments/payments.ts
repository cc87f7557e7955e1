import type { Tx } from "../../db/client.ts";
import { payments } from "./schema.ts";

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
  };
}

export type Payments = ReturnType<typeof createPayments>;
