import { createHmac } from "node:crypto";
import { sql } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { rows } from "../src/db/client.ts";
import { createHarness, type Harness, databaseStrategyCases, TEST_SECRETS } from "./support/harness.ts";
import { invariantViolations } from "./support/invariants.ts";

const sign = (body: string, t = Math.floor(Date.now() / 1000), secret = TEST_SECRETS.webhookSecret) =>
  `t=${t},v1=${createHmac("sha256", secret).update(`${t}.${body}`).digest("hex")}`;

const cases = databaseStrategyCases();

describe.each(cases)("payment callback on $name", ({ database, strategy }) => {
  let h: Harness;
  let admin: string;
  let carol: string;

  beforeAll(async () => {
    h = await createHarness(await database.open(), { strategy });
    admin = await h.token("pay", "root", ["admin"]);
    carol = await h.token("pay", "carol");
    await h.seed("pay", { products: [["BOOK", 2500, 20]] });
  });
  afterAll(() => h.close());

  const placeExternal = async (quantity = 1) => {
    const r = await h.call("POST", "/api/v1/orders", { token: carol, body: h.orderBody([["BOOK", quantity]], { payment: { method: "external" } }) });
    expect(r.status).toBe(201);
    await h.quiesce(); // saga strategy: the payments service learns what the order is due
    return r.body as { id: string; total: number };
  };
  /** Sends a signed callback; `raw` overrides the exact bytes (they are what is signed). */
  const callback = (report: object | string, options: { signature?: string | null; raw?: string } = {}) => {
    const raw = options.raw ?? (typeof report === "string" ? report : JSON.stringify(report));
    const headers: Record<string, string> = { "content-type": "application/json" };
    const signature = options.signature === undefined ? sign(raw) : options.signature;
    if (signature !== null) headers["orderly-signature"] = signature;
    return h.app.inject({ method: "POST", url: "/api/v1/payments/callback", headers, payload: raw });
  };
  const report = (order: { id: string; total: number }, extra: object = {}) => ({
    tenantId: "pay",
    orderId: order.id,
    externalTxnId: `txn-${order.id}`,
    amount: order.total,
    currency: "CNY",
    status: "succeeded",
    ...extra,
  });
  /** The order once background work settled (the saga strategy pays and refunds by messages). */
  const getOrder = async (id: string) => {
    await h.quiesce();
    return (await h.call("GET", `/api/v1/orders/${id}`, { token: admin })).body;
  };

  it("pays a CREATED order: PAID, waybill issued, reservation sold, in one move", async () => {
    const order = await placeExternal(2);
    const r = await callback(report(order));
    expect(r.statusCode).toBe(200);
    expect(r.json()).toEqual({ orderId: order.id, status: "PAID", duplicate: false });
    const paid = await getOrder(order.id);
    expect(paid).toMatchObject({ status: "PAID", payment: { method: "external", status: "captured", externalTxnId: `txn-${order.id}` } });
    expect(paid.shipment.waybill).toMatch(/^WB/);
    expect(paid.history.map((m: { to: string }) => m.to)).toEqual(["PENDING", "CREATED", "PAID"]);
    expect(await invariantViolations(h.services.database.db)).toEqual([]);
  });

  it("answers a repeated delivery with duplicate: true and no second effect, even 20 at once", async () => {
    const order = await placeExternal();
    const body = JSON.stringify(report(order));
    const answers = await Promise.all(Array.from({ length: 20 }, () => callback(body)));
    expect(answers.map((a) => a.statusCode)).toEqual(Array(20).fill(200));
    expect(answers.filter((a) => a.json().duplicate === false)).toHaveLength(1);
    expect(answers.every((a) => a.json().status === "PAID")).toBe(true);
    const again = await callback(body);
    expect(again.json()).toEqual({ orderId: order.id, status: "PAID", duplicate: true });
    const [payments] = await rows<{ n: number }>(h.services.database.db, sql`select count(*)::int as n from payments where order_id = ${order.id}`);
    expect(payments?.n).toBe(1);
    expect((await getOrder(order.id)).history.filter((m: { to: string }) => m.to === "PAID")).toHaveLength(1);
  });

  it("leaves the order CREATED on a failed payment", async () => {
    const order = await placeExternal();
    const r = await callback(report(order, { status: "failed", externalTxnId: "declined-1" }));
    expect(r.json()).toEqual({ orderId: order.id, status: "CREATED", duplicate: false });
    expect((await getOrder(order.id)).status).toBe("CREATED");
    // A later successful attempt still pays it.
    expect((await callback(report(order))).json().status).toBe("PAID");
  });

  it("pays on a success reported after a failure of the same provider transaction: news, not a duplicate", async () => {
    const order = await placeExternal();
    const txn = { externalTxnId: "retried-1" };
    expect((await callback(report(order, { ...txn, status: "failed" }))).json()).toEqual({ orderId: order.id, status: "CREATED", duplicate: false });
    expect((await callback(report(order, txn))).json()).toEqual({ orderId: order.id, status: "PAID", duplicate: false });
    expect((await callback(report(order, txn))).json()).toEqual({ orderId: order.id, status: "PAID", duplicate: true });
    expect((await callback(report(order, { ...txn, status: "failed" }))).json()).toMatchObject({ orderId: order.id, duplicate: true });
    expect(await getOrder(order.id)).toMatchObject({ status: "PAID", payment: { status: "captured", externalTxnId: "retried-1" } });
    expect(await invariantViolations(h.services.database.db)).toEqual([]);
  });

  it("refuses a wrong amount or currency with 422 AMOUNT_MISMATCH, the order untouched", async () => {
    const order = await placeExternal();
    for (const extra of [{ amount: order.total - 1 }, { amount: order.total + 1 }, { currency: "USD" }]) {
      const r = await callback(report(order, extra));
      expect(r.statusCode).toBe(422);
      expect(r.json().code).toBe("AMOUNT_MISMATCH");
    }
    expect(await getOrder(order.id)).toMatchObject({ status: "CREATED", version: 2, payment: { status: "pending" } });
  });

  it("answers 404 ORDER_NOT_FOUND for an unknown order or another tenant's order", async () => {
    const order = await placeExternal();
    for (const r of [await callback(report(order, { orderId: "ord_nope" })), await callback(report(order, { tenantId: "someone-else" }))]) {
      expect(r.statusCode).toBe(404);
      expect(r.json().code).toBe("ORDER_NOT_FOUND");
    }
  });

  it("keeps money for a cancelled order as refund_pending and answers 409 ORDER_NOT_PAYABLE", async () => {
    const order = await placeExternal();
    await h.call("POST", `/api/v1/orders/${order.id}/cancel`, { token: carol });
    await h.quiesce();
    const r = await callback(report(order));
    expect(r.statusCode).toBe(409);
    expect(r.json()).toMatchObject({ code: "ORDER_NOT_PAYABLE", orderId: order.id });
    expect(await getOrder(order.id)).toMatchObject({ status: "CANCELLED", payment: { status: "refund_pending", externalTxnId: `txn-${order.id}` } });
    expect((await callback(report(order))).json()).toMatchObject({ duplicate: true, status: "CANCELLED" });
  });

  it("never captures an order twice: a second provider transaction is kept as refund_pending", async () => {
    const order = await placeExternal();
    expect((await callback(report(order))).statusCode).toBe(200);
    await h.quiesce();
    const second = await callback(report(order, { externalTxnId: "second-charge" }));
    expect(second.statusCode).toBe(409);
    const payments = await rows<{ external_txn_id: string; status: string }>(
      h.services.database.db,
      sql`select external_txn_id, status from payments where order_id = ${order.id} order by status`,
    );
    expect(payments).toEqual([
      { external_txn_id: `txn-${order.id}`, status: "captured" },
      { external_txn_id: "second-charge", status: "refund_pending" },
    ]);
    expect((await getOrder(order.id)).payment).toMatchObject({ status: "captured", externalTxnId: `txn-${order.id}` });
  });

  describe("signatures", () => {
    it("refuses a missing, wrongly keyed, tampered, stale or future signature with 401 BAD_SIGNATURE", async () => {
      const order = await placeExternal();
      const body = JSON.stringify(report(order));
      const now = Math.floor(Date.now() / 1000);
      const forged = [
        null,
        "",
        "garbage",
        `t=${now}`,
        sign(body, now, "not-the-webhook-secret"),
        sign(body.replace(`"amount":${order.total}`, '"amount":1'), now),
        // Well outside the 300 s window, so a slow run cannot drift either one back inside it.
        sign(body, now - 330),
        sign(body, now + 330),
        sign(body, now).replace(/.$/, (last) => (last === "0" ? "1" : "0")),
      ];
      for (const signature of forged) {
        const r = await callback(body, { signature });
        expect(r.statusCode, String(signature)).toBe(401);
        expect(r.json().code).toBe("BAD_SIGNATURE");
      }
      // A body altered after signing (an amount changed in transit) fails too.
      const tampered = await callback(body, { signature: sign(body, now), raw: body.replace("succeeded", "failed") });
      expect(tampered.statusCode).toBe(401);
      expect((await getOrder(order.id)).status).toBe("CREATED");
    });

    it("accepts a signature within the 300 s window and a rotated secret's second v1 entry", async () => {
      const order = await placeExternal();
      const body = JSON.stringify(report(order));
      // Inside the window with room to spare for a slow machine between here and the check.
      const t = Math.floor(Date.now() / 1000) - 270;
      const v1 = (secret: string) => sign(body, t, secret).split(",v1=")[1];
      const r = await callback(body, { signature: `t=${t},v1=${v1("retired-secret")},v1=${v1(TEST_SECRETS.webhookSecret)}` });
      expect(r.statusCode).toBe(200);
    });

    it("checks the signature before the body: an unsigned malformed body is 401, a signed one 400", async () => {
      expect((await callback({ nonsense: true }, { signature: null })).statusCode).toBe(401);
      const signedBad = await callback({ tenantId: "pay", orderId: "x" });
      expect(signedBad.statusCode).toBe(400);
      expect(signedBad.json().code).toBe("VALIDATION_FAILED");
    });

    it("matches the worked example of the README", () => {
      const secret = "whsec_example_0123456789";
      const body = '{"tenantId":"demo","orderId":"ord_06h0ytv86s3x4w3wcd0vjnp8hr","externalTxnId":"txn_1001","amount":7300,"currency":"CNY","status":"succeeded"}';
      expect(sign(body, 1795555200, secret)).toBe(`t=1795555200,v1=${createHmac("sha256", secret).update(`1795555200.${body}`).digest("hex")}`);
      expect(sign(body, 1795555200, secret)).toBe("t=1795555200,v1=4d33aa7669abf29c40d8d9e85c0e48339c5c1b61d3ddd57c974cdd8fc4c29921");
    });
  });
});
