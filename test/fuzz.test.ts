import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openTestPglite } from "./support/databases.ts";
import { ADDRESS, createHarness, type Harness } from "./support/harness.ts";

const RUNS = 2500;

describe("malformed and hostile input", () => {
  let h: Harness;
  let tokens: (string | undefined)[];
  let orderId: string;
  beforeAll(async () => {
    h = await createHarness(await openTestPglite(), { env: { ORDERLY_RATE_LIMIT_RPS: "1000000", ORDERLY_RATE_LIMIT_BURST: "1000000" } });
    await h.seed("fuzz", { products: [["SKU-1", 100, 1_000_000], ["SKU-2", 250, 5]], credits: [["cus", 1e12]] });
    const customer = await h.token("fuzz", "cus");
    const admin = await h.token("fuzz", "adm", ["admin"]);
    tokens = [customer, admin, await h.token("fuzz", "nobody"), "garbage", "e30.e30.", undefined];
    orderId = (await h.call("POST", "/api/v1/orders", { token: customer, body: h.orderBody([["SKU-1", 1]], { payment: { method: "external" } }) })).body.id;
  });
  afterAll(() => h.close());

  const weird = fc.oneof(
    fc.string(),
    fc.string({ unit: "grapheme", maxLength: 80 }),
    fc.constantFrom("SKU-1", "SKU-2", "../../etc/passwd", "%00", "%E0%A4%A", "a".repeat(300), "ord_x", "🙂", " ", "null", "-1", "1e309", "__proto__", "constructor"),
  );
  const scalar = fc.oneof(fc.integer(), fc.double(), fc.constantFrom(0, -1, 1e12, 1e12 + 1, 2 ** 53, -(2 ** 63), Number.MAX_VALUE), weird, fc.boolean(), fc.constant(null));
  const address = fc.record({ name: scalar, phone: scalar, line1: scalar, city: scalar, country: fc.oneof(fc.constantFrom("CN", "US", "cn", "CHN"), scalar) }, { requiredKeys: [] });
  const orderish = fc.record(
    {
      items: fc.oneof(fc.array(fc.record({ sku: fc.oneof(fc.constantFrom("SKU-1", "SKU-2"), weird), quantity: fc.oneof(fc.integer({ min: -2, max: 1001 }), scalar) }, { requiredKeys: [] }), { maxLength: 60 }), scalar),
      couponCode: fc.oneof(weird, scalar),
      payment: fc.oneof(fc.record({ method: fc.oneof(fc.constantFrom("balance", "external"), scalar) }), scalar),
      shippingAddress: fc.oneof(fc.constant(ADDRESS), address, scalar),
    },
    { requiredKeys: [] },
  );
  const body = fc.oneof(
    fc.constant(undefined),
    orderish,
    fc.record({ name: scalar, price: scalar, stock: scalar, delta: scalar, amount: scalar, carrier: scalar, discount: fc.oneof(fc.record({ type: fc.constantFrom("amount", "percent", "x"), value: scalar }), scalar), maxRedemptions: scalar, expiresAt: scalar }, { requiredKeys: [] }),
    fc.record({ tenantId: fc.constantFrom("fuzz", "x"), orderId: fc.oneof(fc.constant("ORDER"), weird), externalTxnId: weird, amount: scalar, currency: fc.oneof(fc.constant("CNY"), weird), status: fc.oneof(fc.constantFrom("succeeded", "failed"), weird) }, { requiredKeys: [] }),
    fc.jsonValue({ maxDepth: 4 }),
  );
  const rawBody = fc.oneof(fc.constant('{"items": ['), fc.constant("[1,2"), fc.constant('{"__proto__":{"admin":true}}'), fc.string({ maxLength: 200 }), fc.constant(""));
  const path = fc.oneof(
    fc.constantFrom(
      "/api/v1/orders",
      "/api/v1/orders/ORDER",
      "/api/v1/orders/ORDER/cancel",
      "/api/v1/orders/ORDER/ship",
      "/api/v1/orders/ORDER/complete",
      "/api/v1/products",
      "/api/v1/products/SKU-1",
      "/api/v1/products/SKU-2/stock",
      "/api/v1/accounts/me",
      "/api/v1/accounts/cus",
      "/api/v1/accounts/cus/credits",
      "/api/v1/coupons/C1",
      "/api/v1/payments/callback",
      "/healthz",
      "/docs/json",
    ),
    weird.map((w) => `/api/v1/${encodeURIComponent(w)}`),
    fc.tuple(fc.constantFrom("/api/v1/orders/", "/api/v1/products/", "/api/v1/coupons/", "/api/v1/accounts/"), weird).map(([p, w]) => p + encodeURIComponent(w)),
  );
  const query = fc.oneof(
    fc.constant(""),
    fc.record({ limit: scalar, cursor: weird, status: fc.oneof(fc.constant("PAID"), weird), userId: weird }, { requiredKeys: [] }).map((q) => `?${new URLSearchParams(Object.entries(q).map(([k, v]) => [k, String(v)])).toString()}`),
  );

  it(`answers ${RUNS} generated requests without a 5xx, every 4xx a problem with a code`, async () => {
    let count = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          method: fc.constantFrom("GET", "POST", "PUT", "PATCH", "DELETE"),
          path,
          query,
          token: fc.nat(5),
          body: fc.oneof({ weight: 4, arbitrary: body.map((b) => (b === undefined ? undefined : JSON.stringify(b))) }, { weight: 1, arbitrary: rawBody }),
          contentType: fc.constantFrom("application/json", "application/json; charset=utf-8", "text/plain", "application/x-www-form-urlencoded", undefined),
          headers: fc.record(
            {
              "idempotency-key": weird,
              prefer: fc.oneof(fc.constantFrom("respond-async", "wait=1", "wait=99999999999"), weird),
              "if-match": fc.oneof(fc.constantFrom('W/"1"', '"2"', "*"), weird),
              "orderly-signature": fc.oneof(fc.constant("t=1,v1=00"), weird),
              "x-request-id": weird,
              traceparent: weird,
            },
            { requiredKeys: [] },
          ),
        }),
        async (r) => {
          count++;
          const headers: Record<string, string> = {};
          for (const [k, v] of Object.entries(r.headers)) if (/^[\t\x20-\x7e]*$/.test(v)) headers[k] = v;
          const token = tokens[r.token];
          if (token) headers.authorization = `Bearer ${token}`;
          if (r.contentType && r.body !== undefined) headers["content-type"] = r.contentType;
          const url = (r.path + r.query).replace("ORDER", orderId);
          const response = await h.app.inject({ method: r.method, url, headers, ...(r.body !== undefined && r.method !== "GET" ? { payload: r.body } : {}) });
          const where = `${r.method} ${url} ${response.statusCode} ${response.body.slice(0, 300)}`;
          expect(response.statusCode, where).toBeLessThan(500);
          expect(response.headers["x-request-id"], where).toBeDefined();
          if (response.statusCode >= 400) {
            expect(response.headers["content-type"], where).toContain("application/problem+json");
            const problem = response.json();
            expect(problem.code, where).toMatch(/^[A-Z][A-Z_]+$/);
            expect(problem.status, where).toBe(response.statusCode);
          }
        },
      ),
      { numRuns: RUNS },
    );
    expect(count).toBeGreaterThanOrEqual(2000);
  });
});
