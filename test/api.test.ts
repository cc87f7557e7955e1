import { SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { testDatabases } from "./support/databases.ts";
import { createHarness, type Harness, TEST_SECRETS } from "./support/harness.ts";
import { invariantViolations } from "./support/invariants.ts";

describe.each(testDatabases())("HTTP API v1 on $name", (database) => {
  let h: Harness;
  let admin: string;
  let alice: string;
  let bob: string;
  let otherTenantAdmin: string;

  beforeAll(async () => {
    h = await createHarness(await database.open());
    admin = await h.token("shop", "root", ["admin"]);
    alice = await h.token("shop", "alice");
    bob = await h.token("shop", "bob");
    otherTenantAdmin = await h.token("rival", "root", ["admin"]);
    await h.seed("shop", {
      products: [
        ["MUG", 3900, 10],
        ["TEA", 6800, 5],
        ["RARE", 100_000, 1],
      ],
      credits: [
        ["alice", 50_000],
        ["bob", 1_000],
      ],
    });
  });
  afterAll(() => h.close());

  const stockOf = async (sku: string) => (await h.call("GET", `/api/v1/products/${sku}`, { token: admin })).body.available as number;
  const balanceOf = async (token: string) => (await h.call("GET", "/api/v1/accounts/me", { token })).body.balance as number;

  describe("authentication and authorization", () => {
    it("answers 401 UNAUTHENTICATED to a missing, expired, forged, alg:none or malformed token", async () => {
      const key = new TextEncoder().encode(TEST_SECRETS.jwtSecret);
      const expired = await new SignJWT({ tid: "shop", roles: ["admin"] })
        .setProtectedHeader({ alg: "HS256" })
        .setSubject("root")
        .setExpirationTime(Math.floor(Date.now() / 1000) - 60)
        .sign(key);
      const forged = await new SignJWT({ tid: "shop", roles: ["admin"] })
        .setProtectedHeader({ alg: "HS256" })
        .setSubject("root")
        .setExpirationTime("1h")
        .sign(new TextEncoder().encode("another-secret-another-secret-another"));
      const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString("base64url");
      const none = `${b64({ alg: "none", typ: "JWT" })}.${b64({ sub: "root", tid: "shop", roles: ["admin"], exp: 9999999999 })}.`;
      const noExp = await new SignJWT({ tid: "shop", roles: ["admin"] }).setProtectedHeader({ alg: "HS256" }).setSubject("root").sign(key);
      const noRoles = await new SignJWT({ tid: "shop", roles: [] }).setProtectedHeader({ alg: "HS256" }).setSubject("root").setExpirationTime("1h").sign(key);
      for (const headers of [{} as Record<string, string>, { authorization: `Bearer ${expired}` }, { authorization: `Bearer ${forged}` }, { authorization: `Bearer ${none}` },
        { authorization: `Bearer ${noExp}` }, { authorization: `Bearer ${noRoles}` }, { authorization: "Bearer not.a.jwt" }, { authorization: "Basic abc" }]) {
        const r = await h.call("GET", "/api/v1/products", { headers });
        expect(r.status, JSON.stringify(headers)).toBe(401);
        expect(r.body.code).toBe("UNAUTHENTICATED");
        expect(r.headers["content-type"]).toContain("application/problem+json");
      }
    });

    it("checks the token before the body: an anonymous bad body is 401, not 400", async () => {
      const r = await h.call("POST", "/api/v1/orders", { body: { nonsense: true } });
      expect(r.status).toBe(401);
    });

    it("answers 403 FORBIDDEN to a customer on every admin endpoint", async () => {
      for (const [method, url, body] of [
        ["PUT", "/api/v1/products/MUG", { name: "x", price: 1 }],
        ["POST", "/api/v1/products/MUG/stock", { delta: 1 }],
        ["POST", "/api/v1/accounts/alice/credits", { amount: 1 }],
        ["GET", "/api/v1/accounts/bob", undefined],
        ["PUT", "/api/v1/coupons/X", { discount: { type: "amount", value: 1 } }],
        ["GET", "/api/v1/coupons/X", undefined],
        ["POST", "/api/v1/orders/ord_x/ship", { carrier: "SF" }],
      ] as const) {
        const r = await h.call(method, url, { token: alice, body });
        expect(r.status, `${method} ${url}`).toBe(403);
        expect(r.body.code).toBe("FORBIDDEN");
      }
    });
  });

  describe("products and stock", () => {
    it("creates with 201, updates with 200, and refuses a stock change through PUT", async () => {
      const created = await h.call("PUT", "/api/v1/products/NEW-1", { token: admin, body: { name: "New", price: 100, stock: 3 } });
      expect(created.status).toBe(201);
      expect(created.body).toEqual({ sku: "NEW-1", name: "New", price: 100, currency: "CNY", available: 3 });
      const updated = await h.call("PUT", "/api/v1/products/NEW-1", { token: admin, body: { name: "Newer", price: 120 } });
      expect(updated.status).toBe(200);
      expect(updated.body).toMatchObject({ name: "Newer", price: 120, available: 3 });
      const restock = await h.call("PUT", "/api/v1/products/NEW-1", { token: admin, body: { name: "Newer", price: 120, stock: 50 } });
      expect(restock.status).toBe(409);
      expect(restock.body.code).toBe("USE_STOCK_ADJUSTMENT");
    });

    it("adjusts stock but never below zero available", async () => {
      expect((await h.call("POST", "/api/v1/products/NEW-1/stock", { token: admin, body: { delta: 7 } })).body.available).toBe(10);
      const tooMuch = await h.call("POST", "/api/v1/products/NEW-1/stock", { token: admin, body: { delta: -11 } });
      expect(tooMuch.status).toBe(409);
      expect(tooMuch.body.code).toBe("INSUFFICIENT_STOCK");
      const missing = await h.call("POST", "/api/v1/products/NOPE/stock", { token: admin, body: { delta: 1 } });
      expect(missing.status).toBe(404);
      expect(await stockOf("NEW-1")).toBe(10);
    });

    it("rejects malformed products with VALIDATION_FAILED and field errors", async () => {
      for (const body of [{ name: "x", price: 1.5 }, { name: "", price: 1 }, { name: "x", price: 0 }, { name: "x", price: "1" }, { name: "x", price: 1, extra: 1 }, [], null]) {
        const r = await h.call("PUT", "/api/v1/products/BAD", { token: admin, body });
        expect(r.status, JSON.stringify(body)).toBe(400);
        expect(r.body.code).toBe("VALIDATION_FAILED");
      }
      const badSku = await h.call("PUT", `/api/v1/products/${"x".repeat(65)}`, { token: admin, body: { name: "x", price: 1 } });
      expect(badSku.status).toBe(400);
      expect(badSku.body.errors[0].path).toBe("params.sku");
    });

    it("pages products newest first with an opaque cursor", async () => {
      const seen: string[] = [];
      let cursor: string | null = null;
      do {
        const r: { body: { data: { sku: string }[]; nextCursor: string | null } } = await h.call(
          "GET",
          `/api/v1/products?limit=2${cursor ? `&cursor=${cursor}` : ""}`,
          { token: alice },
        );
        seen.push(...r.body.data.map((p) => p.sku));
        cursor = r.body.nextCursor;
      } while (cursor);
      expect(seen).toEqual(["NEW-1", "RARE", "TEA", "MUG"]);
      expect((await h.call("GET", "/api/v1/products?cursor=garbage", { token: alice })).status).toBe(400);
      expect((await h.call("GET", "/api/v1/products?limit=101", { token: alice })).status).toBe(400);
    });
  });

  describe("placing orders", () => {
    it("places a wallet order: PAID, stock sold, wallet debited, waybill issued, Location and ETag set", async () => {
      const before = await balanceOf(alice);
      const r = await h.call("POST", "/api/v1/orders", { token: alice, body: h.orderBody([["MUG", 2]]) });
      expect(r.status).toBe(201);
      expect(r.headers.location).toBe(`/api/v1/orders/${r.body.id}`);
      expect(r.headers.etag).toBe(`W/"${r.body.version}"`);
      expect(r.body).toMatchObject({
        status: "PAID",
        userId: "alice",
        tenantId: "shop",
        subtotal: 7800,
        discount: 0,
        total: 7800,
        currency: "CNY",
        items: [{ sku: "MUG", name: "Product MUG", quantity: 2, unitPrice: 3900, lineTotal: 7800 }],
        payment: { method: "balance", status: "captured", externalTxnId: null },
        shipment: { status: "pending", carrier: null },
        cancelReason: null,
      });
      expect(r.body.shipment.waybill).toMatch(/^WB/);
      expect(r.body.history.map((m: { to: string }) => m.to)).toEqual(["PENDING", "PAID"]);
      expect(await balanceOf(alice)).toBe(before - 7800);
      expect(await stockOf("MUG")).toBe(8);
    });

    it("keeps the product's price at placement even when the price changes later", async () => {
      const r = await h.call("POST", "/api/v1/orders", { token: alice, body: h.orderBody([["TEA", 1]], { payment: { method: "external" } }) });
      await h.call("PUT", "/api/v1/products/TEA", { token: admin, body: { name: "Dearer tea", price: 9999 } });
      const again = await h.call("GET", `/api/v1/orders/${r.body.id}`, { token: alice });
      expect(again.body.items[0]).toMatchObject({ name: "Product TEA", unitPrice: 6800 });
      await h.call("POST", `/api/v1/orders/${r.body.id}/cancel`, { token: alice });
    });

    it("places an external-payment order as CREATED holding a reservation, and cancelling returns it", async () => {
      const r = await h.call("POST", "/api/v1/orders", { token: bob, body: h.orderBody([["TEA", 2]], { payment: { method: "external" } }) });
      expect(r.status).toBe(201);
      expect(r.body).toMatchObject({ status: "CREATED", payment: { method: "external", status: "pending" }, shipment: null });
      expect(await stockOf("TEA")).toBe(3);
      const cancelled = await h.call("POST", `/api/v1/orders/${r.body.id}/cancel`, { token: bob });
      expect(cancelled.status).toBe(200);
      expect(cancelled.body).toMatchObject({ status: "CANCELLED", cancelReason: "CUSTOMER_CANCELLED", payment: { status: "voided" } });
      expect(await stockOf("TEA")).toBe(5);
    });

    it("refuses OUT_OF_STOCK and changes nothing: no stock, money or coupon taken", async () => {
      await h.call("PUT", "/api/v1/coupons/ONCE", { token: admin, body: { discount: { type: "amount", value: 100 } } });
      // Enough money that the debit succeeds and must be rolled back when the stock step refuses.
      await h.call("POST", "/api/v1/accounts/alice/credits", { token: admin, body: { amount: 500_000 } });
      const before = { money: await balanceOf(alice), mug: await stockOf("MUG"), rare: await stockOf("RARE") };
      const r = await h.call("POST", "/api/v1/orders", { token: alice, body: h.orderBody([["MUG", 1], ["RARE", 2]], { couponCode: "ONCE" }) });
      expect(r.status).toBe(409);
      expect(r.body.code).toBe("OUT_OF_STOCK");
      expect({ money: await balanceOf(alice), mug: await stockOf("MUG"), rare: await stockOf("RARE") }).toEqual(before);
      expect((await h.call("GET", "/api/v1/coupons/ONCE", { token: admin })).body.redemptions).toBe(0);
    });

    it("refuses INSUFFICIENT_FUNDS and changes nothing", async () => {
      const before = await stockOf("MUG");
      const r = await h.call("POST", "/api/v1/orders", { token: bob, body: h.orderBody([["MUG", 1]]) });
      expect(r.status).toBe(409);
      expect(r.body.code).toBe("INSUFFICIENT_FUNDS");
      expect(await stockOf("MUG")).toBe(before);
      expect(await balanceOf(bob)).toBe(1_000);
    });

    it("answers 422 UNKNOWN_PRODUCT, and 400 for duplicate SKUs, bad quantities and bad addresses", async () => {
      const unknown = await h.call("POST", "/api/v1/orders", { token: alice, body: h.orderBody([["GHOST", 1]]) });
      expect(unknown.status).toBe(422);
      expect(unknown.body.code).toBe("UNKNOWN_PRODUCT");
      for (const body of [
        h.orderBody([["MUG", 1], ["MUG", 2]]),
        h.orderBody([["MUG", 0]]),
        h.orderBody([["MUG", 1000]]),
        h.orderBody([]),
        h.orderBody([["MUG", 1]], { shippingAddress: { name: "A" } }),
        h.orderBody([["MUG", 1]], { payment: { method: "cash" } }),
        h.orderBody([["MUG", 1]], { shippingAddress: { name: "A", phone: "1", line1: "x", city: "y", country: "China" } }),
      ]) {
        const r = await h.call("POST", "/api/v1/orders", { token: alice, body });
        expect(r.status, JSON.stringify(body)).toBe(400);
        expect(r.body.code).toBe("VALIDATION_FAILED");
        expect(r.body.errors.length).toBeGreaterThan(0);
      }
    });
  });

  describe("coupons", () => {
    it("applies amount and percent discounts and enforces owner, minimum, expiry and limit", async () => {
      const put = (code: string, body: object) => h.call("PUT", `/api/v1/coupons/${code}`, { token: admin, body });
      expect((await put("TENOFF", { discount: { type: "percent", value: 10 }, maxRedemptions: 5 })).status).toBe(201);
      await put("BOBONLY", { discount: { type: "amount", value: 100 }, userId: "bob" });
      await put("BIGSPEND", { discount: { type: "amount", value: 100 }, minSubtotal: 1_000_000 });
      await put("OLD", { discount: { type: "amount", value: 100 }, expiresAt: "2020-01-01T00:00:00Z" });
      const place = (code: string) => h.call("POST", "/api/v1/orders", { token: alice, body: h.orderBody([["MUG", 1]], { couponCode: code }) });

      const ten = await place("TENOFF");
      expect(ten.status).toBe(201);
      expect(ten.body).toMatchObject({ subtotal: 3900, discount: 390, total: 3510, couponCode: "TENOFF" });
      for (const code of ["BOBONLY", "BIGSPEND", "OLD", "NO-SUCH-COUPON"]) {
        const r = await place(code);
        expect(r.status, code).toBe(409);
        expect(r.body.code).toBe("COUPON_UNAVAILABLE");
      }
      const coupon = await h.call("GET", "/api/v1/coupons/TENOFF", { token: admin });
      expect(coupon.body).toMatchObject({ code: "TENOFF", redemptions: 1, maxRedemptions: 5, discount: { type: "percent", value: 10 } });
      const below = await put("TENOFF", { discount: { type: "percent", value: 10 }, maxRedemptions: 0 });
      expect(below.status).toBe(400);
    });

    it("gives a single-use coupon back when its order is cancelled", async () => {
      await h.call("PUT", "/api/v1/coupons/SOLO", { token: admin, body: { discount: { type: "amount", value: 50 } } });
      const first = await h.call("POST", "/api/v1/orders", { token: alice, body: h.orderBody([["MUG", 1]], { couponCode: "SOLO", payment: { method: "external" } }) });
      expect(first.status).toBe(201);
      const second = await h.call("POST", "/api/v1/orders", { token: alice, body: h.orderBody([["MUG", 1]], { couponCode: "SOLO" }) });
      expect(second.body.code).toBe("COUPON_UNAVAILABLE");
      await h.call("POST", `/api/v1/orders/${first.body.id}/cancel`, { token: alice });
      const third = await h.call("POST", "/api/v1/orders", { token: alice, body: h.orderBody([["MUG", 1]], { couponCode: "SOLO" }) });
      expect(third.status).toBe(201);
      expect(third.body.discount).toBe(50);
    });
  });

  describe("order moves", () => {
    it("ships and completes a paid order, honouring If-Match", async () => {
      const placed = await h.call("POST", "/api/v1/orders", { token: alice, body: h.orderBody([["MUG", 1]]) });
      const id = placed.body.id as string;
      const stale = await h.call("POST", `/api/v1/orders/${id}/ship`, { token: admin, body: { carrier: "SF" }, headers: { "if-match": 'W/"1"' } });
      expect(stale.status).toBe(412);
      expect(stale.body.code).toBe("VERSION_MISMATCH");
      const shipped = await h.call("POST", `/api/v1/orders/${id}/ship`, {
        token: admin,
        body: { carrier: "SF", trackingNumber: "SF123" },
        headers: { "if-match": placed.headers.etag as string },
      });
      expect(shipped.status).toBe(200);
      expect(shipped.body).toMatchObject({ status: "SHIPPED", shipment: { carrier: "SF", trackingNumber: "SF123", status: "shipped" } });
      expect(shipped.headers.etag).toBe(`W/"${placed.body.version + 1}"`);
      const again = await h.call("POST", `/api/v1/orders/${id}/ship`, { token: admin, body: { carrier: "SF" } });
      expect(again.status).toBe(409);
      expect(again.body.code).toBe("INVALID_TRANSITION");
      const done = await h.call("POST", `/api/v1/orders/${id}/complete`, { token: alice });
      expect(done.body).toMatchObject({ status: "COMPLETED", shipment: { status: "delivered" } });
      expect(done.body.history.map((m: { to: string }) => m.to)).toEqual(["PENDING", "PAID", "SHIPPED", "COMPLETED"]);
    });

    it("refuses to cancel a paid order and to complete an unshipped one, changing nothing", async () => {
      const placed = await h.call("POST", "/api/v1/orders", { token: alice, body: h.orderBody([["MUG", 1]]) });
      for (const action of ["cancel", "complete"]) {
        const r = await h.call("POST", `/api/v1/orders/${placed.body.id}/${action}`, { token: alice });
        expect(r.status).toBe(409);
        expect(r.body.code).toBe("INVALID_TRANSITION");
      }
      expect((await h.call("GET", `/api/v1/orders/${placed.body.id}`, { token: alice })).body.version).toBe(placed.body.version);
    });

    it("records an admin's cancel as ADMIN_CANCELLED", async () => {
      const placed = await h.call("POST", "/api/v1/orders", { token: bob, body: h.orderBody([["MUG", 1]], { payment: { method: "external" } }) });
      const r = await h.call("POST", `/api/v1/orders/${placed.body.id}/cancel`, { token: admin });
      expect(r.body).toMatchObject({ status: "CANCELLED", cancelReason: "ADMIN_CANCELLED" });
    });
  });

  describe("visibility", () => {
    it("answers 404 for another user's or another tenant's order, exactly as for a missing one", async () => {
      const placed = await h.call("POST", "/api/v1/orders", { token: alice, body: h.orderBody([["MUG", 1]], { payment: { method: "external" } }) });
      const id = placed.body.id as string;
      const missing = await h.call("GET", "/api/v1/orders/ord_doesnotexist", { token: bob });
      for (const token of [bob, otherTenantAdmin]) {
        for (const [method, url] of [["GET", `/api/v1/orders/${id}`], ["POST", `/api/v1/orders/${id}/cancel`], ["POST", `/api/v1/orders/${id}/complete`]] as const) {
          const r = await h.call(method, url, { token });
          expect(r.status).toBe(404);
          expect(r.body.code).toBe(missing.body.code);
        }
      }
      expect((await h.call("POST", `/api/v1/orders/${id}/ship`, { token: otherTenantAdmin, body: { carrier: "SF" } })).status).toBe(404);
      expect((await h.call("GET", "/api/v1/products/MUG", { token: otherTenantAdmin })).status).toBe(404);
      expect((await h.call("GET", "/api/v1/accounts/alice", { token: otherTenantAdmin })).body.balance).toBe(0);
      expect((await h.call("GET", "/api/v1/coupons/TENOFF", { token: otherTenantAdmin })).status).toBe(404);
      expect((await h.call("GET", `/api/v1/orders/${id}`, { token: admin })).status).toBe(200);
      await h.call("POST", `/api/v1/orders/${id}/cancel`, { token: alice });
    });

    it("lists only the caller's orders, filters by status and (admins) by user, newest first across pages", async () => {
      const mine = await h.call("GET", "/api/v1/orders?limit=100", { token: bob });
      expect(mine.body.data.every((o: { userId: string }) => o.userId === "bob")).toBe(true);
      expect((await h.call("GET", "/api/v1/orders", { token: otherTenantAdmin })).body.data).toEqual([]);
      expect((await h.call("GET", "/api/v1/orders?userId=alice", { token: bob })).status).toBe(403);
      const cancelled = await h.call("GET", "/api/v1/orders?status=CANCELLED&userId=bob", { token: admin });
      expect(cancelled.body.data.length).toBeGreaterThan(0);
      expect(cancelled.body.data.every((o: { status: string; userId: string }) => o.status === "CANCELLED" && o.userId === "bob")).toBe(true);

      const all: { id: string; createdAt: string }[] = [];
      let cursor: string | null = null;
      do {
        const r: { body: { data: { id: string; createdAt: string }[]; nextCursor: string | null } } = await h.call(
          "GET",
          `/api/v1/orders?limit=3${cursor ? `&cursor=${cursor}` : ""}`,
          { token: admin },
        );
        all.push(...r.body.data);
        cursor = r.body.nextCursor;
      } while (cursor);
      const total = (await h.call("GET", "/api/v1/orders?limit=100", { token: admin })).body.data.length;
      expect(all.length).toBe(total);
      expect(new Set(all.map((o) => o.id)).size).toBe(total);
      const times = all.map((o) => o.createdAt);
      expect([...times].sort().reverse()).toEqual(times);
    });
  });

  describe("the edge", () => {
    it("answers 413 to a body over 1 MiB, 415 to a non-JSON body, 400 to broken JSON", async () => {
      const big = await h.app.inject({
        method: "POST",
        url: "/api/v1/orders",
        headers: { authorization: `Bearer ${alice}`, "content-type": "application/json" },
        payload: `{"pad":"${"x".repeat(1024 * 1024)}"}`,
      });
      expect(big.statusCode).toBe(413);
      expect(big.json().code).toBe("PAYLOAD_TOO_LARGE");
      const xml = await h.app.inject({ method: "POST", url: "/api/v1/orders", headers: { authorization: `Bearer ${alice}`, "content-type": "text/xml" }, payload: "<a/>" });
      expect(xml.statusCode).toBe(415);
      const broken = await h.app.inject({ method: "POST", url: "/api/v1/orders", headers: { authorization: `Bearer ${alice}`, "content-type": "application/json" }, payload: '{"items": [' });
      expect(broken.statusCode).toBe(400);
      expect(broken.json().code).toBe("MALFORMED_JSON");
      const proto = await h.app.inject({ method: "POST", url: "/api/v1/orders", headers: { authorization: `Bearer ${alice}`, "content-type": "application/json" }, payload: '{"__proto__": {"x": 1}}' });
      expect(proto.statusCode).toBe(400);
    });

    it("echoes X-Request-Id, honours traceparent, and answers unknown routes with a 404 problem", async () => {
      const r = await h.call("GET", "/api/v1/nowhere", { token: alice, headers: { "x-request-id": "req-42", traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" } });
      expect(r.status).toBe(404);
      expect(r.headers["x-request-id"]).toBe("req-42");
      expect(r.body).toMatchObject({ code: "NOT_FOUND", traceId: "4bf92f3577b34da6a3ce929d0e0e4736", status: 404 });
      expect((await h.call("GET", "/healthz")).headers["x-request-id"]).toMatch(/[0-9a-f-]{36}/);
    });

    it("serves health, readiness, metrics and the OpenAPI document of every contract path", async () => {
      expect((await h.call("GET", "/healthz")).body).toEqual({ status: "ok" });
      expect((await h.call("GET", "/readyz")).status).toBe(200);
      const metrics = (await h.call("GET", "/metrics")).body as string;
      expect(metrics).toContain("orderly_order_placements_total");
      expect(metrics).toMatch(/^orderly_dead_letters_open 0$/m);
      const doc = (await h.call("GET", "/docs/json")).body;
      expect(doc.openapi).toBe("3.1.0");
      for (const path of [
        "/api/v1/products/{sku}",
        "/api/v1/products/{sku}/stock",
        "/api/v1/products",
        "/api/v1/accounts/{userId}/credits",
        "/api/v1/accounts/me",
        "/api/v1/coupons/{code}",
        "/api/v1/orders",
        "/api/v1/orders/{id}",
        "/api/v1/orders/{id}/cancel",
        "/api/v1/orders/{id}/ship",
        "/api/v1/orders/{id}/complete",
      ]) {
        expect(Object.keys(doc.paths)).toContain(path);
      }
      const refs = [...JSON.stringify(doc).matchAll(/"\$ref":"#\/components\/schemas\/([^"]+)"/g)].map((m) => m[1] as string);
      expect(refs.length).toBeGreaterThan(0);
      for (const ref of refs) expect(Object.keys(doc.components.schemas)).toContain(ref);
      expect((await h.call("GET", "/docs")).status).toBeLessThan(400);
    });
  });

  describe("asynchronous placement", () => {
    it("answers 202 PENDING with Prefer: respond-async, then settles the order", async () => {
      const r = await h.call("POST", "/api/v1/orders", { token: alice, body: h.orderBody([["MUG", 1]]), headers: { prefer: "respond-async" } });
      expect(r.status).toBe(202);
      expect(r.body.status).toBe("PENDING");
      expect(r.headers["preference-applied"]).toBe("respond-async");
      await h.services.localPlacement?.drain();
      const settled = await h.call("GET", r.headers.location as string, { token: alice });
      expect(settled.body).toMatchObject({ status: "PAID", payment: { status: "captured" } });
      expect(settled.body.shipment.waybill).toMatch(/^WB/);
    });

    it("cancels a PENDING order with the refusal as its reason when settling fails", async () => {
      const r = await h.call("POST", "/api/v1/orders", { token: bob, body: h.orderBody([["RARE", 1]]), headers: { prefer: "respond-async" } });
      expect(r.status).toBe(202);
      await h.services.localPlacement?.drain();
      const settled = await h.call("GET", r.headers.location as string, { token: bob });
      expect(settled.body).toMatchObject({ status: "CANCELLED", cancelReason: "INSUFFICIENT_FUNDS" });
    });

    it("settles with its coupon's discount, and an external order as awaiting its payment", async () => {
      await h.call("PUT", "/api/v1/coupons/LATER", { token: admin, body: { discount: { type: "amount", value: 300 }, maxRedemptions: 5 } });
      const before = (await h.call("GET", "/api/v1/accounts/me", { token: alice })).body.balance;
      const r = await h.call("POST", "/api/v1/orders", { token: alice, body: h.orderBody([["MUG", 1]], { couponCode: "LATER" }), headers: { prefer: "respond-async" } });
      expect(r.status).toBe(202);
      const external = await h.call("POST", "/api/v1/orders", { token: alice, body: h.orderBody([["TEA", 1]], { payment: { method: "external" } }), headers: { prefer: "respond-async" } });
      await h.services.localPlacement?.drain();
      const settled = (await h.call("GET", r.headers.location as string, { token: alice })).body;
      expect(settled).toMatchObject({ status: "PAID", subtotal: 3900, discount: 300, total: 3600, couponCode: "LATER" });
      expect(settled.history.map((m: { to: string }) => m.to)).toEqual(["PENDING", "PAID"]);
      expect((await h.call("GET", "/api/v1/accounts/me", { token: alice })).body.balance).toBe(before - 3600);
      expect((await h.call("GET", "/api/v1/coupons/LATER", { token: admin })).body.redemptions).toBe(1);
      const awaiting = (await h.call("GET", external.headers.location as string, { token: alice })).body;
      expect(awaiting).toMatchObject({ status: "CREATED", payment: { method: "external", status: "pending" }, shipment: null });
    });
  });

  it("keeps invariants 1-3 after everything above", async () => {
    expect(await invariantViolations(h.services.database.db)).toEqual([]);
  });
});
