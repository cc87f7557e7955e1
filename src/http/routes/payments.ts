import type { FastifyPluginAsyncZod } from "fastify-type-provider-zod";
import { z } from "zod";
import { SIGNATURE_HEADER } from "../../auth/webhooks.ts";
import { AppError } from "../../kit/errors.ts";
import type { WebhookSignatures } from "../../auth/webhooks.ts";
import type { HandlePaymentReport } from "../../flows/payment-callback.ts";
import type { Metrics } from "../../ops/metrics.ts";
import { sendProblem } from "../problem.ts";
import { PaymentCallbackBody, PaymentCallbackAnswer, problems } from "../schemas.ts";

const badSignature = () => new AppError("BAD_SIGNATURE", "the Orderly-Signature header is missing, wrong or older than 300 s");

/** The payment provider's callback: no JWT, an HMAC signature over the raw body instead. */
export function paymentRoutes(deps: { webhooks: WebhookSignatures; handlePaymentReport: HandlePaymentReport; metrics: Metrics }): FastifyPluginAsyncZod {
  const { webhooks, handlePaymentReport, metrics } = deps;
  const counted = (outcome: string) => metrics.callbacks.inc({ outcome });
  return async (app) => {
    app.post(
      "/payments/callback",
      {
        // The header and its timestamp are checked before the body is read, the HMAC before the body is validated.
        onRequest: async (request, reply) => {
          if (!webhooks.isFresh(request.headers[SIGNATURE_HEADER] as string | undefined)) {
            counted("bad_signature");
            return sendProblem(request, reply, badSignature());
          }
        },
        preValidation: async (request, reply) => {
          if (!webhooks.verify(request.headers[SIGNATURE_HEADER] as string | undefined, request.rawBody ?? "")) {
            counted("bad_signature");
            return sendProblem(request, reply, badSignature());
          }
        },
        // A signed body the schema refuses (the outcomes above and below count themselves).
        onResponse: async (_request, reply) => {
          if (reply.statusCode === 400) counted("invalid");
        },
        schema: {
          tags: ["payments"],
          operationId: "paymentCallback", summary: "Payment provider callback (HMAC-signed, no JWT)",
          description:
            "Header `Orderly-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(ORDERLY_WEBHOOK_SECRET, t + \".\" + raw body)>`, " +
            "t within 300 s of now. The same (orderId, externalTxnId) again has no second effect and answers duplicate: true. " +
            "Money for a cancelled order is recorded with payment status refund_pending (409 ORDER_NOT_PAYABLE).",
          security: [],
          headers: z.looseObject({ [SIGNATURE_HEADER]: z.string().optional().describe("t=<unix seconds>,v1=<hex HMAC-SHA256>") }),
          body: PaymentCallbackBody,
          response: { 200: PaymentCallbackAnswer, ...problems(400, 401, 404, 409, 422, 429) },
        },
      },
      async (request) => {
        const result = await handlePaymentReport(request.body);
        counted(result.kind === "accepted" && result.duplicate ? "duplicate" : result.kind);
        switch (result.kind) {
          case "accepted":
            return { orderId: result.orderId, status: result.status, duplicate: result.duplicate };
          case "not_found":
            throw new AppError("ORDER_NOT_FOUND", `no order ${request.body.orderId}`);
          case "amount_mismatch":
            throw new AppError("AMOUNT_MISMATCH", result.detail);
          case "not_payable":
            throw new AppError("ORDER_NOT_PAYABLE", result.detail, { orderId: result.orderId });
        }
      },
    );
  };
}
