import { createHmac } from "node:crypto";
import { sql } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { rows } from "../src/db/client.ts";
import { newId } from "../src/kit/ids.ts";
import { openTestPglite, openTestPostgres } from "./support/databases.ts";
import { createHarness, gatedBus, type Harness, TEST_SECRETS } from "./support/harness.ts";

const sign = (body: string, t = Math.floor(Date.now() / 1000)) => `t=${t},v1=${createHmac("sha256", TEST_SECRETS.webhookSecret).update(`${t}.${body}`).digest("hex")}`;

interface Event {
  at: string;
  kind: string;
  title: string;
  durationMs: number | null;
  ref: string | null;
  details: Record<string, unknown>;
}

describe("admin API: order timeline (saga strategy, one database)", () => {
  let h: Harness;
  let admin: string;
  let ada: string;

  beforeAll(async () => {
    h = await createHarness(await openTestPglite(), { strategy: "saga" });
    admin = await h.token("ops", "olga", ["admin"]);
    ada = await h.token("ops", "ada");
    await h.seed("ops", { products: [["CUP", 1200, 10]], credits: [["ada", 50_000]] });
  });
  afterAll(() => h.close());

  it("shows a wallet order's state moves, each saga step with its duration, its messages and who handled them, in time order", async () => {
    const placed = await h.call("POST", "/api/v1/orders", { token: ada, body: h.orderBody([["CUP", 2]]) });
    expect(placed.status).toBe(201);
    await h.quiesce();
    const r = await h.call("GET", `/api/v1/admin/orders/${placed.body.id}/timeline`, { token: admin });
    expect(r.status).toBe(200);
    expect(r.body.order).toMatchObject({ id: placed.body.id, status: "PAID" });
    const events = r.body.events as Event[];
    const times = events.map((e) => Date.parse(e.at));
    expect(times).toEqual([...times].sort((a, b) => a - b));

    const moves = events.filter((e) => e.kind === "state").map((e) => e.title);
    expect(moves).toHaveLength(2);
    expect(moves[0]).toMatch(/^new → PENDING/);
    expect(moves[1]).toMatch(/^PENDING → PAID/);
    const steps = events.filter((e) => e.kind === "saga-step");
    expect(steps.map((e) => e.details.step).sort()).toEqual(["create-shipment", "debit-wallet", "reserve-stock"]);
    for (const step of steps) {
      expect(step.details).toMatchObject({ op: "try", outcome: "ok" });
      expect(step.durationMs).toBeGreaterThanOrEqual(0);
    }
    expect(events.some((e) => e.kind === "saga" && e.title === "saga place-order completed")).toBe(true);
    // Every command it sent went out, and each was handled by the service that owns the step.
    const commands = events.filter((e) => e.kind === "message" && e.details.op === "try" && e.details.topic !== "saga.reply");
    expect(commands).toHaveLength(3);
    for (const command of commands) {
      expect(command.details.status).toBe("published");
      expect(events.some((e) => e.kind === "message-handled" && e.ref === command.ref)).toBe(true);
    }
    expect(events.some((e) => e.kind === "message" && (e.details.topic as string).startsWith("order."))).toBe(true);
  });

  it("shows a refused step, the compensation of the others, and the callback's payment", async () => {
    const refused = await h.call("POST", "/api/v1/orders", { token: ada, body: h.orderBody([["CUP", 1]], { payment: { method: "external" }, couponCode: "NOPE" }) });
    expect(refused.status).toBe(409);
    await h.quiesce();
    const events = (await h.call("GET", `/api/v1/admin/orders/${refused.body.orderId}/timeline`, { token: admin })).body.events as Event[];
    expect(events.find((e) => e.kind === "saga-step" && e.details.step === "redeem-coupon")?.details).toMatchObject({ op: "try", outcome: "COUPON_UNAVAILABLE" });
    expect(events.some((e) => e.kind === "saga" && /compensated \(COUPON_UNAVAILABLE\)/.test(e.title))).toBe(true);
    expect(events.filter((e) => e.kind === "state").at(-1)?.title).toBe("PENDING → CANCELLED (COUPON_UNAVAILABLE)");

    const external = await h.call("POST", "/api/v1/orders", { token: ada, body: h.orderBody([["CUP", 1]], { payment: { method: "external" } }) });
    expect(external.status).toBe(201);
    await h.quiesce();
    const report = JSON.stringify({ tenantId: "ops", orderId: external.body.id, externalTxnId: "txn-tl-1", amount: external.body.total, currency: "CNY", status: "succeeded" });
    const paid = await h.app.inject({ method: "POST", url: "/api/v1/payments/callback", headers: { "content-type": "application/json", "orderly-signature": sign(report) }, payload: report });
    expect(paid.statusCode).toBe(200);
    await h.quiesce();
    const after = (await h.call("GET", `/api/v1/admin/orders/${external.body.id}/timeline`, { token: admin })).body.events as Event[];
    expect(after.find((e) => e.kind === "payment")).toMatchObject({ ref: "txn-tl-1", details: { outcome: "succeeded", status: "captured", amount: 1200 } });
    expect(after.some((e) => e.kind === "saga" && e.title === "saga capture-order completed")).toBe(true);
    expect(after.filter((e) => e.kind === "state").at(-1)?.title).toMatch(/→ PAID/);
  });

  it("answers 403 to a customer and 404 for another tenant's order, as for a missing one", async () => {
    const placed = await h.call("POST", "/api/v1/orders", { token: ada, body: h.orderBody([["CUP", 1]]) });
    expect((await h.call("GET", `/api/v1/admin/orders/${placed.body.id}/timeline`, { token: ada })).status).toBe(403);
    const stranger = await h.token("elsewhere", "eve", ["admin"]);
    const other = await h.call("GET", `/api/v1/admin/orders/${placed.body.id}/timeline`, { token: stranger });
    const missing = await h.call("GET", "/api/v1/admin/orders/ord_missing/timeline", { token: admin });
    expect([other.status, other.body.code, missing.status, missing.body.code]).toEqual([404, "ORDER_NOT_FOUND", 404, "ORDER_NOT_FOUND"]);
  });

  it("finds an order by its number: a customer only their own, an admin any of the tenant's", async () => {
    const placed = await h.call("POST", "/api/v1/orders", { token: ada, body: h.orderBody([["CUP", 1]]) });
    const number = placed.body.orderNumber as string;
    const find = async (token: string) => (await h.call("GET", `/api/v1/orders?orderNumber=${number}`, { token })).body.data.map((o: { id: string }) => o.id);
    expect(await find(ada)).toEqual([placed.body.id]);
    expect(await find(admin)).toEqual([placed.body.id]);
    expect(await find(await h.token("ops", "bo"))).toEqual([]);
    expect(await find(await h.token("elsewhere", "eve", ["admin"]))).toEqual([]);
  });

  it("documents every admin operation in OpenAPI with an operationId", async () => {
    const doc = (await h.call("GET", "/docs/json")).body;
    const expected: [string, string, string][] = [
      ["/api/v1/admin/orders/{id}/timeline", "get", "getOrderTimeline"],
      ["/api/v1/admin/status", "get", "getOperationsStatus"],
      ["/api/v1/admin/reconciliation", "get", "getReconciliation"],
      ["/api/v1/admin/reconciliation", "post", "runReconciliation"],
      ["/api/v1/admin/sagas", "get", "listSagas"],
      ["/api/v1/admin/dead-letters", "get", "listDeadLetters"],
      ["/api/v1/admin/dead-letters/{id}", "get", "getDeadLetter"],
      ["/api/v1/admin/dead-letters/{id}/retry", "post", "retryDeadLetter"],
      ["/api/v1/admin/dead-letters/{id}/skip", "post", "skipDeadLetter"],
      ["/api/v1/admin/dead-letters/{id}/resolve", "post", "resolveDeadLetter"],
    ];
    for (const [path, method, operationId] of expected) expect(doc.paths[path]?.[method]?.operationId, path).toBe(operationId);
  });
});

describe("admin API: sagas and dead letters (PostgreSQL)", () => {
  let h: Harness;
  let admin: string;
  let other: string;
  const bus = gatedBus();

  beforeAll(async () => {
    h = await createHarness(await openTestPostgres({ max: 4 }), { bus });
    admin = await h.token("dl", "olga", ["admin"]);
    other = await h.token("dl-other", "oscar", ["admin"]);
    await h.seed("dl", { products: [["BOX", 500, 10]], credits: [["bea", 10_000]] });
  });
  afterAll(async () => {
    bus.release();
    await h.close();
  });

  it("lists running sagas, and as stuck those started over 30 s ago, one tenant's only", async () => {
    bus.hold();
    const bea = await h.token("dl", "bea");
    const placed = await h.call("POST", "/api/v1/orders", { token: bea, body: h.orderBody([["BOX", 1]]), headers: { prefer: "respond-async" } });
    expect(placed.status).toBe(202);
    const running = await h.call("GET", "/api/v1/admin/sagas?state=running", { token: admin });
    expect(running.status).toBe(200);
    expect(running.body.data.map((s: { orderId: string }) => s.orderId)).toContain(placed.body.id);
    expect((await h.call("GET", "/api/v1/admin/sagas?state=stuck", { token: admin })).body.data).toEqual([]);

    await h.services.database.db.execute(sql`update sagas set created_at = now() - interval '1 minute' where id = ${placed.body.id}`);
    const stuck = await h.call("GET", "/api/v1/admin/sagas?state=stuck", { token: admin });
    expect(stuck.body.data).toHaveLength(1);
    expect(stuck.body.data[0]).toMatchObject({ id: placed.body.id, type: "place-order", status: "running", stuck: true });
    expect(stuck.body.data[0].steps.find((s: { step: string }) => s.step === "reserve-stock")).toMatchObject({ state: "trying", attempts: 1 });
    expect((await h.call("GET", "/api/v1/admin/sagas?state=stuck", { token: other })).body.data).toEqual([]);
    expect((await h.call("GET", "/api/v1/admin/sagas?state=lost", { token: admin })).status).toBe(400);

    // The console's overview: the same saga in the tenant's backlog, none of it in another's.
    const status = await h.call("GET", "/api/v1/admin/status", { token: admin });
    expect(status.status).toBe(200);
    expect(status.body).toMatchObject({ operator: { tenantId: "dl", userId: "olga" }, checks: { database: "ok", notifications: "ok" }, backlog: { sagasActive: 1, sagasStuck: 1 } });
    expect((await h.call("GET", "/api/v1/admin/status", { token: other })).body.backlog).toEqual({ sagasActive: 0, sagasStuck: 0, deadLettersOpen: 0, outboxPending: 0, outboxOldestAgeSeconds: 0 });
    expect((await h.call("GET", "/api/v1/admin/status", { token: bea })).status).toBe(403);

    bus.release();
    await h.quiesce();
    expect((await h.call("GET", "/api/v1/admin/sagas?state=stuck", { token: admin })).body.data).toEqual([]);
  });

  it("retries an outbox letter by sending its message again, audited with the acting admin", async () => {
    const db = h.services.database.db;
    const messageId = newId("msg");
    const now = new Date().toISOString();
    await db.execute(sql`insert into outbox_messages (id, tenant_id, topic, payload, status, attempts, next_attempt_at, created_at, last_error)
                         values (${messageId}, 'dl', 'test.redrive', '{}'::jsonb, 'dead', 6, ${now}::timestamptz, ${now}::timestamptz, 'nack')`);
    const letter = await h.services.deadLetters.record(db, { tenantId: "dl", source: "outbox", reference: messageId, topic: "test.redrive", payload: {}, reason: "broker nacked it 6 times" });

    const listed = await h.call("GET", "/api/v1/admin/dead-letters", { token: admin });
    expect(listed.body.data.map((l: { id: string }) => l.id)).toContain(letter);
    expect((await h.call("POST", `/api/v1/admin/dead-letters/${letter}/retry`, { token: other })).status).toBe(404);

    const retried = await h.call("POST", `/api/v1/admin/dead-letters/${letter}/retry`, { token: admin });
    expect(retried.status).toBe(200);
    expect(retried.body).toMatchObject({ id: letter, status: "retried", actions: [{ action: "retry", actor: "olga", note: null }] });
    await h.quiesce();
    const [row] = await rows<{ status: string }>(db, sql`select status from outbox_messages where id = ${messageId}`);
    expect(row?.status).toBe("published");

    const again = await h.call("POST", `/api/v1/admin/dead-letters/${letter}/retry`, { token: admin });
    expect([again.status, again.body.code]).toEqual([409, "DEAD_LETTER_NOT_OPEN"]);
  });

  it("refuses to retry what it cannot re-drive with 409 saying why; resolves with a note; skips; filters and pages by status", async () => {
    const db = h.services.database.db;
    const saga = await h.services.deadLetters.record(db, { tenantId: "dl", source: "saga", reference: "ord_gone", reason: "step timed out" });
    const refused = await h.call("POST", `/api/v1/admin/dead-letters/${saga}/retry`, { token: admin });
    expect(refused.status).toBe(409);
    expect(refused.body.code).toBe("NOTHING_TO_REDRIVE");
    expect(refused.body.detail).toMatch(/a saga resends its own commands/);
    expect((await h.call("GET", `/api/v1/admin/dead-letters/${saga}`, { token: admin })).body).toMatchObject({ status: "open", actions: [] });

    expect((await h.call("POST", `/api/v1/admin/dead-letters/${saga}/resolve`, { token: admin, body: { note: " " } })).status).toBe(400);
    const resolved = await h.call("POST", `/api/v1/admin/dead-letters/${saga}/resolve`, { token: admin, body: { note: "refunded by hand, ticket 42" } });
    expect(resolved.body).toMatchObject({ status: "resolved", note: "refunded by hand, ticket 42", actions: [{ action: "resolve", actor: "olga", note: "refunded by hand, ticket 42" }] });

    const consumer = await h.services.deadLetters.record(db, { tenantId: "dl", source: "consumer", reference: "msg_x", consumer: "shipping", topic: "shipping.create", payload: { a: 1 }, reason: "bad payload" });
    expect((await h.call("POST", `/api/v1/admin/dead-letters/${consumer}/skip`, { token: admin })).body).toMatchObject({ status: "skipped", actions: [{ action: "skip", actor: "olga" }] });

    const open = (await h.call("GET", "/api/v1/admin/dead-letters?status=open", { token: admin })).body.data as { id: string }[];
    expect(open.map((l) => l.id)).not.toContain(saga);
    const first = await h.call("GET", "/api/v1/admin/dead-letters?status=all&limit=1", { token: admin });
    expect(first.body.data).toHaveLength(1);
    expect(first.body.nextCursor).toEqual(expect.any(String));
    const second = await h.call("GET", `/api/v1/admin/dead-letters?status=all&limit=1&cursor=${first.body.nextCursor}`, { token: admin });
    expect(second.body.data).toHaveLength(1);
    expect(second.body.data[0].id).not.toBe(first.body.data[0].id);
    expect((await h.call("GET", "/api/v1/admin/dead-letters?status=all", { token: other })).body.data).toEqual([]);
    expect((await h.call("GET", `/api/v1/admin/dead-letters/${consumer}`, { token: other })).status).toBe(404);
  });
});
