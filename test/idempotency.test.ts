import { sql } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { rows } from "../src/db/client.ts";
import { manualClock } from "../src/kit/clock.ts";
import { createIdempotency, IdempotencyClaimLost } from "../src/kit/idempotency.ts";
import { openTestPglite, openTestPostgres, postgresUrl, testDatabases } from "./support/databases.ts";
import { createHarness, type Harness } from "./support/harness.ts";

describe.each(testDatabases())("Idempotency-Key on $name", (database) => {
  const clock = manualClock(new Date());
  let h: Harness;
  let admin: string;
  let gus: string;
  let hal: string;

  beforeAll(async () => {
    h = await createHarness(await database.open(), { clock });
    admin = await h.token("idem", "root", ["admin"]);
    gus = await h.token("idem", "gus");
    hal = await h.token("idem", "hal");
    await h.seed("idem", { products: [["PEN", 500, 10]], credits: [["gus", 100_000], ["hal", 100_000]] });
  });
  afterAll(() => h.close());

  const place = (token: string, key: string | undefined, body = h.orderBody([["PEN", 1]]), headers: Record<string, string> = {}) =>
    h.call("POST", "/api/v1/orders", { token, body, headers: { ...(key ? { "idempotency-key": key } : {}), ...headers } });
  const ordersOf = async (token: string) => (await h.call("GET", "/api/v1/orders?limit=100", { token })).body.data as { id: string }[];
  const available = async () => (await h.call("GET", "/api/v1/products/PEN", { token: admin })).body.available as number;

  it("answers the same key and body with the first answer again, marked replayed, and places one order", async () => {
    const before = await available();
    const first = await place(gus, "k-1");
    expect(first.status).toBe(201);
    expect(first.headers["idempotent-replayed"]).toBeUndefined();
    const again = await place(gus, "k-1");
    expect(again.status).toBe(201);
    expect(again.headers["idempotent-replayed"]).toBe("true");
    expect(again.body).toEqual(first.body);
    expect(again.headers.location).toBe(first.headers.location);
    expect(again.headers.etag).toBe(first.headers.etag);
    expect(await available()).toBe(before - 1);
    expect((await ordersOf(gus)).filter((o) => o.id === first.body.id)).toHaveLength(1);
  });

  it("refuses the same key with another body (422), and keeps keys apart per user", async () => {
    const reused = await place(gus, "k-1", h.orderBody([["PEN", 2]]));
    expect(reused.status).toBe(422);
    expect(reused.body.code).toBe("IDEMPOTENCY_KEY_REUSED");
    const otherUser = await place(hal, "k-1");
    expect(otherUser.status).toBe(201);
    expect(otherUser.headers["idempotent-replayed"]).toBeUndefined();
  });

  it("does not store validation errors, but does store business refusals", async () => {
    const invalid = await place(gus, "k-2", h.orderBody([["PEN", 0]]));
    expect(invalid.status).toBe(400);
    expect((await place(gus, "k-2")).status).toBe(201);

    const tooMany = h.orderBody([["PEN", 999]], { payment: { method: "external" } });
    const refused = await place(gus, "k-3", tooMany);
    expect(refused.status).toBe(409);
    expect(refused.body.code).toBe("OUT_OF_STOCK");
    await h.call("POST", "/api/v1/products/PEN/stock", { token: admin, body: { delta: 1000 } });
    const replayed = await place(gus, "k-3", tooMany);
    expect(replayed.status).toBe(409);
    expect(replayed.headers["idempotent-replayed"]).toBe("true");
    expect(replayed.headers["content-type"]).toContain("application/problem+json");
  });

  it("replays a 202 of an asynchronous placement as it was answered", async () => {
    const first = await place(gus, "k-async", undefined, { prefer: "respond-async" });
    expect(first.status).toBe(202);
    await h.services.localPlacement?.drain();
    const again = await place(gus, "k-async", undefined, { prefer: "respond-async" });
    expect(again.status).toBe(202);
    expect(again.body.id).toBe(first.body.id);
  });

  it("credits a wallet once per key", async () => {
    const credit = () => h.call("POST", "/api/v1/accounts/hal/credits", { token: admin, body: { amount: 700 }, headers: { "idempotency-key": "credit-1" } });
    const first = await credit();
    const second = await credit();
    expect(second.body).toEqual(first.body);
    expect(second.headers["idempotent-replayed"]).toBe("true");
    expect((await h.call("GET", "/api/v1/accounts/hal", { token: admin })).body.balance).toBe(first.body.balance);
  });

  it("refuses a malformed key", async () => {
    for (const key of ["x".repeat(256), "has space"]) {
      const r = await place(gus, key);
      expect(r.status).toBe(400);
      expect(r.body.errors[0].path).toBe("headers.idempotency-key");
    }
  });

  it("keeps keys 24 h and more; the purge job forgets them after 48 h", async () => {
    const first = await place(gus, "k-old");
    clock.advance(47 * 3600 * 1000);
    expect(await h.services.idempotency.purge(h.services.database.db, new Date(clock.now().getTime() - 48 * 3600 * 1000))).toBe(0);
    expect((await place(gus, "k-old")).headers["idempotent-replayed"]).toBe("true");
    clock.advance(2 * 3600 * 1000);
    expect(await h.services.idempotency.purge(h.services.database.db, new Date(clock.now().getTime() - 48 * 3600 * 1000))).toBeGreaterThan(0);
    const fresh = await place(gus, "k-old");
    expect(fresh.status).toBe(201);
    expect(fresh.body.id).not.toBe(first.body.id);
  });

  it("lets a claim whose request died be taken over after its lease, and the old holder then cannot store", async () => {
    const leaseClock = manualClock(new Date());
    const idempotency = createIdempotency({ clock: leaseClock, leaseMs: 60_000 });
    const key = { tenantId: "idem", userId: "gus", key: "lease", fingerprint: "f" };
    const first = await idempotency.claim(h.services.database, key);
    expect(first.kind).toBe("claimed");
    leaseClock.advance(30_000);
    expect((await idempotency.claim(h.services.database, key)).kind).toBe("in_use");
    leaseClock.advance(31_000);
    const second = await idempotency.claim(h.services.database, key);
    expect(second.kind).toBe("claimed");
    if (first.kind !== "claimed" || second.kind !== "claimed") return;
    await expect(
      h.services.database.tenant("idem", (tx) => idempotency.complete(tx, first.claim, { status: 201, body: {}, headers: {} })),
    ).rejects.toThrow(IdempotencyClaimLost);
    await h.services.database.tenant("idem", (tx) => idempotency.complete(tx, second.claim, { status: 201, body: { ok: 1 }, headers: {} }));
    const replay = await idempotency.claim(h.services.database, key);
    expect(replay).toEqual({ kind: "replay", response: { status: 201, body: { ok: 1 }, headers: {} } });
  });
});

describe("Idempotency-Key with the saga strategy", () => {
  it("replays the answer that was sent after waiting for the saga, not the provisional 202", async () => {
    const h = await createHarness(await openTestPglite(), { strategy: "saga" });
    try {
      await h.seed("sg", { products: [["CUP", 300, 1]], credits: [["ann", 10_000]] });
      const token = await h.token("sg", "ann");
      const place = (key: string) => h.call("POST", "/api/v1/orders", { token, body: h.orderBody([["CUP", 1]]), headers: { "idempotency-key": key } });
      const placed = await place("s-1");
      expect(placed.status).toBe(201);
      const replay = await place("s-1");
      expect(replay.status).toBe(201);
      expect(replay.headers["idempotent-replayed"]).toBe("true");
      expect(replay.body).toEqual(placed.body);
      const refused = await place("s-2");
      expect(refused.status).toBe(409);
      expect(refused.body.code).toBe("OUT_OF_STOCK");
      const again = await place("s-2");
      expect(again.status).toBe(409);
      expect(again.body).toMatchObject({ code: "OUT_OF_STOCK", orderId: refused.body.orderId });
    } finally {
      await h.close();
    }
  });
});

describe.runIf(postgresUrl())("Idempotency-Key under concurrency on PostgreSQL", () => {
  let h: Harness;
  beforeAll(async () => {
    h = await createHarness(await openTestPostgres({ max: 32 }));
    await h.seed("burst", { products: [["ONE", 100, 1000]], credits: [["ivy", 1_000_000]] });
  });
  afterAll(() => h?.close());

  it("never places two orders for one key sent 30 times at once", async () => {
    const token = await h.token("burst", "ivy");
    const body = h.orderBody([["ONE", 1]]);
    const answers = await Promise.all(
      Array.from({ length: 30 }, () => h.call("POST", "/api/v1/orders", { token, body, headers: { "idempotency-key": "same-key" } })),
    );
    // The request that holds the key answers 201, or 202 if its outcome took longer than the wait (a
    // loaded machine); the others are told the key is in use, or replayed what it stored.
    const statuses = answers.map((a) => a.status);
    expect(statuses.every((s) => s === 201 || s === 202 || s === 409), JSON.stringify(answers.filter((a) => ![201, 202, 409].includes(a.status)).map((a) => [a.status, a.body]))).toBe(true);
    expect(answers.filter((a) => a.status === 409).every((a) => a.body.code === "IDEMPOTENCY_KEY_IN_USE")).toBe(true);
    const ids = new Set(answers.filter((a) => a.status === 201 || a.status === 202).map((a) => a.body.id));
    expect(ids.size).toBe(1);
    const [count] = await rows<{ n: number }>(h.services.database.db, sql`select count(*)::int as n from orders where tenant_id = 'burst'`);
    expect(count?.n).toBe(1);
    const after = await h.call("POST", "/api/v1/orders", { token, body, headers: { "idempotency-key": "same-key" } });
    expect([201, 202]).toContain(after.status);
    expect(ids.has(after.body.id)).toBe(true);
  });
});
