import { createHash } from "node:crypto";
import { and, eq, sql } from "drizzle-orm";
import { z } from "zod";
import { type Db, rows, type Tx } from "../../db/client.ts";
import { createWebhookSignatures, SIGNATURE_HEADER } from "../../auth/webhooks.ts";
import type { Clock } from "../../kit/clock.ts";
import { payments } from "./schema.ts";

/** What Orderly asks the payment provider to give back: all of one transaction's money. */
export interface RefundRequest {
  /** Ours, the same on every attempt for one payment: the provider's idempotency key. */
  refundId: string;
  tenantId: string;
  orderId: string;
  externalTxnId: string;
  amount: number;
  currency: string;
}

/** What became of a refund request. */
export type RefundAnswer =
  /** Done: the money is on its way back. */
  | { kind: "refunded"; providerRefundId: string }
  /** Accepted, not done yet: asked again later with the same key. */
  | { kind: "pending" }
  /** The provider refuses it: asked again on the same schedule, and flagged for an operator meanwhile. */
  | { kind: "refused"; reason: string }
  /** No answer that says anything (a timeout, a 5xx, a network error): asked again. */
  | { kind: "unavailable"; reason: string };

/**
 * The payment provider, as refunds need it. Its `refund` must be idempotent on `refundId`: asked
 * again with the same id (after a timeout, or a crash before the answer was recorded), the provider
 * answers about the same refund and never pays twice. Never throws.
 */
export interface PaymentProvider {
  refund(request: RefundRequest): Promise<RefundAnswer>;
}

export const IDEMPOTENCY_HEADER = "idempotency-key";

const ProviderAnswer = z.object({
  id: z.string().min(1).max(200).optional(),
  status: z.enum(["succeeded", "pending", "failed"]),
  reason: z.string().max(500).optional(),
});

/** A 4xx that means "not now" rather than "no". */
const RETRYABLE_4XX = new Set([408, 409, 425, 429]);

/**
 * The provider over HTTP (ORDERLY_REFUND_URL): `POST url` with the request as JSON, the header
 * `Idempotency-Key: <refundId>` and `Orderly-Signature` made with the secret the provider signs its
 * callbacks with (ORDERLY_WEBHOOK_SECRET), the same scheme both ways. It answers
 * `{ id, status: "succeeded" | "pending" | "failed", reason? }`; a 4xx is a refusal.
 */
export function createHttpPaymentProvider(options: { url: string; secret: string; clock: Clock; timeoutMs: number }): PaymentProvider {
  const signatures = createWebhookSignatures(options.secret, options.clock);
  return {
    async refund(request) {
      const body = JSON.stringify(request);
      let response: Response;
      try {
        response = await fetch(options.url, {
          method: "POST",
          headers: { "content-type": "application/json", [IDEMPOTENCY_HEADER]: request.refundId, [SIGNATURE_HEADER]: signatures.sign(body), "user-agent": "Orderly-Refunds/1" },
          body,
          signal: AbortSignal.timeout(options.timeoutMs),
          redirect: "error",
        });
      } catch (error) {
        const name = (error as Error).name;
        return { kind: "unavailable", reason: name === "TimeoutError" || name === "AbortError" ? `no answer within ${options.timeoutMs} ms` : `the provider cannot be reached: ${(error as Error).message}` };
      }
      const text = await response.text().catch(() => "");
      if (response.status >= 500 || RETRYABLE_4XX.has(response.status)) return { kind: "unavailable", reason: `the provider answered ${response.status}` };
      if (response.status >= 400) return { kind: "refused", reason: `the provider answered ${response.status}: ${text.slice(0, 300)}` };
      let answer: z.infer<typeof ProviderAnswer>;
      try {
        answer = ProviderAnswer.parse(JSON.parse(text));
      } catch {
        return { kind: "unavailable", reason: `the provider answered ${response.status} with a body that is not a refund` };
      }
      if (answer.status === "failed") return { kind: "refused", reason: answer.reason ?? "the provider says the refund failed" };
      if (answer.status === "pending") return { kind: "pending" };
      if (!answer.id) return { kind: "unavailable", reason: "the provider answered succeeded without a refund id" };
      return { kind: "refunded", providerRefundId: answer.id };
    },
  };
}

/** One transaction's money waiting to be refunded, claimed by one sender until `leaseUntil`. */
export interface DueRefund {
  tenantId: string;
  orderId: string;
  externalTxnId: string;
  amount: number;
  currency: string;
  attempts: number;
  leaseUntil: Date;
}

/** The idempotency key of a payment's refund: derived from the payment, so every attempt, on any replica, sends the same one. */
export function refundIdOf(payment: { tenantId: string; orderId: string; externalTxnId: string }): string {
  return `rf_${createHash("sha256").update(`${payment.tenantId}\0${payment.orderId}\0${payment.externalTxnId}`).digest("hex").slice(0, 32)}`;
}

export const refundRequestOf = (due: DueRefund): RefundRequest => ({
  refundId: refundIdOf(due),
  tenantId: due.tenantId,
  orderId: due.orderId,
  externalTxnId: due.externalTxnId,
  amount: due.amount,
  currency: due.currency,
});

/** The payments module's side of refunds: which money is due to be refunded, and what became of each request. */
export function createRefunds(deps: { clock: Clock }) {
  const { clock } = deps;
  const samePayment = (due: DueRefund) =>
    and(eq(payments.tenantId, due.tenantId), eq(payments.orderId, due.orderId), eq(payments.externalTxnId, due.externalTxnId), eq(payments.outcome, "succeeded"));

  return {
    /**
     * Up to `limit` refund_pending payments whose next request is due, leased to the caller until
     * `leaseUntil` (across tenants: the owner's connection). SKIP LOCKED and the lease keep two senders
     * off one payment; the provider's idempotency key keeps a late duplicate harmless all the same.
     */
    async claimDue(db: Db, limit: number, leaseMs: number): Promise<DueRefund[]> {
      const now = clock.now();
      const leaseUntil = new Date(now.getTime() + leaseMs);
      const found = await rows<Omit<DueRefund, "leaseUntil">>(
        db,
        sql`with due as (
              select tenant_id, order_id, external_txn_id, outcome from payments
              where status = 'refund_pending' and coalesce(refund_next_at, '-infinity') <= ${now.toISOString()}::timestamptz
              order by refund_next_at nulls first limit ${limit} for update skip locked)
            update payments p set refund_next_at = ${leaseUntil.toISOString()}::timestamptz
            from due
            where p.tenant_id = due.tenant_id and p.order_id = due.order_id and p.external_txn_id = due.external_txn_id and p.outcome = due.outcome
            returning p.tenant_id as "tenantId", p.order_id as "orderId", p.external_txn_id as "externalTxnId", p.amount::float8 as amount, p.currency, p.refund_attempts as attempts`,
      );
      return found.map((d) => ({ ...d, leaseUntil }));
    },

    /**
     * Records what a request came to, in the caller's transaction, only while the caller's lease
     * holds (a sender that lost it, being slow, leaves the payment to the one that took it over).
     * Answers whether the payment is now refunded by this call.
     */
    async record(tx: Tx, due: DueRefund, answer: RefundAnswer, nextAttemptAt: Date): Promise<"refunded" | "recorded" | "lease_lost"> {
      const now = clock.now();
      const change =
        answer.kind === "refunded"
          ? { status: "refunded" as const, providerRefundId: answer.providerRefundId, refundedAt: now, refundError: null, refundNextAt: null }
          : { refundError: answer.kind === "pending" ? null : answer.reason, refundNextAt: nextAttemptAt };
      const updated = await tx
        .update(payments)
        .set({ ...change, refundAttempts: sql`${payments.refundAttempts} + 1` })
        .where(and(samePayment(due), eq(payments.status, "refund_pending"), eq(payments.refundNextAt, due.leaseUntil)))
        .returning({ orderId: payments.orderId });
      if (updated.length === 0) return "lease_lost";
      return answer.kind === "refunded" ? "refunded" : "recorded";
    },
  };
}

export type Refunds = ReturnType<typeof createRefunds>;
