import { randomBytes } from "node:crypto";
import { sql } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cuttableProxy, stallingProxy } from "../../test/support/faults.ts";
import { openTestPglite } from "../../test/support/databases.ts";
import type { Database } from "../db/client.ts";
import { createMetrics, type Metrics } from "../ops/metrics.ts";
import { type Cache, type CacheOptions, cacheKey, createCache } from "./cache.ts";
import { createInvalidations, type Invalidations } from "./cache-invalidations.ts";
import { createRedisStore } from "./cache-redis.ts";

/** Redis of REDIS_URL; under CI=true a missing one fails instead of skipping. */
function redisUrl(): string | undefined {
  const url = process.env.REDIS_URL;
  if (!url && process.env.CI === "true") throw new Error("REDIS_URL is not set: the Redis suites cannot run in CI");
  return url;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function eventually(check: () => Promise<boolean> | boolean, ms = 2_000): Promise<void> {
  const until = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`not within ${ms} ms`);
    await sleep(10);
  }
}

/** A source of truth the test changes, counting how often the caches read it. */
function source(initial: Record<string, number>) {
  const values = new Map(Object.entries(initial));
  const s = {
    values,
    loads: 0,
    keysLoaded: [] as string[][],
    one: (key: string) => async () => {
      s.loads++;
      s.keysLoaded.push([key]);
      return values.get(key);
    },
    many: async (keys: string[]) => {
      s.loads++;
      s.keysLoaded.push(keys);
      return new Map(keys.filter((k) => values.has(k)).map((k) => [k, values.get(k) as number]));
    },
  };
  return s;
}

const counted = async (metrics: Metrics, name: string, labels: Record<string, string>) => {
  const metric = (await metrics.registry.getSingleMetric(name)?.get())?.values ?? [];
  return metric.filter((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l)).reduce((sum, v) => sum + v.value, 0);
};

let database: Database;
let invalidations: Invalidations;
const closers: (() => Promise<void>)[] = [];

beforeAll(async () => {
  database = await openTestPglite();
  invalidations = createInvalidations(database);
  await invalidations.start();
});

afterAll(async () => {
  for (const close of closers.reverse()) await close();
  await invalidations.stop();
  await database.close();
});

function cache(options: Partial<CacheOptions> & { metrics?: Metrics } = {}): { cache: Cache<number>; metrics: Metrics } {
  const metrics = options.metrics ?? createMetrics();
  const name = options.name ?? `c${randomBytes(3).toString("hex")}`;
  return { cache: createCache<number>({ ttlMs: 60_000, max: 1000, invalidations, ...options, name, metrics: metrics.cache }), metrics };
}

describe("the in-process cache", () => {
  it("lets 50 concurrent misses of one key share one load", async () => {
    const { cache: c, metrics } = cache();
    let loads = 0;
    const load = async () => {
      loads++;
      await sleep(30);
      return 7;
    };
    const answers = await Promise.all(Array.from({ length: 50 }, () => c.get("k", load)));
    expect(answers).toEqual(Array(50).fill(7));
    expect(loads).toBe(1);
    expect(await c.get("k", load)).toBe(7);
    expect(loads).toBe(1);
    expect(await counted(metrics, "orderly_cache_requests_total", { level: "memory", result: "miss" })).toBe(50);
    expect(await counted(metrics, "orderly_cache_requests_total", { level: "memory", result: "hit" })).toBe(1);
    expect(await counted(metrics, "orderly_cache_loads_total", { result: "ok" })).toBe(1);
    expect(await counted(metrics, "orderly_cache_hit_ratio", {})).toBeCloseTo(1 / 51);
  });

  it("hands a value loaded before an invalidation to its callers but does not keep it", async () => {
    const { cache: c } = cache();
    const s = source({ k: 1 });
    let release = () => {};
    const gate = new Promise<void>((r) => (release = r));
    const first = c.get("k", async () => {
      const value = await s.one("k")();
      await gate; // the change commits while this load is under way
      return value;
    });
    await sleep(10);
    s.values.set("k", 2);
    await c.invalidate(["k"]);
    release();
    expect(await first).toBe(1);
    expect(await c.get("k", s.one("k"))).toBe(2);
    expect(s.loads).toBe(2);
  });

  it("caches absence, never a failed load", async () => {
    const { cache: c } = cache();
    const s = source({});
    expect(await c.get("none", s.one("none"))).toBeUndefined();
    expect(await c.get("none", s.one("none"))).toBeUndefined();
    expect(s.loads).toBe(1);
    await expect(c.get("bad", async () => Promise.reject(new Error("database down")))).rejects.toThrow("database down");
    expect(await c.get("bad", async () => 3)).toBe(3);
  });

  it("asks the loader once, for the keys no level holds", async () => {
    const { cache: c } = cache();
    const s = source({ a: 1, b: 2, c: 3 });
    expect(await c.getMany(["a"], s.many)).toEqual(new Map([["a", 1]]));
    expect(await c.getMany(["a", "b", "c", "x", "b"], s.many)).toEqual(
      new Map([
        ["a", 1],
        ["b", 2],
        ["c", 3],
      ]),
    );
    expect(s.keysLoaded).toEqual([["a"], ["b", "c", "x"]]);
    await c.getMany(["a", "b", "c", "x"], s.many);
    expect(s.loads).toBe(2);
  });

  it("shares the load of a key between overlapping getMany calls", async () => {
    const { cache: c } = cache();
    const s = source({ a: 1, b: 2, c: 3 });
    const slow = async (keys: string[]) => {
      await sleep(20);
      return s.many(keys);
    };
    const [first, second] = await Promise.all([c.getMany(["a", "b"], slow), c.getMany(["b", "c"], slow)]);
    expect([...first]).toEqual([
      ["a", 1],
      ["b", 2],
    ]);
    expect([...second].sort()).toEqual([
      ["b", 2],
      ["c", 3],
    ]);
    expect(s.keysLoaded).toEqual([["a", "b"], ["c"]]);
  });

  it("keeps each entry its TTL moved by the jitter, so entries filled together expire apart", async () => {
    let now = 10_000; // lru-cache reads a start time of 0 as "no TTL"
    const perf = { now: () => now };
    const randoms = [0, 1]; // the first entry lives 90 % of the TTL, the second 110 %
    const { cache: c } = cache({ ttlMs: 1000, jitter: 0.1, perf, random: () => randoms.shift() ?? 0.5 });
    const s = source({ a: 1, b: 2 });
    await c.get("a", s.one("a"));
    await c.get("b", s.one("b"));
    now = 10_899;
    await c.getMany(["a", "b"], s.many);
    expect(s.loads).toBe(2);
    now = 10_901;
    await c.get("a", s.one("a"));
    expect(s.loads).toBe(3);
    now = 11_099;
    await c.get("b", s.one("b"));
    expect(s.loads).toBe(3);
    now = 11_101;
    await c.get("b", s.one("b"));
    expect(s.loads).toBe(4);
  });

  it("drops a key in every process when the writing transaction commits, not when it rolls back", async () => {
    const s = source({ k: 1 });
    const writer = cache({ name: "shared" });
    const reader = cache({ name: "shared" }); // another replica's L1, told by the same NOTIFY channel
    await reader.cache.get("k", s.one("k"));
    await database.db
      .transaction(async (tx) => {
        await writer.cache.invalidateOnCommit(tx, ["k"]);
        throw new Error("rolled back");
      })
      .catch(() => {});
    await sleep(50);
    await reader.cache.get("k", s.one("k"));
    expect(s.loads).toBe(1);
    await database.db.transaction(async (tx) => {
      await tx.execute(sql`select 1`);
      await writer.cache.invalidateOnCommit(tx, ["k"]);
      s.values.set("k", 2);
    });
    await eventually(async () => (await reader.cache.get("k", s.one("k"))) === 2);
    expect(await counted(reader.metrics, "orderly_cache_invalidations_total", { cache: "shared" })).toBe(1);
  });

  it("reads through to the loader, keeping nothing, while invalidations cannot arrive", async () => {
    const stopped = createInvalidations(database); // never started: no LISTEN
    const metrics = createMetrics();
    const c = createCache<number>({ name: "blind", ttlMs: 60_000, max: 10, invalidations: stopped, metrics: metrics.cache });
    const s = source({ k: 1 });
    await c.get("k", s.one("k"));
    await c.get("k", s.one("k"));
    expect(s.loads).toBe(2);
    expect(await counted(metrics, "orderly_cache_requests_total", { level: "memory", result: "bypass" })).toBe(2);
  });
});

describe.runIf(redisUrl())("the cache with Redis as its second level", () => {
  const url = redisUrl() as string;
  const scope = `test-${randomBytes(6).toString("hex")}`;
  const store = (storeUrl = url) => {
    const s = createRedisStore({ url: storeUrl, scope: async () => scope });
    closers.push(s.close);
    return s;
  };
  const ready = async (s: ReturnType<typeof store>) => eventually(() => s.usable(), 5_000);

  it("shares entries between replicas, and an invalidation drops them from both levels everywhere", async () => {
    const [storeA, storeB] = [store(), store()];
    await Promise.all([ready(storeA), ready(storeB)]);
    const a = cache({ name: "l2", store: storeA });
    const b = cache({ name: "l2", store: storeB });
    const s = source({ k: 1 });
    expect(await a.cache.get("k", s.one("k"))).toBe(1);
    await eventually(async () => (await storeB.read("l2", ["k"]))[0]?.json !== undefined); // A's write is not awaited
    expect(await b.cache.get("k", s.one("k"))).toBe(1);
    expect(s.loads).toBe(1);
    expect(await counted(b.metrics, "orderly_cache_requests_total", { level: "redis", result: "hit" })).toBe(1);
    s.values.set("k", 2);
    await database.db.transaction((tx) => a.cache.invalidateOnCommit(tx, ["k"]));
    await eventually(async () => (await b.cache.get("k", s.one("k"))) === 2);
    expect(await a.cache.get("k", s.one("k"))).toBe(2);
  });

  it("is usable at the first request once prepared at start: no request has to wait for the prefix", async () => {
    let asked = 0;
    const s = createRedisStore({ url, scope: async () => (asked++, scope) });
    closers.push(s.close);
    await s.prepare();
    expect(asked).toBe(1);
    await eventually(() => s.ping().then(() => true, () => false), 5_000); // connected
    // Unprepared, this first look would only start asking for the prefix and answer false.
    expect(s.usable()).toBe(true);
  });

  it("refuses to store a value read before an invalidation", async () => {
    const s = store();
    await ready(s);
    const [before] = await s.read("race", ["k"]);
    await s.remove("race", ["k"]); // a change committed while the reader loaded
    await s.write("race", "k", JSON.stringify({ value: 1 }), 60_000, before?.stamp as string);
    expect((await s.read("race", ["k"]))[0]?.json).toBeUndefined();
    const [after] = await s.read("race", ["k"]);
    await s.write("race", "k", JSON.stringify({ value: 2 }), 60_000, after?.stamp as string);
    expect((await s.read("race", ["k"]))[0]?.json).toBe(JSON.stringify({ value: 2 }));
  });

  it("answers from the loader at once while Redis is down, and serves nothing changed meanwhile after it is back", async () => {
    const proxy = await cuttableProxy(Number(new URL(url).port || 6379));
    closers.push(proxy.close);
    const cut = store(proxy.url(url));
    const direct = store();
    await Promise.all([ready(cut), ready(direct)]);
    const s = source({ k: 1, other: 5 });
    const replica = cache({ name: "outage", store: cut });
    expect(await replica.cache.get("k", s.one("k"))).toBe(1);
    await eventually(async () => (await direct.read("outage", ["k"]))[0]?.json !== undefined);

    proxy.cut();
    s.values.set("k", 2);
    // The change's notification arrives while Redis is unreachable: L1 drops it, the L2 drop is owed.
    await database.db.transaction((tx) => replica.cache.invalidateOnCommit(tx, ["k"]));
    const started = performance.now();
    expect(await replica.cache.get("other", s.one("other"))).toBe(5);
    await eventually(async () => (await replica.cache.get("k", s.one("k"))) === 2);
    expect(performance.now() - started).toBeLessThan(1_000);
    expect(cut.usable()).toBe(false);

    proxy.restore();
    await eventually(() => cut.usable(), 10_000);
    // The owed drop was made before Redis was read again: nobody gets the old value from it.
    expect((await direct.read("outage", ["k"]))[0]?.json).toBeUndefined();
    const fresh = cache({ name: "outage", store: direct });
    expect(await fresh.cache.get("k", s.one("k"))).toBe(2);
    // And L2 is used again.
    await eventually(async () => (await direct.read("outage", ["k"]))[0]?.json !== undefined);
    const loads = s.loads;
    expect(await cache({ name: "outage", store: cut }).cache.get("k", s.one("k"))).toBe(2);
    expect(s.loads).toBe(loads);
  });

  it("never waits more than its command timeout on a Redis that hangs, and then leaves it alone a while", async () => {
    const proxy = await stallingProxy(Number(new URL(url).port || 6379));
    closers.push(proxy.close);
    const hanging = store(`redis://127.0.0.1:${proxy.port}`);
    await ready(hanging);
    const c = cache({ name: "hang", store: hanging });
    proxy.freeze(); // connected and silent: no error, no close, only time passes
    const times: number[] = [];
    for (let i = 0; i < 10; i++) {
      const started = performance.now();
      expect(await c.cache.get(`k${i}`, async () => i)).toBe(i);
      times.push(performance.now() - started);
    }
    expect(Math.max(...times)).toBeLessThan(1_000); // the first one waits the 250 ms command timeout
    // The others do not try Redis at all: each well under the 250 ms one try would take, with room for a busy machine.
    expect(times.slice(1).every((t) => t < 200)).toBe(true);
    expect(await counted(c.metrics, "orderly_cache_requests_total", { level: "redis", result: "error" })).toBe(1);
  });
});

describe("cache keys", () => {
  it("keep parts apart whatever characters they hold", () => {
    expect(cacheKey("a:b", "c")).not.toBe(cacheKey("a", "b:c"));
    expect(cacheKey("a%3Ab", "c")).not.toBe(cacheKey("a:b", "c"));
    expect(cacheKey("t", "\ud800")).toBe("t:\ud800"); // never throws, unlike encodeURIComponent
  });
});
