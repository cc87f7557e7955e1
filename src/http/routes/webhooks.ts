import type { FastifyPluginAsyncZod } from "fastify-type-provider-zod";
import { z } from "zod";
import type { Database } from "../../db/client.ts";
import { AppError } from "../../kit/errors.ts";
import { type Endpoint, type Notifications, WEBHOOK_EVENTS } from "../../modules/notifications/notifications.ts";
import { requireAdmin } from "../context.ts";
import { problems } from "../schemas.ts";

const EndpointId = z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, "must be 1 to 64 letters, digits, . _ -");
const EndpointBody = z
  .strictObject({
    url: z.string().max(2048).describe("where events are POSTed; in production https to a public address only"),
    events: z.array(z.enum(WEBHOOK_EVENTS as [string, ...string[]])).min(1).describe("the order events to send"),
    secret: z.string().min(16).max(256).optional().describe("signs every delivery (HMAC-SHA256); made up and answered once when not given"),
  });
const EndpointSchema = z
  .object({ id: z.string(), url: z.string(), events: z.array(z.string()), createdAt: z.string(), updatedAt: z.string() })
  .meta({ id: "WebhookEndpoint" });
const PutAnswer = EndpointSchema.extend({ secret: z.string().optional().describe("only when Orderly made the secret up: keep it, it is never shown again") }).meta({
  id: "WebhookEndpointCreated",
});
const Params = z.strictObject({ id: EndpointId });

const view = (e: Endpoint) => ({ id: e.id, url: e.url, events: e.events, createdAt: e.createdAt.toISOString(), updatedAt: e.updatedAt.toISOString() });

/**
 * Merchants' webhook endpoints (api-contract.md §7), admins only, each on their own tenant. What is
 * sent to them, signed and retried, is notifications.ts.
 */
export function webhookRoutes(deps: { database: Database; notifications: Notifications }): FastifyPluginAsyncZod {
  const { database, notifications } = deps;
  return async (app) => {
    app.addHook("onRequest", requireAdmin);

    app.put(
      "/webhook-endpoints/:id",
      {
        schema: {
          tags: ["webhooks"],
          operationId: "putWebhookEndpoint",
          summary: "Create or replace a webhook endpoint (admin)",
          description:
            "Order events go to `url` as `POST` with `{ id, type, tenantId, createdAt, data: { order } }` and `Orderly-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, t + \".\" + raw body)>`. " +
            "A 2xx within 10 s is a delivery; otherwise it is retried with exponential backoff for at least 24 h, then given up. Attempts show in the order's timeline. " +
            "201 when created, 200 when replaced (the secret is kept unless a new one is given).",
          params: Params,
          body: EndpointBody,
          response: { 200: PutAnswer, 201: PutAnswer, ...problems(400, 401, 403) },
        },
      },
      async (request, reply) => {
        const refusal = notifications.urlRefusal(request.body.url);
        if (refusal) throw new AppError("VALIDATION_FAILED", `url ${refusal}`, { errors: [{ path: "url", message: refusal }] });
        const { tenantId } = request.identity!;
        const { endpoint, created, secret } = await database.tenant(tenantId, (tx) => notifications.putEndpoint(tx, tenantId, request.params.id, request.body));
        reply.code(created ? 201 : 200);
        // The secret is answered only when it was made up here: one the caller gave, it already has.
        return { ...view(endpoint), ...(created && request.body.secret === undefined ? { secret } : {}) };
      },
    );

    app.get(
      "/webhook-endpoints",
      {
        schema: {
          tags: ["webhooks"],
          operationId: "listWebhookEndpoints",
          summary: "The tenant's webhook endpoints (admin)",
          response: { 200: z.object({ data: z.array(EndpointSchema) }), ...problems(401, 403) },
        },
      },
      async (request) => {
        const { tenantId } = request.identity!;
        return { data: (await database.tenant(tenantId, (tx) => notifications.listEndpoints(tx, tenantId))).map(view) };
      },
    );

    app.get(
      "/webhook-endpoints/:id",
      {
        schema: { tags: ["webhooks"], operationId: "getWebhookEndpoint", summary: "One webhook endpoint (admin)", params: Params, response: { 200: EndpointSchema, ...problems(400, 401, 403, 404) } },
      },
      async (request) => {
        const { tenantId } = request.identity!;
        const endpoint = await database.tenant(tenantId, (tx) => notifications.getEndpoint(tx, tenantId, request.params.id));
        if (!endpoint) throw new AppError("NOT_FOUND", `no webhook endpoint ${request.params.id}`);
        return view(endpoint);
      },
    );

    app.delete(
      "/webhook-endpoints/:id",
      {
        schema: {
          tags: ["webhooks"],
          operationId: "deleteWebhookEndpoint",
          summary: "Delete a webhook endpoint (admin); what it still had to receive is given up",
          params: Params,
          response: { 204: z.null().describe("deleted"), ...problems(400, 401, 403, 404) },
        },
      },
      async (request, reply) => {
        const { tenantId } = request.identity!;
        if (!(await database.tenant(tenantId, (tx) => notifications.deleteEndpoint(tx, tenantId, request.params.id)))) {
          throw new AppError("NOT_FOUND", `no webhook endpoint ${request.params.id}`);
        }
        return reply.code(204).send(null);
      },
    );
  };
}
