import type { FastifyPluginAsyncZod } from "fastify-type-provider-zod";
import { AppError } from "../../kit/errors.ts";
import type { Database } from "../../db/client.ts";
import type { Idempotency } from "../../kit/idempotency.ts";
import type { Wallets } from "../../modules/payments/wallets.ts";
import { requireAdmin } from "../context.ts";
import { answerOf } from "../idempotency.ts";
import { CreditBody, IdempotencyHeaders, problems, UserParams, Wallet } from "../schemas.ts";

export function accountRoutes(deps: { database: Database; wallets: Wallets; idempotency: Idempotency }): FastifyPluginAsyncZod {
  const { wallets, database, idempotency } = deps;
  return async (app) => {
    app.post(
      "/accounts/:userId/credits",
      {
        onRequest: requireAdmin,
        config: { idempotent: true },
        schema: {
          tags: ["wallets"],
          operationId: "creditWallet", summary: "Credit a user's wallet (admin); honours Idempotency-Key",
          headers: IdempotencyHeaders,
          params: UserParams,
          body: CreditBody,
          response: { 200: Wallet, ...problems(400, 401, 403, 422) },
        },
      },
      async (request) => {
        const { tenantId } = request.identity!;
        const answer = answerOf(request, idempotency);
        const result = await database.tenant(tenantId, async (tx) => {
          const credited = await wallets.credit(tx, { tenantId, userId: request.params.userId, amount: request.body.amount });
          if (credited.ok) await answer.record(tx, { status: 200, body: credited.value, headers: { "content-type": "application/json; charset=utf-8" } });
          return credited;
        });
        if (!result.ok) throw new AppError("AMOUNT_TOO_LARGE", result.detail ?? "the balance would be too large");
        return result.value;
      },
    );

    app.get(
      "/accounts/me",
      { schema: { tags: ["wallets"], operationId: "getMyWallet", summary: "The caller's wallet", response: { 200: Wallet, ...problems(401) } } },
      async (request) => {
        const { tenantId, userId } = request.identity!;
        return database.tenant(tenantId, (tx) => wallets.getWallet(tx, tenantId, userId));
      },
    );

    app.get(
      "/accounts/:userId",
      {
        onRequest: requireAdmin,
        schema: { tags: ["wallets"], operationId: "getWallet", summary: "A user's wallet (admin)", params: UserParams, response: { 200: Wallet, ...problems(400, 401, 403) } },
      },
      async (request) => {
        const { tenantId } = request.identity!;
        return database.tenant(tenantId, (tx) => wallets.getWallet(tx, tenantId, request.params.userId));
      },
    );
  };
}
