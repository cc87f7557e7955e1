import type { FastifyPluginAsyncZod } from "fastify-type-provider-zod";
import { AppError } from "../../kit/errors.ts";
import type { Database } from "../../db/client.ts";
import type { Coupons } from "../../modules/coupons/coupons.ts";
import { requireAdmin } from "../context.ts";
import { CodeParams, Coupon, problems, PutCouponBody } from "../schemas.ts";

export function couponRoutes(deps: { database: Database; coupons: Coupons }): FastifyPluginAsyncZod {
  const { coupons, database } = deps;
  return async (app) => {
    app.put(
      "/coupons/:code",
      {
        onRequest: requireAdmin,
        schema: {
          tags: ["coupons"],
          operationId: "putCoupon", summary: "Create or replace a coupon's terms (admin)",
          params: CodeParams,
          body: PutCouponBody,
          response: { 200: Coupon, 201: Coupon, ...problems(400, 401, 403, 409) },
        },
      },
      async (request, reply) => {
        const { tenantId } = request.identity!;
        const { expiresAt, ...terms } = request.body;
        const input = { ...terms, expiresAt: expiresAt === undefined ? undefined : new Date(expiresAt) };
        const result = await database.tenant(tenantId, (tx) => coupons.putCoupon(tx, tenantId, request.params.code, input));
        if (!result.ok) throw new AppError("MAX_REDEMPTIONS_BELOW_REDEEMED", result.detail ?? "maxRedemptions is below the redemptions so far");
        return reply.code(result.value.created ? 201 : 200).send(result.value.coupon);
      },
    );

    app.get(
      "/coupons/:code",
      {
        onRequest: requireAdmin,
        schema: { tags: ["coupons"], operationId: "getCoupon", summary: "Get a coupon with its redemptions (admin)", params: CodeParams, response: { 200: Coupon, ...problems(400, 401, 403, 404) } },
      },
      async (request) => {
        const { tenantId } = request.identity!;
        const coupon = await database.tenant(tenantId, (tx) => coupons.getCoupon(tx, tenantId, request.params.code));
        if (!coupon) throw new AppError("COUPON_NOT_FOUND", `no coupon ${request.params.code}`);
        return coupon;
      },
    );
  };
}
