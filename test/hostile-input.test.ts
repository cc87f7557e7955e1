import { sql } from "drizzle-orm";
import Fastify from "fastify";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { registerProblemHandlers } from "../src/http/problem.ts";
import { testDatabases } from "./support/databases.ts";
import { ADDRESS, createHarness, type Harness } from "./support/harness.ts";

// Text PostgreSQL refuses (U+0000) or cannot encode (a lone UTF-16 surrogate), and control characters
// in human text: each is a 400 VALIDATION_FAILED naming the field, never a 500 from the database.
const NUL = "a\u0000b";
const SURROGATE = "a\ud800b";
const cursorWith = (key: string) => Buffer.from(JSON.stringify({ t: new Date().toISOString(), k: key })).toString("base64url");

describe.each(testDatabases())("hostile text at the edge on $name", (database) => {
  let h: Harness;
  let admin: string;
  let cus: string;
  let orderId: string;

  beforeAll(async () => {
    h = await createHarness(await database.open());
    admin = await h.token("edge", "root", ["admin"]);
    cus = await h.token("edge", "cus");
    await h.seed("edge", { products: [["MUG", 100, 10]], credits: [["cus", 10_000]] });
    orderId = (await h.call("POST", "/api/v1/orders", { token: cus, body: h.orderBody([["MUG", 1]], { payment: { method: "external" } }) })).body.id;
  });
  afterAll(() => h.close());

  /** Sends the request and expects 400 VALIDATION_FAILED with an error at `path`. */
  const refused = async (method: "GET" | "POST" | "PUT", url: string, path: string, options: { token?: string; body?: unknown; headers?: Record<string, string> } = {}) => {
    const r = await h.call(method, url, { token: admin, ...options });
    const where = `${method} ${JSON.stringify(url)} ${JSON.stringify(options.body)}: ${r.status} ${JSON.stringify(r.body)}`;
    expect(r.status, where).toBe(400);
    expect(r.headers["content-type"], where).toContain("application/problem+json");
    expect(r.body.code, where).toBe("VALIDATION_FAILED");
    expect(r.body.errors.map((e: { path: string }) => e.path), where).toContain(path);
  };

  it("refuses a percent-encoded NUL in an order id path", async () => {
    await refused("GET", "/api/v1/orders/%00", "params.id", { token: cus });
    await refused("GET", "/api/v1/orders/ord%00x", "params.id", { token: cus });
    for (const move of ["cancel", "complete", "ship"]) await refused("POST", `/api/v1/orders/a%00b/${move}`, "params.id", { body: move === "ship" ? { carrier: "SF" } : undefined });
    // A lone surrogate cannot be percent-encoded as UTF-8 at all: its CESU-8 bytes make the URL invalid.
    const r = await h.call("GET", "/api/v1/orders/%ED%A0%80", { token: cus });
    expect([r.status, r.body.code]).toEqual([400, "VALIDATION_FAILED"]);
  });

  it("refuses a NUL in a SKU, coupon code or user id path", async () => {
    await refused("GET", "/api/v1/products/%00", "params.sku");
    await refused("PUT", "/api/v1/products/SKU%00", "params.sku", { body: { name: "x", price: 1 } });
    await refused("POST", "/api/v1/products/MUG%00/stock", "params.sku", { body: { delta: 1 } });
    await refused("GET", "/api/v1/coupons/C%00", "params.code");
    await refused("PUT", "/api/v1/coupons/C%00", "params.code", { body: { discount: { type: "amount", value: 1 } } });
    await refused("GET", "/api/v1/accounts/%00", "params.userId");
    await refused("POST", "/api/v1/accounts/cus%00/credits", "params.userId", { body: { amount: 1 } });
  });

  it("refuses a cursor that is, or decodes to a key holding, a NUL or a lone surrogate", async () => {
    for (const list of ["/api/v1/orders", "/api/v1/products"]) {
      await refused("GET", `${list}?cursor=%00`, "querystring.cursor");
      await refused("GET", `${list}?cursor=${cursorWith(NUL)}`, "querystring.cursor");
      await refused("GET", `${list}?cursor=${cursorWith(SURROGATE)}`, "querystring.cursor");
    }
    await refused("GET", "/api/v1/orders?userId=cus%00", "querystring.userId");
  });

  it("refuses NUL, a lone surrogate or a control character in an address field, placing nothing", async () => {
    const before = (await h.call("GET", "/api/v1/orders", { token: cus })).body.data.length;
    for (const field of ["name", "phone", "line1", "line2", "city", "postalCode"]) {
      for (const text of [NUL, SURROGATE, "a\u0007b", "\u001b[31mred", "two\nlines"]) {
        await refused("POST", "/api/v1/orders", `body.shippingAddress.${field}`, { token: cus, body: h.orderBody([["MUG", 1]], { shippingAddress: { ...ADDRESS, [field]: text } }) });
      }
    }
    expect((await h.call("GET", "/api/v1/orders", { token: cus })).body.data).toHaveLength(before);
    expect((await h.call("GET", "/api/v1/products/MUG", { token: cus })).body.available).toBe(9);
  });

  it("refuses hostile text in the other body fields too: SKU, coupon code, names, carriers, member names", async () => {
    await refused("POST", "/api/v1/orders", "body.items.0.sku", { token: cus, body: h.orderBody([[`MUG${"\u0000"}`, 1]]) });
    await refused("POST", "/api/v1/orders", "body.couponCode", { token: cus, body: h.orderBody([["MUG", 1]], { couponCode: NUL }) });
    await refused("PUT", "/api/v1/products/NEW", "body.name", { body: { name: NUL, price: 1 } });
    await refused("PUT", "/api/v1/products/NEW", "body.name", { body: { name: SURROGATE, price: 1 } });
    await refused("POST", `/api/v1/orders/${orderId}/ship`, "body.carrier", { body: { carrier: NUL } });
    await refused("POST", "/api/v1/orders", "body.\u0000", { token: cus, body: { ...h.orderBody([["MUG", 1]]), "\u0000": 1 } });
    // A raw (unescaped) NUL inside a JSON string is not JSON at all.
    const raw = await h.app.inject({ method: "POST", url: "/api/v1/orders", headers: { authorization: `Bearer ${cus}`, "content-type": "application/json" }, payload: '{"couponCode":"a\u0000b"}' });
    expect([raw.statusCode, raw.json().code]).toEqual([400, "MALFORMED_JSON"]);
    expect((await h.call("GET", "/api/v1/products/NEW", { token: admin })).status).toBe(404);
  });

  it("finds a NUL at any depth of a deeply nested body, and reports the shallowest first", async () => {
    const deep = `{"items":${'["\\u0000",'.repeat(90_000)}1${"]".repeat(90_000)}}`;
    const r = await h.app.inject({ method: "POST", url: "/api/v1/orders", headers: { authorization: `Bearer ${cus}`, "content-type": "application/json" }, payload: deep });
    expect([r.statusCode, r.json().code]).toEqual([400, "VALIDATION_FAILED"]);
    expect(r.json().errors[0].path).toBe("body.items.0");
    expect(r.json().errors.length).toBeLessThanOrEqual(10);
  });

  it("refuses a correctly signed payment callback whose body holds a NUL or a lone surrogate, after the signature", async () => {
    const send = (report: object, sign = true) => {
      const payload = JSON.stringify(report);
      const headers: Record<string, string> = { "content-type": "application/json", "orderly-signature": sign ? h.services.webhooks.sign(payload) : "t=1,v1=00" };
      return h.app.inject({ method: "POST", url: "/api/v1/payments/callback", headers, payload });
    };
    const report = { tenantId: "edge", orderId, externalTxnId: "txn-1", amount: 100, currency: "CNY", status: "succeeded" };
    for (const [field, text] of [["orderId", NUL], ["orderId", SURROGATE], ["externalTxnId", NUL], ["tenantId", NUL]] as const) {
      const r = await send({ ...report, [field]: text });
      expect(r.statusCode, `${field} ${JSON.stringify(text)}: ${r.body}`).toBe(400);
      expect(r.json().code).toBe("VALIDATION_FAILED");
      expect(r.json().errors.map((e: { path: string }) => e.path)).toContain(`body.${field}`);
    }
    // Unsigned, the same body is refused for its signature first: a stranger learns nothing about validation.
    expect((await send({ ...report, orderId: NUL }, false)).statusCode).toBe(401);
    expect((await h.call("GET", `/api/v1/orders/${orderId}`, { token: cus })).body.status).toBe("CREATED");
  });

  it("answers 400, not 500, if text PostgreSQL cannot store ever slips past the edge (22021, 22P05)", async () => {
    const app = Fastify();
    registerProblemHandlers(app);
    app.get("/text", () => h.services.database.db.execute(sql`select ${NUL}::text`)); // 22021
    app.get("/jsonb", () => h.services.database.db.execute(sql`select ${JSON.stringify(NUL)}::jsonb`)); // 22P05
    for (const url of ["/text", "/jsonb"]) {
      const r = await app.inject({ method: "GET", url });
      expect([url, r.statusCode, r.json().code]).toEqual([url, 400, "VALIDATION_FAILED"]);
    }
    await app.close();
  });
});
