import type { ChildProcess } from "node:child_process";
import { sql } from "drizzle-orm";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { rows } from "../src/db/client.ts";
import { noteOrderRefunded } from "../src/flows/refunds.ts";
import { refundIdOf } from "../src/modules/payments/refunds.ts";
import { serve } from "./support/cli.ts";
import { openTestPostgres, postgresUrl } from "./support/databases.ts";
import { createHarness, type Harness, TEST_SECRETS } from "./support/harness.ts";
import { invariantViolations } from "./support/invariants.ts";
import { startPaymentProvider } from "./support/payment-provider.ts";
import { waitFor } from "./support/split.ts";

// Refunds of money that arrived for an order that could no longer be paid (contract §4: recorded as
// refund_pending), through a real HTTP provider simulator that makes each refund once per
// idempotency key and never deduplicates by transaction: a second key for one payment would show
// as a second refund. Checked after retries, lost answers, refusals, concurrent refunders, a lease
// taken over, and a refunder killed with SIGKILL between the provider's refund and its record.

type Provider = Awaited<ReturnType<typeof startPaymentProvider>>;
interface PaymentRow {
  status: string;
  refund_attempts: number;
  refund_error: string | null;
  provider_refund_id: string | null;
}

describe.runIf(postgresUrl())("refunds (PostgreSQL, all-in-one, provider simulator over HTTP)", () => {
  let provider: Provider;
  let h: Harness;
  let admin: string;
  let buyer: string;
  const db = () => h.services.database.db;
  const refundDue = () => h.services.refunder?.refundDue() ?? Promise.reject(new Error("no refunder: ORDERLY_REFUND_URL not read"));

  beforeAll(async () => {
    provider = await startPaymentProvider(TEST_SECRETS.webhookSecret);
    // No delay between attempts, so a test asks again at once.
    h = await createHarness(await openTestPostgres({ max: 12 }), { env: { ORDERLY_REFUND_URL: provider.url, ORDERLY_REFUND_TIMEOUT_MS: "10000" }, refundDelaysMs: [0] });
    admin = await h.token("ref", "root", ["admin"]);
    buyer = await h.token("ref", "rita");
    await h.seed("ref", { products: [["MUG", 700, 1_000]] });
  });
  afterAll(async () => {
    await h?.close();
    await provider?.close();
  });
  afterEach(() => provider.behave("refund"));

  /** An external-payment order, cancelled, and then the provider's report that it took the money: 409, kept as refund_pending. */
  async function lateMoney(): Promise<{ orderId: string; externalTxnId: string; amount: number }> {
    const placed = await h.call("POST", "/api/v1/orders", { token: buyer, body: h.orderBody([["MUG", 1]], { payment: { method: "external" } }) });
    expect(placed.status).toBe(201);
    expect((await h.call("POST", `/api/v1/orders/${placed.body.id}/cancel`, { token: buyer })).status).toBe(200);
    const report = { tenantId: "ref", orderId: placed.body.id, externalTxnId: `txn-${placed.body.id}`, amount: placed.body.total, currency: "CNY", status: "succeeded" };
    const raw = JSON.stringify(report);
    const callback = await h.app.inject({
      method: "POST",
      url: "/api/v1/payments/callback",
      headers: { "content-type": "application/json", "orderly-signature": h.services.webhooks.sign(raw) },
      payload: raw,
    });
    expect(callback.statusCode).toBe(409);
    return { orderId: placed.body.id, externalTxnId: report.externalTxnId, amount: report.amount };
  }

  const paymentOf = async (orderId: string) =>
    (await rows<PaymentRow>(db(), sql`select status, refund_attempts, refund_error, provider_refund_id from payments where order_id = ${orderId} and outcome = 'succeeded'`))[0];
  const requestsFor = (orderId: string) => provider.requests.filter((r) => r.body.includes(`"orderId":"${orderId}"`));

  it("refunds money that came for a cancelled order with one signed, keyed request; the payment and the order then read refunded", async () => {
    const late = await lateMoney();
    expect((await h.call("GET", `/api/v1/orders/${late.orderId}`, { token: buyer })).body.payment.status).toBe("refund_pending");

    expect(await refundDue()).toBe(1);
    const [request] = requestsFor(late.orderId);
    expect(request).toMatchObject({ signed: true, key: refundIdOf({ tenantId: "ref", ...late }) });
    expect(JSON.parse(request!.body)).toEqual({ refundId: request!.key, tenantId: "ref", orderId: late.orderId, externalTxnId: late.externalTxnId, amount: late.amount, currency: "CNY" });
    expect(await paymentOf(late.orderId)).toMatchObject({ status: "refunded", refund_attempts: 1, refund_error: null, provider_refund_id: provider.refunds.get(request!.key!)?.id });
    expect((await h.call("GET", `/api/v1/orders/${late.orderId}`, { token: buyer })).body.payment.status).toBe("refunded");
    const timeline = await h.call("GET", `/api/v1/admin/orders/${late.orderId}/timeline`, { token: admin });
    expect(JSON.stringify(timeline.body)).toContain("refunded");
    // Nothing is due any more: the next run sends nothing.
    expect(await refundDue()).toBe(0);
    expect(provider.refundedOf(late.externalTxnId)).toBe(late.amount);
  });

  it("asks again with the same key after a 503 and after a lost answer, and the provider pays once", async () => {
    const late = await lateMoney();
    provider.behave("unavailable", "drop");
    await refundDue();
    expect(await paymentOf(late.orderId)).toMatchObject({ status: "refund_pending", refund_error: "the provider answered 503" });
    await refundDue(); // the refund is made, and its answer lost
    expect(await paymentOf(late.orderId)).toMatchObject({ status: "refund_pending", refund_attempts: 2 });
    expect((await paymentOf(late.orderId))?.refund_error).toMatch(/cannot be reached|no answer/);
    await refundDue(); // the same key: the provider answers about the refund it made
    expect(await paymentOf(late.orderId)).toMatchObject({ status: "refunded", refund_attempts: 3, refund_error: null });
    expect(new Set(requestsFor(late.orderId).map((r) => r.key)).size).toBe(1);
    expect(provider.refundedOf(late.externalTxnId)).toBe(late.amount);
  });

  it("asks again after a pending answer, and records the refund once the provider says it is done", async () => {
    const late = await lateMoney();
    provider.behave("pending");
    await refundDue();
    expect(await paymentOf(late.orderId)).toMatchObject({ status: "refund_pending", refund_attempts: 1, refund_error: null });
    await refundDue();
    expect(await paymentOf(late.orderId)).toMatchObject({ status: "refunded", refund_attempts: 2 });
    expect(provider.refundedOf(late.externalTxnId)).toBe(late.amount);
  });

  it("leaves money parked by the upgrade alone, and shows it to an operator", async () => {
    const late = await lateMoney();
    // What the migration does to money kept before refunds existed.
    await db().execute(sql`update payments set refund_next_at = 'infinity' where order_id = ${late.orderId} and status = 'refund_pending'`);
    expect(await refundDue()).toBe(0);
    const run = await h.call("POST", "/api/v1/admin/reconciliation", { token: admin });
    const flagged = (run.body.findings as { subject: string; detail: string }[]).find((f) => f.subject === late.orderId);
    expect(flagged?.detail).toContain("recorded before Orderly refunded");
    // Released by an operator (docs/operations.md): refunded like any other.
    await db().execute(sql`update payments set refund_next_at = null where order_id = ${late.orderId} and refund_next_at = 'infinity'`);
    expect(await refundDue()).toBe(1);
    expect(await paymentOf(late.orderId)).toMatchObject({ status: "refunded" });
  });

  it("keeps a refused refund pending with the provider's reason, flags it for an operator, and refunds it once the provider agrees", async () => {
    const late = await lateMoney();
    provider.behave("refuse");
    await refundDue();
    expect(await paymentOf(late.orderId)).toMatchObject({ status: "refund_pending", refund_attempts: 1 });
    const run = await h.call("POST", "/api/v1/admin/reconciliation", { token: admin });
    const flagged = (run.body.findings as { check: string; subject: string; detail: string }[]).find((f) => f.check === "refund-pending" && f.subject === late.orderId);
    expect(flagged?.detail).toMatch(/^700 CNY taken by transaction txn-\S+ is waiting to be refunded \(1 requests; the last: the provider answered 422: .*cannot be refunded/);
    provider.behave("refund");
    await refundDue();
    expect(await paymentOf(late.orderId)).toMatchObject({ status: "refunded", refund_attempts: 2 });
    const again = await h.call("POST", "/api/v1/admin/reconciliation", { token: admin });
    expect((again.body.findings as { subject: string }[]).map((f) => f.subject)).not.toContain(late.orderId);
    expect(provider.refundedOf(late.externalTxnId)).toBe(late.amount);
  });

  it("refunds 30 payments once each with four refunders at once, and a lease taken over sends the same key", async () => {
    const many = await Promise.all(Array.from({ length: 30 }, () => lateMoney()));
    // One payment's request is held at the provider; meanwhile its lease is ended by hand, so a
    // second refunder claims it and asks again while the first still waits for its answer.
    provider.behave("hold", "refund");
    const held = provider.arrival("hold");
    const runs = Array.from({ length: 4 }, () => refundDue());
    const heldKey = await held;
    const heldPayment = many.find((m) => refundIdOf({ tenantId: "ref", ...m }) === heldKey);
    expect(heldPayment).toBeDefined();
    await db().execute(sql`update payments set refund_next_at = now() - interval '1 second' where order_id = ${heldPayment!.orderId} and status = 'refund_pending'`);
    await refundDue(); // the takeover: the same key, answered about the refund already made
    provider.release();
    await Promise.all(runs);

    for (const m of many) {
      expect(await paymentOf(m.orderId)).toMatchObject({ status: "refunded" });
      expect(provider.refundedOf(m.externalTxnId)).toBe(m.amount);
    }
    expect(requestsFor(heldPayment!.orderId).map((r) => r.key)).toEqual([heldKey, heldKey]);
    const [counts] = await rows<{ refunded: number; pending: number }>(
      db(),
      sql`select count(*) filter (where status = 'refunded')::int as refunded, count(*) filter (where status = 'refund_pending')::int as pending from payments where tenant_id = 'ref'`,
    );
    expect(counts).toEqual({ refunded: provider.refunds.size, pending: 0 });
    expect(await invariantViolations(db())).toEqual([]);
  });
});

describe.runIf(postgresUrl())("refunds in the saga strategy (PostgreSQL, in-process bus)", () => {
  let provider: Provider;
  let h: Harness;
  beforeAll(async () => {
    provider = await startPaymentProvider(TEST_SECRETS.webhookSecret);
    h = await createHarness(await openTestPostgres({ max: 8 }), { strategy: "saga", env: { ORDERLY_REFUND_URL: provider.url } });
    await h.seed("sag", { products: [["CUP", 300, 10]] });
  });
  afterAll(async () => {
    await h?.close();
    await provider?.close();
  });

  it("refunds at the payments service and tells the orders service by message, whose order then reads refunded", async () => {
    const buyer = await h.token("sag", "sam");
    const placed = await h.call("POST", "/api/v1/orders", { token: buyer, body: h.orderBody([["CUP", 1]], { payment: { method: "external" } }) });
    await h.quiesce();
    expect((await h.call("POST", `/api/v1/orders/${placed.body.id}/cancel`, { token: buyer })).status).toBe(200);
    await h.quiesce(); // the payments service's copy of the order hears of the cancel
    const raw = JSON.stringify({ tenantId: "sag", orderId: placed.body.id, externalTxnId: "txn-sag", amount: 300, currency: "CNY", status: "succeeded" });
    const callback = await h.app.inject({ method: "POST", url: "/api/v1/payments/callback", headers: { "content-type": "application/json", "orderly-signature": h.services.webhooks.sign(raw) }, payload: raw });
    expect(callback.statusCode).toBe(409);
    await h.quiesce();
    expect((await h.call("GET", `/api/v1/orders/${placed.body.id}`, { token: buyer })).body.payment.status).toBe("refund_pending");

    expect(await h.services.refunder?.refundDue()).toBe(1);
    await h.quiesce();
    expect((await h.call("GET", `/api/v1/orders/${placed.body.id}`, { token: buyer })).body.payment.status).toBe("refunded");
    expect(provider.refundedOf("txn-sag")).toBe(300);
  });

  it("lets payments.refunded overtake payments.refund-pending: the cancelled order hears of both", async () => {
    const buyer = await h.token("sag", "sue");
    const placed = await h.call("POST", "/api/v1/orders", { token: buyer, body: h.orderBody([["CUP", 1]], { payment: { method: "external" } }) });
    await h.quiesce();
    expect((await h.call("POST", `/api/v1/orders/${placed.body.id}/cancel`, { token: buyer })).status).toBe(200);
    expect((await h.call("GET", `/api/v1/orders/${placed.body.id}`, { token: buyer })).body.payment.status).toBe("voided");
    const { orders } = h.services;
    await orders.withMoves(h.services.database, "sag", (tx, moves) =>
      noteOrderRefunded(orders, tx, moves, "sag", { orderId: placed.body.id, externalTxnId: "txn-early", amount: 300, currency: "CNY" }),
    );
    const order = (await h.call("GET", `/api/v1/orders/${placed.body.id}`, { token: buyer })).body;
    expect(order.payment).toMatchObject({ status: "refunded", externalTxnId: "txn-early" });
  });
});

describe.runIf(postgresUrl())("refunds across a crash (PostgreSQL, orderly serve killed with SIGKILL)", () => {
  let provider: Provider;
  const children: ChildProcess[] = [];
  afterAll(async () => {
    for (const child of children) if (child.exitCode === null) child.kill("SIGKILL");
    await provider?.close();
  });

  it("refunds once when the process dies after the provider refunded and before the answer was recorded", async () => {
    provider = await startPaymentProvider(TEST_SECRETS.webhookSecret);
    const database = await openTestPostgres({ max: 4 });
    // The money to refund: a cancelled order's late payment, made through a harness without a provider
    // (it runs no jobs; it closes, and drops, the database at the end).
    const h = await createHarness(database);
    try {
      const buyer = await h.token("crash", "cy");
      await h.seed("crash", { products: [["LAMP", 900, 10]] });
      const placed = await h.call("POST", "/api/v1/orders", { token: buyer, body: h.orderBody([["LAMP", 1]], { payment: { method: "external" } }) });
      await h.call("POST", `/api/v1/orders/${placed.body.id}/cancel`, { token: buyer });
      const raw = JSON.stringify({ tenantId: "crash", orderId: placed.body.id, externalTxnId: "txn-crash", amount: 900, currency: "CNY", status: "succeeded" });
      const callback = await h.app.inject({ method: "POST", url: "/api/v1/payments/callback", headers: { "content-type": "application/json", "orderly-signature": h.services.webhooks.sign(raw) }, payload: raw });
      expect(callback.statusCode).toBe(409);

      const env = {
        DATABASE_URL: database.url,
        ORDERLY_JWT_SECRET: TEST_SECRETS.jwtSecret,
        ORDERLY_WEBHOOK_SECRET: TEST_SECRETS.webhookSecret,
        ORDERLY_REFUND_URL: provider.url,
        // Longer than the kill takes, so the request is cut by the crash, never by its own timeout.
        ORDERLY_REFUND_TIMEOUT_MS: "3000",
        ORDERLY_DEMO: "0",
      };
      provider.behave("hold");
      const held = provider.arrival("hold");
      const first = await serve(["--no-migrate"], env, (child) => children.push(child));
      await held; // the refund is made at the provider; its answer waits
      first.child.kill("SIGKILL");
      await new Promise((resolve) => first.child.once("exit", resolve));
      const [orphan] = await rows<{ status: string; refund_attempts: number }>(
        database.db,
        sql`select status, refund_attempts from payments where order_id = ${placed.body.id} and outcome = 'succeeded'`,
      );
      expect(orphan).toEqual({ status: "refund_pending", refund_attempts: 0 }); // nothing recorded before the crash

      provider.behave("refund");
      const second = await serve(["--no-migrate"], env, (child) => children.push(child));
      // After the dead process's lease (2 × 3 s + 2 s), the next run asks again with the same key.
      await waitFor(
        async () => (await rows<{ status: string }>(database.db, sql`select status from payments where order_id = ${placed.body.id} and status = 'refunded'`)).length === 1,
        "the payment to read refunded after the restart",
        40_000,
      );
      second.child.kill("SIGTERM");
      await new Promise((resolve) => second.child.once("exit", resolve));
      const key = refundIdOf({ tenantId: "crash", orderId: placed.body.id, externalTxnId: "txn-crash" });
      expect(provider.requests.map((r) => r.key)).toEqual([key, key]);
      expect(provider.refunds.size).toBe(1);
      expect(provider.refundedOf("txn-crash")).toBe(900);
      const [order] = await rows<{ payment_status: string }>(database.db, sql`select payment_status from orders where id = ${placed.body.id}`);
      expect(order?.payment_status).toBe("refunded");
    } finally {
      await h.close();
    }
  });
});
