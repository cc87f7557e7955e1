import type { FastifyPluginAsyncZod } from "fastify-type-provider-zod";
import { decodeCursor } from "../../kit/cursor.ts";
import { AppError } from "../../kit/errors.ts";
import type { Database } from "../../db/client.ts";
import type { CachedCatalogue } from "../../modules/inventory/cached-catalogue.ts";
import type { SoldOutGate } from "../../kit/sold-out-gate.ts";
import type { Inventory } from "../../modules/inventory/inventory.ts";
import { requireAdmin } from "../context.ts";
import { ListQuery, Product, ProductPage, problems, PutProductBody, SkuParams, StockAdjustmentBody } from "../schemas.ts";

export const cursorOf = (text: string | undefined) => {
  if (text === undefined) return undefined;
  const cursor = decodeCursor(text);
  if (!cursor) throw new AppError("VALIDATION_FAILED", "the cursor is not valid", { errors: [{ path: "querystring.cursor", message: "is not a cursor from this API" }] });
  return cursor;
};

export function productRoutes(deps: { database: Database; inventory: Inventory; catalogue: CachedCatalogue; soldOutGate: SoldOutGate | undefined }): FastifyPluginAsyncZod {
  const { inventory, database, catalogue, soldOutGate } = deps;
  return async (app) => {
    app.put(
      "/products/:sku",
      {
        onRequest: requireAdmin,
        schema: {
          tags: ["products"],
          operationId: "putProduct", summary: "Create or update a product (admin)",
          params: SkuParams,
          body: PutProductBody,
          response: { 200: Product, 201: Product, ...problems(400, 401, 403, 409) },
        },
      },
      async (request, reply) => {
        const { tenantId } = request.identity!;
        const result = await database.tenant(tenantId, (tx) => inventory.putProduct(tx, { tenantId, sku: request.params.sku, ...request.body }));
        if (!result.ok) throw new AppError("USE_STOCK_ADJUSTMENT", "stock of an existing product changes only through POST /products/{sku}/stock");
        return reply.code(result.value.created ? 201 : 200).send(result.value.product);
      },
    );

    app.post(
      "/products/:sku/stock",
      {
        onRequest: requireAdmin,
        schema: {
          tags: ["products"],
          operationId: "adjustStock", summary: "Adjust the on-hand stock by delta (admin)",
          params: SkuParams,
          body: StockAdjustmentBody,
          response: { 200: Product, ...problems(400, 401, 403, 404, 409) },
        },
      },
      async (request) => {
        const { tenantId } = request.identity!;
        const result = await database.tenant(tenantId, (tx) => inventory.adjustStock(tx, { tenantId, sku: request.params.sku, delta: request.body.delta }));
        if (result.ok) {
          // Committed: clear the gate before answering (the announcement clears it too, a moment later).
          if (request.body.delta > 0) await soldOutGate?.stockReturned(tenantId, [request.params.sku]);
          return result.value;
        }
        throw result.reason === "PRODUCT_NOT_FOUND"
          ? new AppError("PRODUCT_NOT_FOUND", `no product ${request.params.sku}`)
          : new AppError("INSUFFICIENT_STOCK", result.detail ?? "stock cannot go below what is reserved");
      },
    );

    app.get(
      "/products",
      { schema: { tags: ["products"], operationId: "listProducts", summary: "List products, newest first", querystring: ListQuery, response: { 200: ProductPage, ...problems(400, 401) } } },
      async (request) => {
        const { tenantId } = request.identity!;
        const after = cursorOf(request.query.cursor);
        return database.tenant(tenantId, (tx) => inventory.listProducts(tx, tenantId, { limit: request.query.limit, after }));
      },
    );

    app.get(
      "/products/:sku",
      { schema: { tags: ["products"], operationId: "getProduct", summary: "Get a product", params: SkuParams, response: { 200: Product, ...problems(400, 401, 404) } } },
      async (request) => {
        const { tenantId } = request.identity!;
        const { sku } = request.params;
        // Name, price and currency from the cache; the stock count always from the database.
        const product = await database.tenant(tenantId, async (tx) => {
          const entry = (await catalogue.entries(tx, tenantId, [sku])).get(sku);
          const available = entry && (await inventory.availableOf(tx, tenantId, sku));
          return entry && available !== undefined ? { sku, ...entry, available } : undefined;
        });
        if (!product) throw new AppError("PRODUCT_NOT_FOUND", `no product ${sku}`);
        return product;
      },
    );
  };
}
