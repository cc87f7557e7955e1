import type { FastifyReply } from "fastify";
import type { FastifyPluginAsyncZod } from "fastify-type-provider-zod";
import { AppError } from "../../kit/errors.ts";
import type { Database } from "../../db/client.ts";
import type { OrderMoves } from "../../flows/order-moves.ts";
import { DEFAULT_WAIT_MS, type Placement, type PlacementResult, type RecordResult } from "../../flows/placement.ts";
import type { Idempotency } from "../../kit/idempotency.ts";
import type { SoldOutGate } from "../../kit/sold-out-gate.ts";
import { outOfStockDetail, skusShortIn } from "../../modules/inventory/inventory.ts";
import type { Orders, OrderView } from "../../modules/orders/orders.ts";
import type { Metrics } from "../../ops/metrics.ts";
import { etagOf, expectedVersion, requireAdmin, viewerOf } from "../context.ts";
import { answerOf } from "../idempotency.ts";
import { ListOrdersQuery, Order, OrderPage, OrderParams, PlaceOrderBody, PlacementHeaders, problems, ShipBody } from "../schemas.ts";
import { cursorOf } from "./products.ts";

const MAX_WAIT_S = 30;

/** Reads RFC 7240 `Prefer: respond-async, wait=N`. */
export function parsePrefer(header: string | string[] | undefined): { respondAsync: boolean; waitMs: number } {
  const prefs = [header ?? []].flat().flatMap((h) => h.split(",")).map((p) => p.trim().toLowerCase());
  const wait = prefs.map((p) => /^wait\s*=\s*(\d+)$/.exec(p)?.[1]).find((w) => w !== undefined);
  return {
    respondAsync: prefs.includes("respond-async"),
    waitMs: wait === undefined ? DEFAULT_WAIT_MS : Math.min(Number(wait), MAX_WAIT_S) * 1000 || DEFAULT_WAIT_MS,
  };
}

const sendOrder = (reply: FastifyReply, order: OrderView, status = 200) => reply.code(status).header("etag", etagOf(order.version)).send(order);

/** The 201 or 202 answer of a placement, as sent and as stored with an idempotency key. */
function placedAnswer(result: Extract<PlacementResult, { kind: "placed" | "pending" }>) {
  const pending = result.kind === "pending";
  const headers: Record<string, string> = {
    location: `/api/v1/orders/${result.order.id}`,
    etag: etagOf(result.order.version),
    "content-type": "application/json; charset=utf-8",
    ...(pending ? { "preference-applied": "respond-async" } : {}),
  };
  return { status: pending ? 202 : 201, body: result.order, headers };
}

export function orderRoutes(deps: {
  database: Database;
  orders: Orders;
  placement: Placement;
  moves: OrderMoves;
  metrics: Metrics;
  idempotency: Idempotency;
  soldOutGate: SoldOutGate | undefined;
}): FastifyPluginAsyncZod {
  const { orders, placement, moves, metrics, database, idempotency, soldOutGate } = deps;
  return async (app) => {
    app.post(
      "/orders",
      {
        config: { idempotent: true },
        schema: {
          tags: ["orders"],
          operationId: "placeOrder", summary: "Place an order: stock, coupon, wallet and shipment document together or not at all",
          headers: PlacementHeaders,
          description:
            "Headers: `Idempotency-Key` (recommended), `Prefer: respond-async` or `Prefer: wait=N` (seconds, default 3). " +
            "201 with the order PAID (balance) or CREATED (external); 202 with the order still PENDING. " +
            "409 OUT_OF_STOCK, INSUFFICIENT_FUNDS or COUPON_UNAVAILABLE: nothing taken (in the split deployment the order recorded PENDING ends CANCELLED; its id is `orderId`); " +
            "OUT_OF_STOCK comes before any other check, with no order recorded, for a SKU refused for lack of stock a moment ago with no stock back since (the sold-out gate); " +
            "409 PLACEMENT_FAILED with `orderId` when a placement ended for another reason (a service did not answer in time), nothing taken. " +
            "The same Idempotency-Key with the same body answers the first answer again (header Idempotent-Replayed: true); " +
            "with another body 422 IDEMPOTENCY_KEY_REUSED; while the first still runs 409 IDEMPOTENCY_KEY_IN_USE. Keys are kept at least 24 h.",
          body: PlaceOrderBody,
          response: { 201: Order, 202: Order, ...problems(400, 401, 409, 422, 429) },
        },
      },
      async (request, reply) => {
        const { tenantId, userId } = request.identity!;
        const { items, couponCode, payment, shippingAddress } = request.body;
        // A SKU the database refused a moment ago, with no stock back since, is refused without a transaction.
        const gate = await soldOutGate?.check(tenantId, items);
        if (gate?.kind === "sold-out") {
          metrics.soldOutRefusals.inc();
          metrics.placements.inc({ outcome: "OUT_OF_STOCK" });
          throw new AppError("OUT_OF_STOCK", outOfStockDetail([gate.sku]));
        }
        const answer = answerOf(request, idempotency);
        // With no key there is no answer to store with the order: the placement is one statement, not a transaction.
        const record: RecordResult | undefined = answer.stores ? (tx, placed) => answer.record(tx, placedAnswer(placed)) : undefined;
        const result = await placement.place(
          { tenantId, userId, items, couponCode, paymentMethod: payment.method, shippingAddress },
          { ...parsePrefer(request.headers.prefer), ...(record ? { record } : {}) },
        );
        switch (result.kind) {
          case "placed":
          case "pending": {
            metrics.placements.inc({ outcome: result.kind });
            const { status, body, headers } = placedAnswer(result);
            return reply.code(status as 201 | 202).headers(headers).send(body);
          }
          case "refused":
            metrics.placements.inc({ outcome: result.reason });
            if (result.reason === "OUT_OF_STOCK" && gate) await soldOutGate?.learn(gate.ticket, skusShortIn(result.detail));
            throw new AppError(result.reason, result.detail, result.orderId ? { orderId: result.orderId } : {});
          case "invalid":
            metrics.placements.inc({ outcome: result.code });
            throw new AppError(result.code, result.detail);
        }
      },
    );

    app.get(
      "/orders",
      {
        schema: {
          tags: ["orders"],
          operationId: "listOrders",
          summary: "List orders, newest first (customers see their own; admins filter by userId), or find one by its number",
          querystring: ListOrdersQuery,
          response: { 200: OrderPage, ...problems(400, 401, 403) },
        },
      },
      async (request) => {
        const viewer = viewerOf(request);
        const { userId, orderNumber, status, limit, cursor } = request.query;
        if (userId !== undefined && !viewer.admin && userId !== viewer.userId) {
          throw new AppError("FORBIDDEN", "only admins may list other users' orders");
        }
        const after = cursorOf(cursor);
        return database.tenant(viewer.tenantId, (tx) => orders.listOrders(tx, viewer, { limit, status, userId, orderNumber, after }));
      },
    );

    app.get(
      "/orders/:id",
      { schema: { tags: ["orders"], operationId: "getOrder", summary: "Get an order", params: OrderParams, response: { 200: Order, ...problems(400, 401, 404) } } },
      async (request, reply) => {
        const viewer = viewerOf(request);
        const order = await database.tenant(viewer.tenantId, (tx) => orders.getOrder(tx, viewer, request.params.id));
        if (!order) throw new AppError("ORDER_NOT_FOUND", `no order ${request.params.id}`);
        return sendOrder(reply, order);
      },
    );

    const moveSchema = (operationId: string, summary: string) => ({
      tags: ["orders"],
      operationId,
      summary,
      description: 'Accepts `If-Match: W/"<version>"`; a stale version answers 412 VERSION_MISMATCH.',
      params: OrderParams,
      response: { 200: Order, ...problems(400, 401, 403, 404, 409, 412) },
    });

    app.post(
      "/orders/:id/cancel",
      {
        schema: {
          ...moveSchema("cancelOrder", "Cancel an order awaiting payment (owner or admin)"),
          description:
            "CREATED → CANCELLED: its stock and coupon come back. A PENDING order belongs to its placement and cannot be cancelled (409 INVALID_TRANSITION); " +
            'neither can one whose payment was captured. Accepts `If-Match: W/"<version>"`; a stale version answers 412 VERSION_MISMATCH.',
        },
      },
      async (request, reply) => {
        const order = await moves.cancel(viewerOf(request), request.params.id, expectedVersion(request));
        // Its stock is back (committed): clear the gate before answering, so the next order sees it.
        // Every other return of stock clears it when its announcement arrives (sold-out-gate.ts).
        await soldOutGate?.stockReturned(order.tenantId, order.items.map((i) => i.sku));
        return sendOrder(reply, order);
      },
    );

    app.post(
      "/orders/:id/ship",
      { onRequest: requireAdmin, schema: { ...moveSchema("shipOrder", "Ship a paid order (admin)"), body: ShipBody } },
      async (request, reply) => {
        const { carrier, trackingNumber } = request.body;
        const order = await moves.ship(viewerOf(request), request.params.id, { carrier, trackingNumber: trackingNumber ?? null }, expectedVersion(request));
        return sendOrder(reply, order);
      },
    );

    app.post("/orders/:id/complete", { schema: moveSchema("completeOrder", "Complete a shipped order (owner or admin)") }, async (request, reply) =>
      sendOrder(reply, await moves.complete(viewerOf(request), request.params.id, expectedVersion(request))),
    );
  };
}
