import { randomBytes } from "node:crypto";
import { sql } from "drizzle-orm";
import { afterAll, describe, expect, it } from "vitest";
import { Redis } from "ioredis";
import { openPostgres } from "../src/db/postgres.ts";
import { cacheKey } from "../src/kit/cache.ts";
import { databaseScope } from "../src/kit/cache-redis.ts";
import { openTestPostgres, postgresUrl } from "./support/databases.ts";
import { cuttableProxy } from "./support/faults.ts";
import { createHarness, type Harness } from "./support/harness.ts";

// Two replicas of the all-in-one app on one PostgreSQL database, each with its own pool, LISTEN
// connection and caches: what two pods behind an ingress are. With Redis they share L2.

function redisUrl(): string | undefined {
  const url = process.env.REDIS_URL;
  if (!url && process.env.CI === "true") throw new Error("REDIS_URL is not set: the Redis suites cannot run in CI");
  return url;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Calls until `check` holds and answers how long that took; fails past `ms`. */
async function msUntil(check: () => Promise<boolean>, ms: number): Promise<number> {
  const started = performance.now();
  while (!(await check())) {
    if (performance.now() - started > ms) throw new Error(`not within ${ms} ms`);
    await sleep(5);
  }
  return performance.now() - started;
}

const closers: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const close of closers.reverse()) await close();
});

async function replicas(redisEnv: Record<string, string>, redisUrlOfB = redisEnv.REDIS_URL): Promise<[Harness, Harness]> {
  // The tests poll every few milliseconds: no rate limit in the way.
  const env = { ...redisEnv, ORDERLY_RATE_LIMIT_RPS: "1000000", ORDERLY_RATE_LIMIT_BURST: "1000000" };
  const database = await openTestPostgres({ max: 5 });
  const second = openPostgres(database.url, { max: 5, lockTimeoutMs: 10_000 });
  const a = await createHarness(database, { env });
  const b = await createHarness(second, { env: redisUrlOfB ? { ...env, REDIS_URL: redisUrlOfB } : env });
  closers.push(() => a.close()); // runs last: it drops the database
  closers.push(() => b.close());
  return [a, b];
}

const metric = (text: string, name: string, labels: string) => {
  const line = text.split("\n").find((l) => l.startsWith(`${name}{${labels}}`));
  return line === undefined ? 0 : Number(line.split(" ").pop());
};

const cases = [
  { name: "without Redis: NOTIFY and L1 only", redis: false },
  { name: "with Redis as the shared second level", redis: true },
];

describe.runIf(postgresUrl())("the cache across two replicas", () => {
  describe.each(cases.filter((c) => !c.redis || redisUrl()))("$name", ({ redis }) => {
    it("serves a price changed on the other replica within a second, stock always live, and counts its hits", async () => {
      const [a, b] = await replicas(redis ? { REDIS_URL: redisUrl() as string } : {});
      const tenant = `cache-${randomBytes(4).toString("hex")}`;
      const adminB = await b.token(tenant, "root", ["admin"]);
      const reader = await a.token(tenant, "ann");
      await b.seed(tenant, { products: [["MUG", 1000, 5]] });
      // Creating MUG on B invalidates it everywhere once committed: wait until A has heard it, so it
      // cannot land between A's reads below and empty the entry they count on.
      await msUntil(async () => metric((await a.call("GET", "/metrics")).body as string, "orderly_cache_invalidations_total", 'cache="catalogue"') >= 1, 5_000);

      const priceOnA = async () => (await a.call("GET", "/api/v1/products/MUG", { token: reader })).body;
      expect(await priceOnA()).toEqual({ sku: "MUG", name: "Product MUG", price: 1000, currency: "CNY", available: 5 });
      expect((await priceOnA()).price).toBe(1000);
      let metrics = (await a.call("GET", "/metrics")).body as string;
      expect(metric(metrics, "orderly_cache_requests_total", 'cache="catalogue",level="memory",result="hit"')).toBeGreaterThanOrEqual(1);
      expect(metric(metrics, "orderly_cache_loads_total", 'cache="catalogue",result="ok"')).toBe(1);

      if (redis) {
        // B never read MUG: its first read comes from A's entry in Redis, not from the database.
        // A writes Redis after answering: wait until the entry is there.
        const redis = new Redis(redisUrl() as string);
        const key = `orderly:cache:${await databaseScope(a.services.database)}:catalogue:v:${cacheKey(tenant, "MUG")}`;
        await msUntil(async () => (await redis.exists(key)) === 1, 5_000).finally(() => redis.disconnect());
        expect((await b.call("GET", "/api/v1/products/MUG", { token: adminB })).body.price).toBe(1000);
        const metricsB = (await b.call("GET", "/metrics")).body as string;
        expect(metric(metricsB, "orderly_cache_requests_total", 'cache="catalogue",level="redis",result="hit"')).toBe(1);
        expect(metric(metricsB, "orderly_cache_loads_total", 'cache="catalogue",result="ok"')).toBe(0);
      }

      // The price changes on B; A serves it promptly, and B at once (it reads its own write).
      expect((await b.call("PUT", "/api/v1/products/MUG", { token: adminB, body: { name: "Mug", price: 1500 } })).status).toBe(200);
      expect((await b.call("GET", "/api/v1/products/MUG", { token: adminB })).body.price).toBe(1500);
      const ms = await msUntil(async () => (await priceOnA()).price === 1500, 1_000);
      expect(await priceOnA()).toMatchObject({ name: "Mug", price: 1500 });
      expect(ms).toBeLessThan(1_000);

      // Stock is never cached: an adjustment on B shows on A at once, with no invalidation at all.
      expect((await b.call("POST", "/api/v1/products/MUG/stock", { token: adminB, body: { delta: 3 } })).status).toBe(200);
      expect((await priceOnA()).available).toBe(8);

      // Coupon terms: changed through B's API, dropped from A's cache.
      const termsOnA = () => a.services.couponTerms.terms(a.services.database.db, tenant, "SAVE");
      expect((await b.call("PUT", "/api/v1/coupons/SAVE", { token: adminB, body: { discount: { type: "amount", value: 100 }, maxRedemptions: 5 } })).status).toBe(201);
      expect((await termsOnA())?.discount).toEqual({ type: "amount", value: 100 });
      expect((await b.call("PUT", "/api/v1/coupons/SAVE", { token: adminB, body: { discount: { type: "percent", value: 10 }, maxRedemptions: 5 } })).status).toBe(200);
      await msUntil(async () => (await termsOnA())?.discount.type === "percent", 1_000);

      metrics = (await a.call("GET", "/metrics")).body as string;
      expect(metric(metrics, "orderly_cache_invalidations_total", 'cache="catalogue"')).toBeGreaterThanOrEqual(1);
      const ratio = metric(metrics, "orderly_cache_hit_ratio", 'cache="catalogue"');
      expect(ratio).toBeGreaterThan(0);
      expect(ratio).toBeLessThan(1);
    });
  });

  it("serves a change whose notification was lost at once, and empties its memory when LISTEN is back", async () => {
    const [a, b] = await replicas({});
    const tenant = `cache-${randomBytes(4).toString("hex")}`;
    const adminB = await b.token(tenant, "root", ["admin"]);
    const reader = await a.token(tenant, "ann");
    await b.seed(tenant, { products: [["MUG", 1000, 5]] });
    const priceOnA = async () => (await a.call("GET", "/api/v1/products/MUG", { token: reader })).body.price as number;
    let price = 1000;
    let lost = false;
    // Retried if A's LISTEN connection came back before B's change committed (then nothing was lost).
    for (let attempt = 0; attempt < 5 && !lost; attempt++) {
      expect(await priceOnA()).toBe(price);
      expect(await priceOnA()).toBe(price); // cached
      await a.services.database.db.execute(sql`select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'orderly-listen' and datname = current_database()`);
      await msUntil(async () => a.services.database.notifications() === "down", 2_000);
      price += 100;
      expect((await b.call("PUT", "/api/v1/products/MUG", { token: adminB, body: { name: "Mug", price } })).status).toBe(200);
      lost = a.services.database.notifications() === "down";
      await msUntil(async () => (await priceOnA()) === price, 1_000);
    }
    expect(lost).toBe(true);
    await msUntil(async () => a.services.database.notifications() === "live", 5_000);
    expect(await priceOnA()).toBe(price);
    const metrics = (await a.call("GET", "/metrics")).body as string;
    expect(metric(metrics, "orderly_cache_requests_total", 'cache="catalogue",level="memory",result="bypass"')).toBeGreaterThanOrEqual(1);
  });

  it.runIf(redisUrl())("answers while Redis is unreachable, and takes up Redis again once it is back", async () => {
    const url = redisUrl() as string;
    const proxy = await cuttableProxy(Number(new URL(url).port || 6379));
    closers.push(proxy.close);
    const [a, b] = await replicas({ REDIS_URL: proxy.url(url) }, url);
    const tenant = `cache-${randomBytes(4).toString("hex")}`;
    const adminB = await b.token(tenant, "root", ["admin"]);
    const reader = await a.token(tenant, "ann");
    await b.seed(tenant, { products: [["MUG", 1000, 5], ["TEA", 700, 5]] });
    const onA = async (sku: string) => {
      const started = performance.now();
      const response = await a.call("GET", `/api/v1/products/${sku}`, { token: reader });
      return { status: response.status, price: response.body.price as number, ms: performance.now() - started };
    };
    expect((await onA("MUG")).price).toBe(1000);
    expect((await b.call("GET", "/api/v1/products/TEA", { token: adminB })).body.price).toBe(700); // B's load puts TEA in Redis

    proxy.cut();
    // The change commits while A cannot reach Redis: A's L1 drops it, and it owes Redis the drop.
    expect((await b.call("PUT", "/api/v1/products/MUG", { token: adminB, body: { name: "Mug", price: 1200 } })).status).toBe(200);
    await msUntil(async () => (await onA("MUG")).price === 1200, 1_000);
    const during = await onA("TEA");
    expect(during).toMatchObject({ status: 200, price: 700 });
    expect(during.ms).toBeLessThan(500);

    proxy.restore();
    // Once back, A reads Redis again: with its L1 emptied, TEA (kept in Redis by B's reads) is a Redis hit.
    const redisHitsOnA = async () => metric((await a.call("GET", "/metrics")).body as string, "orderly_cache_requests_total", 'cache="catalogue",level="redis",result="hit"');
    await msUntil(async () => {
      const before = await redisHitsOnA();
      a.services.caching.clear();
      expect((await onA("TEA")).price).toBe(700);
      return (await redisHitsOnA()) > before;
    }, 10_000);
    expect((await onA("MUG")).price).toBe(1200);
  });
});
