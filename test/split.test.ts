import { createHmac } from "node:crypto";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { sql } from "drizzle-orm";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { operations } from "../client/index.ts";
import type { ServiceName } from "../src/config.ts";
import { rows } from "../src/db/client.ts";
import { postgresUrl } from "./support/databases.ts";
import { ADDRESS } from "./support/harness.ts";
import { amqpUrl, type Deployment, type Layout, startDeployment, tailOfLogs, waitFor } from "./support/split.ts";

const SERVICES: ServiceName[] = ["inventory", "payments", "coupons", "shipping", "orders"];
const LAYOUTS: { layout: Layout; name: string }[] = [
  { layout: "shared", name: "one shared database" },
  { layout: "per-service", name: "a database per service" },
];

type PlaceOrderBody = operations["placeOrder"]["requestBody"]["content"]["application/json"];
type PaymentCallbackBody = operations["paymentCallback"]["requestBody"]["content"]["application/json"];

// Every call goes through the typed client (client/), so its path, parameters, body and answer are
// checked against the OpenAPI document.
describe.runIf(postgresUrl() && amqpUrl()).each(LAYOUTS)("split deployment on $name: five processes, PostgreSQL and RabbitMQ", ({ layout }) => {
  let d: Deployment;
  const admin = () => d.tokens.sign({ tenantId: "split", userId: "root", roles: ["admin"] });
  const buyer = (userId: string) => d.tokens.sign({ tenantId: "split", userId, roles: ["customer"] });
  const order: PlaceOrderBody = { items: [{ sku: "S1", quantity: 1 }], payment: { method: "balance" }, shippingAddress: ADDRESS };
  /** A service's client as the admin. */
  const asAdmin = async (service: ServiceName) => d.client(service, await admin());
  const putProduct = async (sku: string, product: { name: string; price: number; stock: number }) =>
    (await asAdmin("inventory")).PUT("/api/v1/products/{sku}", { params: { path: { sku } }, body: product });
  const credit = async (userId: string, amount: number) =>
    (await asAdmin("payments")).POST("/api/v1/accounts/{userId}/credits", { params: { path: { userId } }, body: { amount } });
  const place = (token: string, body: PlaceOrderBody, options: { prefer?: string; replica?: string } = {}) =>
    d.client("orders", token, options.replica).POST("/api/v1/orders", { params: { header: { prefer: options.prefer } }, body });
  const getOrder = (token: string, id: string) => d.client("orders", token).GET("/api/v1/orders/{id}", { params: { path: { id } } });
  const timeline = async (id: string) => (await asAdmin("orders")).GET("/api/v1/admin/orders/{id}/timeline", { params: { path: { id } } });
  /** A payment callback signed over the very bytes sent (no JWT: the signature is its authentication). */
  const paymentCallback = (body: PaymentCallbackBody) => {
    const raw = JSON.stringify(body);
    return d.client("payments").POST("/api/v1/payments/callback", { params: { header: { "orderly-signature": d.signCallback(raw) } }, body, bodySerializer: () => raw });
  };

  beforeAll(async () => {
    d = await startDeployment({ layout });
    // A product made before the orders service first ran: its event must wait for that service's queue.
    await d.start("inventory");
    expect((await putProduct("EARLY", { name: "Early bird", price: 300, stock: 5 })).response.status).toBe(201);
    for (const service of SERVICES.filter((s) => s !== "inventory")) await d.start(service);
  }, 120_000);

  afterEach((context) => {
    if (context.task.result?.state === "fail") process.stderr.write(`${tailOfLogs(d)}\n`);
  });

  afterAll(async () => {
    await d?.close();
  });

  it("keeps every invariant when the inventory service is killed with -9 in the middle of 320 orders", { timeout: 180_000 }, async () => {
    const buyers = await Promise.all(Array.from({ length: 40 }, (_, i) => buyer(`b${i}`)));
    expect((await putProduct("HOT", { name: "Hot", price: 500, stock: 120 })).response.status).toBe(201);
    for (let i = 0; i < 5; i++) await putProduct(`S${i}`, { name: `S${i}`, price: 100 + i, stock: 60 });
    for (let i = 0; i < 40; i++) await credit(`b${i}`, 2_500);
    await (await asAdmin("coupons")).PUT("/api/v1/coupons/{code}", { params: { path: { code: "SPLIT" } }, body: { discount: { type: "percent", value: 10 }, maxRedemptions: 30 } });
    await waitFor(async () => (await rows(d.db("orders"), sql`select 1 from order_catalogue where tenant_id = 'split' and sku <> 'EARLY'`)).length === 6, "the catalogue copy", 15_000);

    const body = (i: number): PlaceOrderBody => ({
      items: i % 2 ? [{ sku: "HOT", quantity: 1 + (i % 2) }] : [{ sku: `S${i % 5}`, quantity: 2 }, { sku: "HOT", quantity: 1 }],
      payment: { method: i % 4 === 0 ? "external" : "balance" },
      ...(i % 3 === 0 ? { couponCode: "SPLIT" } : {}),
      shippingAddress: ADDRESS,
    });
    const answers: ReturnType<typeof place>[] = [];
    for (let i = 0; i < 320; i++) {
      answers.push(place(buyers[i % 40] as string, body(i)));
      if (i === 100) {
        await d.kill("inventory");
        await new Promise((r) => setTimeout(r, 1_000));
        await d.start("inventory");
      }
      if (i % 20 === 0) await new Promise((r) => setTimeout(r, 25));
    }
    const results = await Promise.all(answers);
    expect(results.filter((r) => r.response.status >= 500).map((r) => r.error)).toEqual([]);
    expect(results.every((r) => [201, 202, 409].includes(r.response.status))).toBe(true);

    // Once load stops, no order stays PENDING longer than 30 s, the outbox and sagas drain, and no
    // reservation outlives its order.
    expect(await d.settle()).toEqual([]);
    const statuses = await rows<{ status: string; n: number }>(d.db("orders"), sql`select status, count(*)::int as n from orders where tenant_id = 'split' group by status`);
    const count = (status: string) => statuses.find((s) => s.status === status)?.n ?? 0;
    expect(count("PAID") + count("CREATED")).toBeGreaterThan(0);
    expect(count("CANCELLED")).toBeGreaterThan(0); // the hot SKU sold out
    const [hot] = await rows<{ available: string; reserved: string; sold: string }>(d.db("inventory"), sql`select available, reserved, sold from stock_levels where sku = 'HOT'`);
    expect(Number(hot?.available) + Number(hot?.reserved) + Number(hot?.sold)).toBe(120);
  });

  it("answers 202 and settles later when a participant is down, then resumes the saga after it returns", { timeout: 120_000 }, async () => {
    const late = await buyer("late");
    await credit("late", 10_000);
    await d.kill("shipping");
    const placed = await place(late, order);
    expect(placed.response.status).toBe(202);
    expect(placed.data?.status).toBe("PENDING");
    const id = placed.data!.id;
    // The 202 is the order as recorded (not read back after its insert): what reading it gives while it waits.
    expect((await getOrder(late, id)).data).toEqual(placed.data);
    await d.start("shipping");
    await waitFor(async () => (await getOrder(late, id)).data?.status !== "PENDING", "the order to settle", 30_000);
    expect((await getOrder(late, id)).data).toMatchObject({ status: "PAID", shipment: { status: "pending" } });
    expect(await d.settle()).toEqual([]);
  });

  it("answers each request with its outcome when a second orders replica consumes half the replies", { timeout: 60_000 }, async () => {
    await d.start("orders", "-2");
    const twin = await buyer("twin");
    await credit("twin", 100_000);
    const statuses: number[] = [];
    for (let i = 0; i < 16; i++) {
      // A generous wait: this is about which replica learns the outcome, not about speed.
      const { response } = await place(twin, { ...order, items: [{ sku: "S3", quantity: 1 }] }, { prefer: "wait=10", replica: i % 2 ? "-2" : "" });
      statuses.push(response.status);
    }
    expect(statuses).toEqual(Array(16).fill(201));
    await d.kill("orders", "-2", "SIGTERM");
  });

  it("sells a product created before the orders service ever started", { timeout: 60_000 }, async () => {
    const early = await buyer("early");
    await credit("early", 1_000);
    await waitFor(async () => (await rows(d.db("orders"), sql`select 1 from order_catalogue where tenant_id = 'split' and sku = 'EARLY'`)).length === 1, "EARLY in the catalogue copy", 15_000);
    const placed = await place(early, { ...order, items: [{ sku: "EARLY", quantity: 2 }] }, { prefer: "wait=10" });
    expect(placed.response.status).toBe(201);
    expect(placed.data).toMatchObject({ status: "PAID", total: 600, items: [{ sku: "EARLY", name: "Early bird", unitPrice: 300 }] });
    expect(await d.settle()).toEqual([]);
  });

  it("takes the payment callback at the payments service and pays the order at the orders service", { timeout: 60_000 }, async () => {
    const ext = await buyer("ext");
    const placed = await place(ext, { ...order, items: [{ sku: "S2", quantity: 1 }], payment: { method: "external" } });
    expect(placed.data?.status).toBe("CREATED");
    const { id, total } = placed.data!;
    await waitFor(() => d.quiet(), "the payments service's copy of the order", 15_000);
    const paid = await paymentCallback({ tenantId: "split", orderId: id, externalTxnId: "txn-split-1", amount: total, currency: "CNY", status: "succeeded" });
    expect(paid.response.status).toBe(200);
    expect(paid.data).toEqual({ orderId: id, status: "PAID", duplicate: false });
    await waitFor(async () => (await getOrder(ext, id)).data?.status === "PAID", "the order to be paid", 15_000);
    const view = (await getOrder(ext, id)).data;
    expect(view).toMatchObject({ status: "PAID", payment: { status: "captured", externalTxnId: "txn-split-1" } });
    expect(view?.shipment?.waybill).toMatch(/^WB/);
    // Its timeline at the orders service shows the payment as the orders service heard of it, never the
    // payments service's own table, even where both share one database (invariant 6).
    const history = await timeline(id);
    expect(history.response.status).toBe(200);
    const events = history.data!.events;
    expect(events.filter((e) => e.kind === "state").map((e) => e.title)).toContainEqual(expect.stringMatching(/^CREATED → PAID/));
    expect(events.map((e) => e.kind)).not.toContain("payment");
    expect(await d.settle()).toEqual([]);
  });

  it("ships and completes an order at the orders service, and the shipping service's document follows", { timeout: 60_000 }, async () => {
    const shopper = await buyer("shopper");
    await credit("shopper", 10_000);
    const placed = await place(shopper, order, { prefer: "wait=10" });
    expect(placed.response.status).toBe(201);
    const id = placed.data!.id;
    const shipped = await (await asAdmin("orders")).POST("/api/v1/orders/{id}/ship", { params: { path: { id } }, body: { carrier: "SF", trackingNumber: "SF123" } });
    expect(shipped.response.status).toBe(200);
    expect(shipped.data?.shipment).toMatchObject({ carrier: "SF", trackingNumber: "SF123", status: "shipped" });
    await waitFor(async () => {
      const [document] = await rows<{ status: string; carrier: string }>(d.db("shipping"), sql`select status, carrier from shipments where order_id = ${id}`);
      return document?.status === "shipped" && document.carrier === "SF";
    }, "the shipment document to be shipped", 15_000);
    expect((await d.client("orders", shopper).POST("/api/v1/orders/{id}/complete", { params: { path: { id } } })).response.status).toBe(200);
    await waitFor(async () => {
      const [document] = await rows<{ status: string }>(d.db("shipping"), sql`select status from shipments where order_id = ${id}`);
      return document?.status === "delivered";
    }, "the shipment document to be delivered", 15_000);
    expect(await d.settle()).toEqual([]);
  });

  it("refuses to cancel an order that is still being placed, and takes nothing twice", { timeout: 60_000 }, async () => {
    const hasty = await buyer("hasty");
    await credit("hasty", 20 * 101);
    const ids: string[] = [];
    for (let i = 0; i < 20; i++) {
      const placed = await place(hasty, order, { prefer: "respond-async" });
      expect(placed.response.status).toBe(202);
      const id = placed.data!.id;
      ids.push(id);
      const cancelled = await d.client("orders", hasty).POST("/api/v1/orders/{id}/cancel", { params: { path: { id } } });
      // PENDING is the placement's to settle; once settled a wallet-paid order is PAID, not cancellable.
      expect(cancelled.response.status).toBe(409);
      expect(cancelled.error?.code).toBe("INVALID_TRANSITION");
    }
    expect(await d.settle()).toEqual([]);
    const placedOrders = await rows<{ status: string }>(d.db("orders"), sql`select status from orders where user_id = 'hasty'`);
    expect(placedOrders.map((o) => o.status)).toEqual(Array(20).fill("PAID"));
    expect((await d.client("payments", hasty).GET("/api/v1/accounts/me")).data?.balance).toBe(0);
  });

  it("answers a callback for a wallet-paid order 409 ORDER_NOT_PAYABLE and keeps the money to refund, as the all-in-one does", { timeout: 60_000 }, async () => {
    const wallet = await buyer("wallet");
    await credit("wallet", 1_000);
    const placed = await place(wallet, order, { prefer: "wait=10" });
    expect(placed.data?.status).toBe("PAID");
    const { id, total } = placed.data!;
    await waitFor(() => d.quiet(), "the payments service's copy of the order", 15_000);
    const answer = await paymentCallback({ tenantId: "split", orderId: id, externalTxnId: "txn-stray", amount: total, currency: "CNY", status: "succeeded" });
    expect(answer.response.status).toBe(409);
    expect(answer.error).toMatchObject({ code: "ORDER_NOT_PAYABLE", orderId: id });
    const [kept] = await rows<{ status: string }>(d.db("payments"), sql`select status from payments where order_id = ${id}`);
    expect(kept?.status).toBe("refund_pending");
  });

  it("sends a merchant's webhook from the orders service once the saga paid the order", { timeout: 60_000 }, async () => {
    const received: { body: string; signature: string }[] = [];
    const merchant = createServer((request, response) => {
      let body = "";
      request.on("data", (chunk) => (body += chunk));
      request.on("end", () => {
        received.push({ body, signature: request.headers["orderly-signature"] as string });
        response.writeHead(200).end();
      });
    });
    await new Promise<void>((resolve) => merchant.listen(0, "127.0.0.1", resolve));
    try {
      const url = `http://127.0.0.1:${(merchant.address() as AddressInfo).port}/orderly`;
      const secret = "split-merchant-secret-0123";
      const endpoint = await (await asAdmin("orders")).PUT("/api/v1/webhook-endpoints/{id}", { params: { path: { id: "erp" } }, body: { url, events: ["order.paid"], secret } });
      expect(endpoint.response.status).toBe(201);
      const hooked = await buyer("hooked");
      expect((await putProduct("HOOK", { name: "Hooked", price: 250, stock: 5 })).response.status).toBe(201);
      await credit("hooked", 1_000);
      await waitFor(() => d.quiet(), "the catalogue copy", 15_000);
      const placed = await place(hooked, { ...order, items: [{ sku: "HOOK", quantity: 1 }] }, { prefer: "wait=10" });
      expect(placed.data?.status).toBe("PAID");
      const id = placed.data!.id;
      await waitFor(async () => received.some((r) => JSON.parse(r.body).data.order.id === id), "the webhook of the order", 20_000);
      const delivery = received.find((r) => JSON.parse(r.body).data.order.id === id)!;
      expect(JSON.parse(delivery.body)).toMatchObject({ type: "order.paid", tenantId: "split", data: { order: { id, status: "PAID" } } });
      const [, t, v1] = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(delivery.signature) ?? [];
      expect(v1).toBe(createHmac("sha256", secret).update(`${t}.${delivery.body}`).digest("hex"));
      // The attempt is recorded just after the merchant answered.
      await waitFor(
        async () => (await timeline(id)).data?.events.some((e) => e.title === "webhook order.paid to erp: 200, delivered") ?? false,
        "the delivery in the order's timeline",
        5_000,
      );
    } finally {
      await (await asAdmin("orders")).DELETE("/api/v1/webhook-endpoints/{id}", { params: { path: { id: "erp" } } });
      await new Promise<void>((resolve) => merchant.close(() => resolve()));
    }
  });
});
