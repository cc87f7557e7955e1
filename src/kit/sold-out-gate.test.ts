import { randomBytes } from "node:crypto";
import { afterAll, describe, expect, it } from "vitest";
import { stallingProxy } from "../../test/support/faults.ts";
import { freePort } from "../../test/support/ports.ts";
import { availableKey, createMemoryMarkStore, createRedisMarkStore, createSoldOutGate, type MarkStore, type SoldOutGate } from "./sold-out-gate.ts";

const redisUrl = process.env.REDIS_URL;
if (!redisUrl && process.env.CI === "true") throw new Error("REDIS_URL is not set: the Redis store cannot be tested in CI");

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * This file's marks under a prefix of its own. Under the default one they would share Redis's index
 * of marks with every server of the other tests running meanwhile, and a reconciliation walks the
 * whole index: one here renewed a flash sale's marks with a TTL of 600 ms.
 */
const prefix = `orderly-test-${randomBytes(4).toString("hex")}:`;

const stores: { name: string; open(): MarkStore }[] = [
  { name: "memory", open: () => createMemoryMarkStore() },
  ...(redisUrl ? [{ name: "redis", open: () => createRedisMarkStore({ url: redisUrl, prefix, deadlineMs: 1_000 }) }] : []),
];

describe.each(stores)("the sold-out gate on the $name store", ({ open }) => {
  const opened: SoldOutGate[] = [];
  const gateOf = async (options: { ttlMs?: number; available?: Map<string, number> } = {}) => {
    const gate = createSoldOutGate({ store: open(), ttlMs: options.ttlMs, readAvailable: options.available && (async () => options.available as Map<string, number>) });
    opened.push(gate);
    expect(await gate.ready(5_000)).toBe(true);
    return gate;
  };
  afterAll(async () => {
    for (const gate of opened) await gate.close();
  });
  // Tenants unique to this run: the Redis store is shared with everything else on the machine.
  const tenant = () => `t-${randomBytes(5).toString("hex")}`;

  /** What the database would do: a refusal the request learns from. */
  async function refusedByDatabase(gate: SoldOutGate, tenantId: string, lines: { sku: string; quantity: number }[], named: string[]) {
    const decision = await gate.check(tenantId, lines);
    expect(decision.kind).toBe("admitted");
    if (decision.kind === "admitted") await gate.learn(decision.ticket, named);
  }

  it("admits everything until the database refuses, then refuses that quantity or more of that SKU only", async () => {
    const gate = await gateOf();
    const t = tenant();
    expect((await gate.check(t, [{ sku: "HOT", quantity: 1 }])).kind).toBe("admitted");
    await refusedByDatabase(gate, t, [{ sku: "HOT", quantity: 3 }], ["HOT"]);
    expect(await gate.check(t, [{ sku: "HOT", quantity: 3 }])).toEqual({ kind: "sold-out", sku: "HOT" });
    expect(await gate.check(t, [{ sku: "OTHER", quantity: 1 }, { sku: "HOT", quantity: 5 }])).toEqual({ kind: "sold-out", sku: "HOT" });
    // Fewer than 3 units may still be there: 2 goes to the database.
    expect((await gate.check(t, [{ sku: "HOT", quantity: 2 }])).kind).toBe("admitted");
    // Another tenant's SKU of the same name is not marked.
    expect((await gate.check(tenant(), [{ sku: "HOT", quantity: 3 }])).kind).toBe("admitted");
    // A refusal of 1 unit means none left: the stronger mark wins.
    await refusedByDatabase(gate, t, [{ sku: "HOT", quantity: 1 }], ["HOT"]);
    expect((await gate.check(t, [{ sku: "HOT", quantity: 1 }])).kind).toBe("sold-out");
    await refusedByDatabase(gate, t, [{ sku: "OTHER", quantity: 4 }], ["OTHER"]);
    expect((await gate.check(t, [{ sku: "HOT", quantity: 1 }])).kind).toBe("sold-out");
  });

  it("marks only the lines the refusal named, or the only line of a one-line order", async () => {
    const gate = await gateOf();
    const t = tenant();
    await refusedByDatabase(gate, t, [{ sku: "A", quantity: 1 }, { sku: "B", quantity: 1 }], ["B"]);
    expect((await gate.check(t, [{ sku: "A", quantity: 1 }])).kind).toBe("admitted");
    expect((await gate.check(t, [{ sku: "B", quantity: 1 }])).kind).toBe("sold-out");
    // A refusal that names nothing (the saga's detail): a two-line order teaches nothing, a one-line order its line.
    await refusedByDatabase(gate, t, [{ sku: "C", quantity: 1 }, { sku: "D", quantity: 1 }], []);
    expect((await gate.check(t, [{ sku: "C", quantity: 1 }])).kind).toBe("admitted");
    expect((await gate.check(t, [{ sku: "D", quantity: 1 }])).kind).toBe("admitted");
    await refusedByDatabase(gate, t, [{ sku: "D", quantity: 2 }], []);
    expect((await gate.check(t, [{ sku: "D", quantity: 2 }])).kind).toBe("sold-out");
  });

  it("clears a mark when stock comes back, and a refusal that raced the return leaves no mark", async () => {
    const gate = await gateOf();
    const t = tenant();
    await refusedByDatabase(gate, t, [{ sku: "HOT", quantity: 1 }], ["HOT"]);
    await gate.stockReturned(t, ["HOT"]);
    expect((await gate.check(t, [{ sku: "HOT", quantity: 1 }])).kind).toBe("admitted");

    // Admitted, refused by the database before a restock committed, told of the refusal after it.
    const late = await gate.check(t, [{ sku: "HOT", quantity: 1 }]);
    await gate.stockReturned(t, ["HOT"]);
    if (late.kind === "admitted") await gate.learn(late.ticket, ["HOT"]);
    expect((await gate.check(t, [{ sku: "HOT", quantity: 1 }])).kind).toBe("admitted");

    // Same race on a SKU never seen before (no epoch yet when the request was admitted).
    const first = await gate.check(t, [{ sku: "NEW", quantity: 1 }]);
    await gate.stockReturned(t, ["NEW"]);
    if (first.kind === "admitted") await gate.learn(first.ticket, ["NEW"]);
    expect((await gate.check(t, [{ sku: "NEW", quantity: 1 }])).kind).toBe("admitted");
  });

  it("lets a mark expire after its TTL when nothing re-checks it", async () => {
    const gate = await gateOf({ ttlMs: 1_000 });
    const t = tenant();
    await refusedByDatabase(gate, t, [{ sku: "HOT", quantity: 1 }], ["HOT"]);
    expect((await gate.check(t, [{ sku: "HOT", quantity: 1 }])).kind).toBe("sold-out");
    await sleep(1_200);
    expect((await gate.check(t, [{ sku: "HOT", quantity: 1 }])).kind).toBe("admitted");
  });

  it("reconciles against the database: clears marks whose stock is back, renews the rest, leaves alone what the database does not hold", async () => {
    const t = tenant();
    const available = new Map<string, number>();
    const gate = await gateOf({ ttlMs: 2_000, available });
    await refusedByDatabase(gate, t, [{ sku: "BACK", quantity: 2 }], ["BACK"]);
    await refusedByDatabase(gate, t, [{ sku: "GONE", quantity: 1 }], ["GONE"]);
    await refusedByDatabase(gate, t, [{ sku: "FEW", quantity: 5 }], ["FEW"]);
    await refusedByDatabase(gate, t, [{ sku: "ELSEWHERE", quantity: 1 }], ["ELSEWHERE"]);
    available.set(availableKey(t, "BACK"), 2); // came back without an announcement
    available.set(availableKey(t, "GONE"), 0);
    available.set(availableKey(t, "FEW"), 4); // still fewer than 5
    // ELSEWHERE is not in this database (another deployment's, sharing the Redis): its mark is not this reconciliation's to judge.
    await sleep(1_000);
    // Exactly these: the marks of the file's other tests (other tenants) are not in this database either.
    expect(await gate.reconcile({ force: true })).toEqual({ cleared: 1, renewed: 2 });
    expect((await gate.check(t, [{ sku: "BACK", quantity: 2 }])).kind).toBe("admitted");
    await sleep(1_200); // past the first TTL: only a renewal keeps these
    expect((await gate.check(t, [{ sku: "ELSEWHERE", quantity: 1 }])).kind).toBe("admitted");
    expect((await gate.check(t, [{ sku: "GONE", quantity: 1 }])).kind).toBe("sold-out");
    expect((await gate.check(t, [{ sku: "FEW", quantity: 5 }])).kind).toBe("sold-out");
    expect((await gate.check(t, [{ sku: "FEW", quantity: 4 }])).kind).toBe("admitted");
  });
});

describe.runIf(redisUrl)("the sold-out gate shared through Redis", () => {
  it("shares marks between replicas, and lets one replica a period lead the reconciliation", async () => {
    const a = createSoldOutGate({ store: createRedisMarkStore({ url: redisUrl as string, prefix }) });
    const b = createSoldOutGate({ store: createRedisMarkStore({ url: redisUrl as string, prefix }) });
    try {
      expect(await a.ready(5_000)).toBe(true);
      expect(await b.ready(5_000)).toBe(true);
      const t = `t-${randomBytes(5).toString("hex")}`;
      const decision = await a.check(t, [{ sku: "HOT", quantity: 1 }]);
      if (decision.kind === "admitted") await a.learn(decision.ticket, ["HOT"]);
      expect((await b.check(t, [{ sku: "HOT", quantity: 1 }])).kind).toBe("sold-out");
      await b.stockReturned(t, ["HOT"]);
      expect((await a.check(t, [{ sku: "HOT", quantity: 1 }])).kind).toBe("admitted");
      // Lead of a long period, under a prefix of this test's own: one of the replicas leads, once.
      const own = `orderly-test-${randomBytes(4).toString("hex")}:`;
      const replicas = [createRedisMarkStore({ url: redisUrl as string, prefix: own }), createRedisMarkStore({ url: redisUrl as string, prefix: own })];
      try {
        for (const r of replicas) expect(await r.ready(5_000)).toBe(true);
        const leads = await Promise.all([...replicas, ...replicas].map((r) => r.lead(5_000)));
        expect(leads.filter(Boolean)).toHaveLength(1);
      } finally {
        for (const r of replicas) await r.close();
      }
    } finally {
      await a.close();
      await b.close();
    }
  });

  it("answers every check of requests in flight together within its deadline: none waits for the replies of another", async () => {
    // Each reply of Redis reaches the gate 250 ms late, within a 400 ms deadline (150 ms to spare for a
    // busy machine). A client that holds a command until the replies of the ones before it are read
    // (ioredis's auto-pipelining) answers the later checks after 500 ms: past the deadline, so the gate
    // admits what it should refuse.
    const proxy = await stallingProxy(Number(new URL(redisUrl as string).port || 6379), { replyDelayMs: 250 });
    const errors: string[] = [];
    const gate = createSoldOutGate({ store: createRedisMarkStore({ url: `redis://127.0.0.1:${proxy.port}`, prefix, deadlineMs: 400 }), onStoreError: (_e, during) => errors.push(during) });
    try {
      expect(await gate.ready(5_000)).toBe(true);
      const t = `t-${randomBytes(5).toString("hex")}`;
      const decision = await gate.check(t, [{ sku: "HOT", quantity: 1 }]);
      if (decision.kind === "admitted") await gate.learn(decision.ticket, ["HOT"]);
      // Requests that arrive one after another, each in its own turn of the event loop.
      const checks: Promise<unknown>[] = [];
      for (let i = 0; i < 5; i++) {
        checks.push(gate.check(t, [{ sku: "HOT", quantity: 1 }]));
        await new Promise((resolve) => setImmediate(resolve));
      }
      expect(await Promise.all(checks)).toEqual(Array.from({ length: 5 }, () => ({ kind: "sold-out", sku: "HOT" })));
      expect(errors).toEqual([]);
    } finally {
      await gate.close();
      await proxy.close();
    }
  });

  it("admits at once, never throwing, while Redis cannot be reached", async () => {
    const errors: string[] = [];
    const gate = createSoldOutGate({
      store: createRedisMarkStore({ url: `redis://127.0.0.1:${await freePort()}` }),
      readAvailable: async () => new Map(),
      onStoreError: (_e, during) => errors.push(during),
    });
    try {
      expect(await gate.ready(200)).toBe(false);
      const started = Date.now();
      for (let i = 0; i < 200; i++) {
        const decision = await gate.check("t", [{ sku: "HOT", quantity: 1 }]);
        expect(decision).toEqual({ kind: "admitted", ticket: undefined });
        await gate.learn(decision.kind === "admitted" ? decision.ticket : undefined, ["HOT"]);
      }
      // 200 checks without a store: no waiting on connection attempts or timeouts (a loose bound for a busy machine).
      expect(Date.now() - started).toBeLessThan(2_000);
      await gate.stockReturned("t", ["HOT"]);
      expect(await gate.reconcile({ force: true })).toEqual({ cleared: 0, renewed: 0 });
      expect(errors.filter((e) => e === "check")).toHaveLength(200);
      expect(errors).toContain("clear");
      expect(errors).toContain("reconcile");
    } finally {
      await gate.close();
    }
  });
});
