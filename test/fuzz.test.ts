import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { testDatabases } from "./support/databases.ts";
import { ADDRESS, createHarness, type Harness } from "./support/harness.ts";

// Per database: both together take about as long as the 2,500 runs on PGlite alone used to.
const RUNS = 1000;

// Code points a careless edge hands to the database: C0 controls (NUL above all), DEL and lone
// UTF-16 surrogates, which PostgreSQL refuses or mangles.
const nasty = fc.oneof(
  { weight: 3, arbitrary: fc.constant("\u0000") },
  { weight: 2, arbitrary: fc.integer({ min: 0x01, max: 0x1f }).map((c) => String.fromCharCode(c)) },
  { weight: 1, arbitrary: fc.constant("\u007f") },
  { weight: 3, arbitrary: fc.integer({ min: 0xd800, max: 0xdfff }).map((c) => String.fromCharCode(c)) },
);
const hostile = fc.oneof(
  fc.string({ unit: "binary-ascii", maxLength: 20 }),
  fc.string({ unit: fc.oneof(nasty, fc.constantFrom("a", "Z", "1", "-", "_", ".")), minLength: 1, maxLength: 12 }),
  fc.constantFrom("\u0000", "a\u0000b", "SKU-1\u0000", "\ud800", "a\udc00b", "\udfff\ud800"),
);

/** A string with at least one nasty code point in it. */
const tainted = fc.tuple(fc.string({ maxLength: 8 }), nasty, fc.string({ unit: fc.oneof(nasty, fc.constantFrom("a", "1")), maxLength: 4 })).map((parts) => parts.join(""));

/** Percent-encodes like encodeURIComponent, but sends a lone surrogate as its 3 bytes (CESU-8) where encodeURIComponent throws. */
const encode = (text: string) =>
  [...text]
    .map((c) => {
      if (!/\p{Cs}/u.test(c)) return encodeURIComponent(c);
      const u = c.charCodeAt(0);
      return [0xe0 | (u >> 12), 0x80 | ((u >> 6) & 0x3f), 0x80 | (u & 0x3f)].map((b) => `%${b.toString(16).toUpperCase()}`).join("");
    })
    .join("");

/** A well-formed list cursor around any key. */
const cursorWith = (key: string) => Buffer.from(JSON.stringify({ t: new Date().toISOString(), k: key })).toString("base64url");

describe.each(testDatabases())("malformed and hostile input on $name", (database) => {
  let h: Harness;
  let tokens: (string | undefined)[];
  let orderId: string;
  beforeAll(async () => {
    h = await createHarness(await database.open(), { env: { ORDERLY_RATE_LIMIT_RPS: "1000000", ORDERLY_RATE_LIMIT_BURST: "1000000" } });
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
    hostile,
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
  const rawBody = fc.oneof(
    fc.constant('{"items": ['),
    fc.constant("[1,2"),
    fc.constant('{"__proto__":{"admin":true}}'),
    fc.string({ maxLength: 200 }),
    fc.constant(""),
    // A raw NUL inside a JSON string (not valid JSON), and NUL and lone-surrogate escapes (valid JSON).
    hostile.map((w) => `{"couponCode":"${w}","items":[{"sku":"${w}","quantity":1}]}`),
    fc.constantFrom('{"shippingAddress":{"line1":"a\\u0000b"}}', '{"name":"\\ud800","price":1}', '{"\\u0000":1}'),
  );
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
    weird.map((w) => `/api/v1/${encode(w)}`),
    fc.tuple(fc.constantFrom("/api/v1/orders/", "/api/v1/products/", "/api/v1/coupons/", "/api/v1/accounts/"), weird).map(([p, w]) => p + encode(w)),
    fc.tuple(fc.constantFrom("/api/v1/orders/", "/api/v1/products/", "/api/v1/coupons/", "/api/v1/accounts/"), weird, fc.constantFrom("", "/cancel", "/ship", "/complete", "/stock", "/credits")).map(([p, w, s]) => p + encode(w) + s),
  );
  const query = fc.oneof(
    fc.constant(""),
    fc
      .record({ limit: scalar, cursor: fc.oneof(weird, weird.map(cursorWith)), status: fc.oneof(fc.constant("PAID"), weird), userId: weird }, { requiredKeys: [] })
      .map((q) => `?${Object.entries(q).map(([k, v]) => `${k}=${encode(String(v))}`).join("&")}`),
  );

  const randomRequest = fc.record({
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
  });

  // Requests valid in every respect but one tainted string, so that string gets as deep as it can:
  // random requests almost never pass authentication, validation and the signature all at once.
  const order = (extra: object) => ({ items: [{ sku: "SKU-1", quantity: 1 }], payment: { method: "external" }, shippingAddress: ADDRESS, ...extra });
  const report = { tenantId: "fuzz", orderId: "ord_unknown", externalTxnId: "txn-1", amount: 100, currency: "CNY", status: "failed" };
  const nearlyValid = fc
    .oneof(
      tainted.map((w) => ({ method: "GET" as const, path: `/api/v1/orders/${encode(w)}` })),
      fc.tuple(tainted, fc.constantFrom("cancel", "complete")).map(([w, move]) => ({ method: "POST" as const, path: `/api/v1/orders/${encode(w)}/${move}` })),
      fc.tuple(fc.constantFrom("/api/v1/orders", "/api/v1/products"), tainted, fc.boolean()).map(([p, w, asKey]) => ({ method: "GET" as const, path: `${p}?cursor=${encode(asKey ? cursorWith(w) : w)}` })),
      fc.tuple(fc.constantFrom("name", "phone", "line1", "line2", "city", "postalCode"), tainted).map(([field, w]) => ({ method: "POST" as const, path: "/api/v1/orders", body: order({ shippingAddress: { ...ADDRESS, [field]: w } }) })),
      tainted.map((w) => ({ method: "POST" as const, path: "/api/v1/orders", body: order({ couponCode: w }) })),
      tainted.map((w) => ({ method: "PUT" as const, path: "/api/v1/products/SKU-9", body: { name: w, price: 1 } })),
      fc.tuple(fc.constantFrom("tenantId", "orderId", "externalTxnId"), tainted).map(([field, w]) => ({ method: "POST" as const, path: "/api/v1/payments/callback", body: { ...report, [field]: w }, signed: true })),
    )
    .map((r: { method: "GET" | "POST" | "PUT"; path: string; body?: object; signed?: boolean }) => {
      const payload = r.body === undefined ? undefined : JSON.stringify(r.body);
      const headers: Record<string, string> = r.signed && payload ? { "orderly-signature": h.services.webhooks.sign(payload) } : {};
      return { method: r.method, path: r.path, query: "", token: 1, body: payload, contentType: "application/json", headers };
    });

  it(`answers ${RUNS} generated requests without a 5xx, every 4xx a problem with a code`, async () => {
    let count = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.oneof({ weight: 3, arbitrary: randomRequest }, { weight: 1, arbitrary: nearlyValid }),
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
    expect(count).toBeGreaterThanOrEqual(RUNS);
  });
});
