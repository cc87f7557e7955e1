import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createOrderlyClient, type OrderlyClient } from "../client/index.ts";
import { loadConfig } from "../src/config.ts";
import { type Running, startServer } from "../src/server.ts";

// End to end over real HTTP with the typed client generated from the committed OpenAPI document
// (client/): a wrong path, parameter or body would not compile, so this also checks the document
// describes what the server does.
const dataDir = mkdtempSync(join(tmpdir(), "orderly-e2e-"));
let running: Running;
let admin: OrderlyClient;
let alice: OrderlyClient;
let bob: OrderlyClient;
const address = { name: "Alice", phone: "+86 10 5555 0100", line1: "1 Test Road", city: "Beijing", country: "CN" };

beforeAll(async () => {
  running = await startServer(
    loadConfig({ PORT: "0", ORDERLY_DATA_DIR: dataDir, LOG_LEVEL: "silent", ORDERLY_JWT_SECRET: "e2e-secret-e2e-secret-e2e-secret-0123", ORDERLY_WEBHOOK_SECRET: "e2e-webhook-secret-0123" }),
    { demo: false },
  );
  const token = (userId: string, roles: ("customer" | "admin")[]) => running.services.tokens.sign({ tenantId: "e2e", userId, roles });
  admin = createOrderlyClient(running.url, { token: await token("root", ["admin"]) });
  alice = createOrderlyClient(running.url, { token: await token("alice", ["customer"]) });
  bob = createOrderlyClient(running.url, { token: await token("bob", ["customer"]) });
  for (const [sku, price, stock] of [["MUG", 1_500, 5], ["PEN", 300, 100]] as const) {
    const put = await admin.PUT("/api/v1/products/{sku}", { params: { path: { sku } }, body: { name: sku, price, stock } });
    expect(put.response.status).toBe(201);
  }
  expect((await admin.POST("/api/v1/accounts/{userId}/credits", { params: { path: { userId: "alice" } }, body: { amount: 10_000 } })).response.status).toBe(200);
});
afterAll(async () => {
  await running?.close();
  rmSync(dataDir, { recursive: true, force: true });
});

describe("the API through its typed client", () => {
  it("places an order once per Idempotency-Key, with its Location, ETag and wallet debit", async () => {
    const body = { items: [{ sku: "MUG", quantity: 2 }], payment: { method: "balance" as const }, shippingAddress: address };
    const placed = await alice.POST("/api/v1/orders", { params: { header: { "idempotency-key": "e2e-1" } }, body });
    expect(placed.response.status).toBe(201);
    const order = placed.data!;
    expect(order).toMatchObject({ status: "PAID", total: 3_000, items: [{ sku: "MUG", quantity: 2 }] });
    expect(placed.response.headers.get("location")).toBe(`/api/v1/orders/${order.id}`);
    expect(placed.response.headers.get("etag")).toBe(`W/"${order.version}"`);

    const replayed = await alice.POST("/api/v1/orders", { params: { header: { "idempotency-key": "e2e-1" } }, body });
    expect(replayed.response.headers.get("idempotent-replayed")).toBe("true");
    expect(replayed.data?.id).toBe(order.id);
    expect((await alice.GET("/api/v1/accounts/me")).data?.balance).toBe(7_000);
    expect((await alice.GET("/api/v1/orders/{id}", { params: { path: { id: order.id } } })).data?.id).toBe(order.id);
    // Another customer does not see it.
    expect((await bob.GET("/api/v1/orders/{id}", { params: { path: { id: order.id } } })).error?.code).toBe("ORDER_NOT_FOUND");
  });

  it("answers refusals as typed problems: out of stock, a stale If-Match, a cancel that is not allowed", async () => {
    const tooMany = await alice.POST("/api/v1/orders", { body: { items: [{ sku: "MUG", quantity: 4 }], payment: { method: "balance" }, shippingAddress: address } });
    expect(tooMany.response.status).toBe(409);
    expect(tooMany.response.headers.get("content-type")).toMatch(/^application\/problem\+json/);
    expect(tooMany.error).toMatchObject({ code: "OUT_OF_STOCK", status: 409 });

    const external = await alice.POST("/api/v1/orders", { body: { items: [{ sku: "PEN", quantity: 1 }], payment: { method: "external" }, shippingAddress: address } });
    expect(external.data?.status).toBe("CREATED");
    const id = external.data!.id;
    const stale = await alice.POST("/api/v1/orders/{id}/cancel", { params: { path: { id }, header: { "if-match": 'W/"999"' } } });
    expect(stale.error?.code).toBe("VERSION_MISMATCH");
    const cancelled = await alice.POST("/api/v1/orders/{id}/cancel", { params: { path: { id }, header: { "if-match": `W/"${external.data!.version}"` } } });
    expect(cancelled.data).toMatchObject({ status: "CANCELLED", cancelReason: "CUSTOMER_CANCELLED" });
    const again = await alice.POST("/api/v1/orders/{id}/cancel", { params: { path: { id } } });
    expect(again.error?.code).toBe("INVALID_TRANSITION");
    expect((await admin.GET("/api/v1/products/{sku}", { params: { path: { sku: "PEN" } } })).data?.available).toBe(100);
  });

  it("lists the caller's orders newest first, and shows an admin the order's timeline", async () => {
    const list = await alice.GET("/api/v1/orders", { params: { query: { limit: 10 } } });
    expect(list.data?.data.map((o) => o.status)).toEqual(["CANCELLED", "PAID"]);
    const paid = list.data!.data[1]!;
    const timeline = await admin.GET("/api/v1/admin/orders/{id}/timeline", { params: { path: { id: paid.id } } });
    expect(timeline.response.status).toBe(200);
    expect(JSON.stringify(timeline.data)).toContain("PAID");
    expect((await alice.GET("/api/v1/admin/sagas")).error?.code).toBe("FORBIDDEN");
  });
});
