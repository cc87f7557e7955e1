import { createHmac } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { asOfEvent } from "../src/flows/consumers.ts";
import { isPublicAddress, post, urlRefusal } from "../src/modules/notifications/notifications.ts";
import type { OrderSnapshot, OrderView } from "../src/modules/orders/orders.ts";
import { openTestPostgres, postgresUrl } from "./support/databases.ts";
import { createHarness, type Harness } from "./support/harness.ts";

// Best-effort notifications to merchants (api-contract.md §7) against a real HTTP receiver that
// refuses, hangs, answers too late and then accepts: every attempt carries the same signed body,
// the attempts show in the order's timeline, and a delivery nobody accepts is given up.

type Mode = "ok" | "refuse" | "hang" | "late";

interface Received {
  body: string;
  headers: IncomingMessage["headers"];
}

/** A merchant's endpoint: answers each request as the next planned mode says (then "ok"). */
function receiver(timeoutMs: number) {
  const state = { received: [] as Received[], plan: [] as Mode[], server: undefined as unknown as Server, hanging: [] as ServerResponse[] };
  state.server = createServer((request, response) => {
    let body = "";
    request.on("data", (chunk) => (body += chunk));
    request.on("end", () => {
      state.received.push({ body, headers: request.headers });
      const mode = state.plan.shift() ?? "ok";
      if (mode === "ok") return response.writeHead(204).end();
      if (mode === "refuse") return response.writeHead(503).end("busy");
      if (mode === "late") return setTimeout(() => response.writeHead(200).end(), timeoutMs + 300);
      state.hanging.push(response);
    });
  });
  return state;
}

const TIMEOUT_MS = 400;

describe.runIf(postgresUrl())("webhooks to merchants (PostgreSQL)", () => {
  const endpoint = receiver(TIMEOUT_MS);
  let url: string;
  let h: Harness;
  let admin: string;
  let buyer: string;

  const deliverAll = async (until: () => boolean, ms = 15_000) => {
    const deadline = Date.now() + ms;
    while (!until()) {
      if (Date.now() > deadline) throw new Error("deliveries did not settle");
      await h.services.notifications.deliverDue();
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  const timelineOf = async (orderId: string) =>
    (await h.call("GET", `/api/v1/admin/orders/${orderId}/timeline`, { token: admin })).body.events as { kind: string; title: string; details: Record<string, unknown> }[];

  beforeAll(async () => {
    await new Promise<void>((resolve) => endpoint.server.listen(0, "127.0.0.1", resolve));
    url = `http://127.0.0.1:${(endpoint.server.address() as AddressInfo).port}/hooks`;
    h = await createHarness(await openTestPostgres({ max: 4 }), { notifications: { retryDelaysMs: [100, 200], giveUpAfterMs: 5_000, timeoutMs: TIMEOUT_MS } });
    admin = await h.token("hooks", "olga", ["admin"]);
    buyer = await h.token("hooks", "bea");
    await h.seed("hooks", { products: [["BOX", 500, 100]], credits: [["bea", 100_000]] });
  });
  afterAll(async () => {
    for (const response of endpoint.hanging) response.destroy();
    await h?.close();
    await new Promise<void>((resolve) => endpoint.server.close(() => resolve()));
  });

  it("registers, replaces, lists and deletes endpoints, admins only, each tenant its own", async () => {
    const created = await h.call("PUT", "/api/v1/webhook-endpoints/shop-1", { token: admin, body: { url, events: ["order.paid"] } });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ id: "shop-1", url, events: ["order.paid"], secret: expect.stringMatching(/^whsec_/) });
    const replaced = await h.call("PUT", "/api/v1/webhook-endpoints/shop-1", { token: admin, body: { url, events: ["order.paid", "order.cancelled"] } });
    expect(replaced.status).toBe(200);
    expect(replaced.body.secret).toBeUndefined();
    expect((await h.call("GET", "/api/v1/webhook-endpoints/shop-1", { token: admin })).body).toMatchObject({ events: ["order.paid", "order.cancelled"] });
    expect((await h.call("GET", "/api/v1/webhook-endpoints", { token: admin })).body.data.map((e: { id: string }) => e.id)).toEqual(["shop-1"]);

    const other = await h.token("elsewhere", "eve", ["admin"]);
    expect((await h.call("GET", "/api/v1/webhook-endpoints/shop-1", { token: other })).status).toBe(404);
    expect((await h.call("GET", "/api/v1/webhook-endpoints", { token: buyer })).status).toBe(403);
    for (const body of [{ url: "not a url", events: ["order.paid"] }, { url: "ftp://x/y", events: ["order.paid"] }, { url, events: ["order.lost"] }, { url, events: [] }]) {
      expect((await h.call("PUT", "/api/v1/webhook-endpoints/bad", { token: admin, body })).status, JSON.stringify(body)).toBe(400);
    }
    expect((await h.call("PUT", "/api/v1/webhook-endpoints/gone", { token: admin, body: { url, events: ["order.paid"] } })).status).toBe(201);
    expect((await h.call("DELETE", "/api/v1/webhook-endpoints/gone", { token: admin })).status).toBe(204);
    expect((await h.call("DELETE", "/api/v1/webhook-endpoints/gone", { token: admin })).status).toBe(404);
  });

  it("delivers an order event signed with the endpoint's secret, through refusals, silence and a late answer, always the same event", async () => {
    const secret = "merchant-secret-0123456789";
    expect((await h.call("PUT", "/api/v1/webhook-endpoints/shop-1", { token: admin, body: { url, events: ["order.paid", "order.cancelled"], secret } })).status).toBe(200);
    endpoint.received.length = 0;
    endpoint.plan.push("refuse", "hang", "late", "ok");

    const placed = await h.call("POST", "/api/v1/orders", { token: buyer, body: h.orderBody([["BOX", 1]]) });
    expect(placed.status).toBe(201);
    await h.quiesce();
    await deliverAll(() => endpoint.received.length >= 4 && endpoint.plan.length === 0);
    // The fourth attempt was accepted: nothing more is sent.
    await h.services.notifications.deliverDue();
    expect(endpoint.received).toHaveLength(4);

    const bodies = new Set(endpoint.received.map((r) => r.body));
    expect(bodies.size).toBe(1);
    const event = JSON.parse(endpoint.received[0]!.body);
    expect(event).toMatchObject({ type: "order.paid", tenantId: "hooks", data: { order: { id: placed.body.id, status: "PAID", orderNumber: placed.body.orderNumber } } });
    expect(event.id).toEqual(expect.any(String));
    for (const { body, headers } of endpoint.received) {
      const [, t, v1] = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(headers["orderly-signature"] as string) ?? [];
      expect(v1).toBe(createHmac("sha256", secret).update(`${t}.${body}`).digest("hex"));
      expect(headers["orderly-event-id"]).toBe(event.id);
    }

    const attempts = (await timelineOf(placed.body.id)).filter((e) => e.kind === "notification");
    expect(attempts.map((e) => e.title)).toEqual([
      "webhook order.paid to shop-1: 503",
      `webhook order.paid to shop-1: no answer within ${TIMEOUT_MS / 1000} s`,
      `webhook order.paid to shop-1: no answer within ${TIMEOUT_MS / 1000} s`,
      "webhook order.paid to shop-1: 204, delivered",
    ]);
  });

  it("sends only the events an endpoint asked for, and gives a delivery up once nobody accepted it for the whole retry period", async () => {
    expect((await h.call("PUT", "/api/v1/webhook-endpoints/shop-1", { token: admin, body: { url, events: ["order.cancelled"] } })).status).toBe(200);
    endpoint.received.length = 0;
    const paid = await h.call("POST", "/api/v1/orders", { token: buyer, body: h.orderBody([["BOX", 1]]) });
    await h.quiesce();
    await h.services.notifications.deliverDue();
    expect(endpoint.received).toEqual([]);
    expect((await timelineOf(paid.body.id)).filter((e) => e.kind === "notification")).toEqual([]);

    endpoint.plan.push(...Array<Mode>(50).fill("refuse"));
    const external = await h.call("POST", "/api/v1/orders", { token: buyer, body: h.orderBody([["BOX", 1]], { payment: { method: "external" } }) });
    expect((await h.call("POST", `/api/v1/orders/${external.body.id}/cancel`, { token: buyer })).status).toBe(200);
    await h.quiesce();
    const deadline = Date.now() + 20_000;
    let events = await timelineOf(external.body.id);
    while (!events.some((e) => e.kind === "notification" && /given up/.test(e.title))) {
      if (Date.now() > deadline) throw new Error(`not given up: ${JSON.stringify(events.filter((e) => e.kind === "notification"))}`);
      await h.services.notifications.deliverDue();
      await new Promise((r) => setTimeout(r, 100));
      events = await timelineOf(external.body.id);
    }
    const tries = events.filter((e) => e.kind === "notification");
    expect(tries.length).toBeGreaterThanOrEqual(3);
    expect(tries.at(-1)?.title).toBe("webhook order.cancelled to shop-1: 503, given up");
    const before = endpoint.received.length;
    await new Promise((r) => setTimeout(r, 300));
    await h.services.notifications.deliverDue();
    expect(endpoint.received.length).toBe(before);
    endpoint.plan.length = 0;
  });

  it("gives up what a deleted endpoint still had to receive, even with an attempt in flight, and never sends one delivery from two senders", async () => {
    expect((await h.call("PUT", "/api/v1/webhook-endpoints/shop-1", { token: admin, body: { url, events: ["order.paid"] } })).status).toBe(200);
    endpoint.received.length = 0;
    endpoint.plan.push("hang");
    const placed = await h.call("POST", "/api/v1/orders", { token: buyer, body: h.orderBody([["BOX", 1]]) });
    await h.quiesce();
    const sending = h.services.notifications.deliverDue();
    await deliverAll(() => endpoint.received.length === 1);
    expect((await h.call("DELETE", "/api/v1/webhook-endpoints/shop-1", { token: admin })).status).toBe(204);
    await sending;
    await new Promise((r) => setTimeout(r, 300));
    await h.services.notifications.deliverDue();
    expect(endpoint.received).toHaveLength(1);
    const tries = (await timelineOf(placed.body.id)).filter((e) => e.kind === "notification").map((e) => e.title);
    expect(tries).toEqual([`webhook order.paid to shop-1: no answer within ${TIMEOUT_MS / 1000} s`, "webhook order.paid to shop-1: given up (the endpoint was deleted)"]);

    // Ten orders' events, three senders at once: each event reaches the endpoint once.
    expect((await h.call("PUT", "/api/v1/webhook-endpoints/twin", { token: admin, body: { url, events: ["order.paid"] } })).status).toBe(201);
    endpoint.received.length = 0;
    for (let i = 0; i < 10; i++) expect((await h.call("POST", "/api/v1/orders", { token: buyer, body: h.orderBody([["BOX", 1]]) })).status).toBe(201);
    // (The events reach the fan-out through the relay: keep sending until all ten arrived.)
    const deadline = Date.now() + 15_000;
    while (endpoint.received.length < 10 && Date.now() < deadline) {
      await Promise.all([1, 2, 3].map(() => h.services.notifications.deliverDue()));
      await new Promise((r) => setTimeout(r, 50));
    }
    await new Promise((r) => setTimeout(r, 300));
    await Promise.all([1, 2, 3].map(() => h.services.notifications.deliverDue()));
    const ids = endpoint.received.map((r) => JSON.parse(r.body).id as string);
    expect(ids).toHaveLength(10);
    expect(new Set(ids).size).toBe(10);
  });
});

describe("the order in a webhook", () => {
  it("is the order as of its event when the order has moved on since", () => {
    const at = (m: number) => new Date(Date.UTC(2026, 0, 1, 0, m)).toISOString();
    const now: OrderView = {
      id: "ord_1", orderNumber: "ORD-1", tenantId: "t", userId: "u", status: "CANCELLED", version: 3,
      items: [{ sku: "BOX", name: "Box", quantity: 1, unitPrice: 500, lineTotal: 500 }], subtotal: 500, discount: 0, total: 500, currency: "CNY", couponCode: null,
      payment: { method: "external", status: "voided", externalTxnId: null }, shipment: { waybill: "WB1", carrier: null, trackingNumber: null, status: "cancelled" },
      shippingAddress: { name: "A", phone: "1", line1: "l", city: "c", country: "CN" }, cancelReason: "CUSTOMER_CANCELLED",
      history: [{ from: null, to: "PENDING", at: at(0), reason: "placed" }, { from: "PENDING", to: "CREATED", at: at(1), reason: null }, { from: "CREATED", to: "CANCELLED", at: at(2), reason: "CUSTOMER_CANCELLED" }],
      createdAt: at(0), updatedAt: at(2),
    };
    const created: OrderSnapshot = {
      id: "ord_1", tenantId: "t", userId: "u", status: "CREATED", version: 2, total: 500, currency: "CNY", paymentMethod: "external", paymentStatus: "pending",
      externalTxnId: null, cancelReason: null, shipment: { waybill: "WB1", carrier: null, trackingNumber: null, status: "pending" },
    };
    expect(asOfEvent(now, created)).toMatchObject({ status: "CREATED", version: 2, cancelReason: null, payment: { status: "pending" }, shipment: { status: "pending" }, updatedAt: at(1) });
    expect(asOfEvent(now, created).history.map((m) => m.to)).toEqual(["PENDING", "CREATED"]);
    expect(asOfEvent(now, { ...created, status: "CANCELLED", version: 3 })).toBe(now);
  });
});

describe("webhook URLs", () => {
  it("accepts any http(s) URL outside production, only https to public addresses in production", () => {
    expect(urlRefusal("http://127.0.0.1:9000/hooks", false)).toBeUndefined();
    expect(urlRefusal("https://shop.example.com/hooks", true)).toBeUndefined();
    expect(urlRefusal("http://shop.example.com/hooks", true)).toBe("must be https in production");
    for (const address of ["https://127.0.0.1/", "https://10.1.2.3/", "https://169.254.169.254/latest", "https://[::1]/", "https://192.168.0.1/", "https://100.64.0.1/", "https://[::ffff:127.0.0.1]/"]) {
      expect(urlRefusal(address, true), address).toBe("must be a public address in production");
    }
    expect(urlRefusal("https://user:pw@shop.example.com/", false)).toBe("must not carry credentials");
    expect(isPublicAddress("93.184.216.34")).toBe(true);
    expect(isPublicAddress("2606:2800:220:1:248:1893:25c8:1946")).toBe(true);
  });

  it("in production never connects to a name that resolves to a private address, checked when connecting", async () => {
    const result = await post("https://localhost:9/hooks", "{}", {}, true, 1_000);
    expect(result).toMatchObject({ statusCode: null, error: "localhost resolves to no public address" });
  });
});
