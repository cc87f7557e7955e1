import type { FastifyPluginAsyncZod } from "fastify-type-provider-zod";
import { AppError } from "../../kit/errors.ts";
import type { Services } from "../../services.ts";
import { requireAdmin } from "../context.ts";
import { CreditBody, problems, UserParams, Wallet } from "../schemas.ts";

export function accountRoutes(services: Services): FastifyPluginAsyncZod {
  const { wallets, database } = services;
  const { db } = database;
  return async (app) => {
    app.post(
      "/accounts/:userId/credits",
      {
        onRequest: requireAdmin,
        schema: {
          tags: ["wallets"],
          summary: "Credit a user's wallet (admin)",
          params: UserParams,
          body: CreditBody,
          response: { 200: Wallet, ...problems(400, 401, 403, 422) },
        },
      },
      async (request) => {
        const { tenantId } = request.identity!;
        const result = await db.transaction((tx) => wallets.credit(tx, { tenantId, userId: request.params.userId, amount: request.body.amount }));
        if (!result.ok) throw new AppError("AMOUNT_TOO_LARGE", result.detail ?? "the balance would be too large");
        return result.value;
      },
    );

    app.get(
      "/accounts/me",
      { schema: { tags: ["wallets"], summary: "The caller's wallet", response: { 200: Wallet, ...problems(401) } } },
      async (request) => wallets.getWallet(db, request.identity!.tenantId, request.identity!.userId),
    );

    app.get(
      "/accounts/:userId",
      {
        onRequest: requireAdmin,
        schema: { tags: ["wallets"], summary: "A user's wallet (admin)", params: UserParams, response: { 200: Wallet, ...problems(400, 401, 403) } },
      },
      async (request) => wallets.getWallet(db, request.identity!.tenantId, request.params.userId),
    );
  };
}
