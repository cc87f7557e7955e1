import { randomBytes } from "node:crypto";
import { afterAll, describe, expect, it } from "vitest";
import { createMemoryRateLimiter, createRedisRateLimiter, type RateLimiter } from "../src/kit/rate-limiter.ts";
import { openTestPglite } from "./support/databases.ts";
import { createHarness, type Harness } from "./support/harness.ts";

/** Redis of REDIS_URL; under CI=true a missing one fails instead of skipping. */
function redisUrl(): string | undefined {
  const url = process.env.REDIS_URL;
  if (!url && process.env.CI === "true") throw new Error("REDIS_URL is not set: the Redis suites cannot run in CI");
  return url;
}

const closers: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const close of closers) await close();
});

async function drain(limiter: RateLimiter, key: string, n: number) {
  const decisions = [];
  for (let i = 0; i < n; i++) decisions.push(await limiter.take(key));
  return decisions;
}

describe("token bucket in memory", () => {
  it("allows the burst, refuses the next with a retry time, and refills at the rate", async () => {
    let now = 0;
    const limiter = createMemoryRateLimiter({ rps: 2, burst: 3, now: () => now });
    const first = await drain(limiter, "u", 4);
    expect(first.map((d) => d.allowed)).toEqual([true, true, true, false]);
    expect(first[2]).toMatchObject({ remaining: 0 });
    expect(first[3]).toMatchObject({ allowed: false, retryAfterS: 1 });
    expect((await limiter.take("someone-else")).allowed).toBe(true);
    now += 500; // one token back at 2 per second
    expect((await drain(limiter, "u", 2)).map((d) => d.allowed)).toEqual([true, false]);
    now += 10_000;
    expect((await drain(limiter, "u", 4)).map((d) => d.allowed)).toEqual([true, true, true, false]);
  });
});

describe.runIf(redisUrl())("token bucket in Redis", () => {
  const prefix = `orderly-test:${randomBytes(4).toString("hex")}:`;

  it("is one bucket for every replica, decided atomically", async () => {
    const a = createRedisRateLimiter({ url: redisUrl() as string, rps: 1, burst: 5, prefix });
    const b = createRedisRateLimiter({ url: redisUrl() as string, rps: 1, burst: 5, prefix });
    closers.push(a.close, b.close);
    await Promise.all([a.ready(), b.ready()]);
    const decisions = await Promise.all(Array.from({ length: 12 }, (_, i) => (i % 2 ? a : b).take("shared")));
    expect(decisions.filter((d) => d.allowed)).toHaveLength(5);
    const refused = decisions.find((d) => !d.allowed);
    expect(refused?.retryAfterS).toBeGreaterThanOrEqual(1);
    await new Promise((r) => setTimeout(r, 1100));
    expect((await a.take("shared")).allowed).toBe(true);
    expect((await b.take("shared")).allowed).toBe(false);
  });
});

describe("rate limits over HTTP", () => {
  const env = { ORDERLY_RATE_LIMIT_RPS: "1", ORDERLY_RATE_LIMIT_BURST: "3" };
  let h: Harness;

  it("answers 429 RATE_LIMITED with Retry-After and RateLimit headers per (tenant, user)", async () => {
    h = await createHarness(await openTestPglite(), { env });
    closers.push(() => h.close());
    const jo = await h.token("rl", "jo");
    const answers = [];
    for (let i = 0; i < 4; i++) answers.push(await h.call("GET", "/api/v1/products", { token: jo }));
    expect(answers.map((a) => a.status)).toEqual([200, 200, 200, 429]);
    expect(answers[0]?.headers).toMatchObject({ "ratelimit-limit": "3", "ratelimit-remaining": "2", "ratelimit-policy": "3;w=3" });
    const limited = answers[3] as (typeof answers)[number];
    expect(limited.body.code).toBe("RATE_LIMITED");
    expect(Number(limited.headers["retry-after"])).toBeGreaterThanOrEqual(1);
    expect(limited.headers["ratelimit-remaining"]).toBe("0");
    // Another user of the same tenant, and the same user id in another tenant, have their own buckets.
    expect((await h.call("GET", "/api/v1/products", { token: await h.token("rl", "kim") })).status).toBe(200);
    expect((await h.call("GET", "/api/v1/products", { token: await h.token("other", "jo") })).status).toBe(200);
  });

  it("does not limit /healthz, /readyz, /metrics and /docs", async () => {
    for (let i = 0; i < 10; i++) {
      for (const url of ["/healthz", "/readyz", "/metrics", "/docs/json"]) expect((await h.call("GET", url)).status).toBe(200);
    }
  });

  it("limits the payment callback per source address", async () => {
    const from = (remoteAddress: string) =>
      h.app.inject({ method: "POST", url: "/api/v1/payments/callback", remoteAddress, headers: { "content-type": "application/json" }, payload: "{}" });
    const statuses = [];
    for (let i = 0; i < 4; i++) statuses.push((await from("127.0.0.9")).statusCode);
    expect(statuses).toEqual([401, 401, 401, 429]);
    expect((await from("127.0.0.10")).statusCode).toBe(401);
  });

  it("believes X-Forwarded-For only from the proxies of ORDERLY_TRUST_PROXY", async () => {
    const behind = await createHarness(await openTestPglite(), { env: { ...env, ORDERLY_TRUST_PROXY: "10.0.0.0/8" } });
    closers.push(behind.close);
    const via = (remoteAddress: string, client: string) =>
      behind.app.inject({
        method: "POST",
        url: "/api/v1/payments/callback",
        remoteAddress,
        headers: { "content-type": "application/json", "x-forwarded-for": client },
        payload: "{}",
      });
    // Through the trusted proxy each client has its own bucket.
    const one = [];
    for (let i = 0; i < 4; i++) one.push((await via("10.1.2.3", "203.0.113.7")).statusCode);
    expect(one).toEqual([401, 401, 401, 429]);
    expect((await via("10.1.2.3", "203.0.113.8")).statusCode).toBe(401);
    // From anywhere else the header is ignored: a client cannot pick a fresh bucket by writing it.
    const spoofed = [];
    for (let i = 0; i < 4; i++) spoofed.push((await via("192.0.2.50", `198.51.100.${i}`)).statusCode);
    expect(spoofed).toEqual([401, 401, 401, 429]);
    // Without the setting nobody is believed (the harness above, h, trusts no proxy).
    const plain = [];
    for (let i = 0; i < 4; i++) {
      plain.push(
        (await h.app.inject({ method: "POST", url: "/api/v1/payments/callback", remoteAddress: "127.0.0.20", headers: { "content-type": "application/json", "x-forwarded-for": `198.51.100.${i}` }, payload: "{}" }))
          .statusCode,
      );
    }
    expect(plain).toEqual([401, 401, 401, 429]);
  });

  it.runIf(redisUrl())("shares the buckets between two app instances through Redis", async () => {
    const redisEnv = { ...env, REDIS_URL: redisUrl() as string };
    const a = await createHarness(await openTestPglite(), { env: redisEnv });
    const b = await createHarness(await openTestPglite(), { env: redisEnv });
    closers.push(a.close, b.close);
    await Promise.all([a.services.rateLimiter.ready(), b.services.rateLimiter.ready()]);
    const user = `shared-${randomBytes(4).toString("hex")}`;
    const tokenA = await a.token("rl", user);
    const tokenB = await b.token("rl", user);
    const statuses = [
      (await a.call("GET", "/api/v1/products", { token: tokenA })).status,
      (await b.call("GET", "/api/v1/products", { token: tokenB })).status,
      (await a.call("GET", "/api/v1/products", { token: tokenA })).status,
      (await b.call("GET", "/api/v1/products", { token: tokenB })).status,
    ];
    expect(statuses).toEqual([200, 200, 200, 429]);
    expect((await a.call("GET", "/readyz")).body.checks).toEqual({ database: "ok", cache: "ok", notifications: "ok" });
  });

  it("lets requests through when Redis cannot be reached, rather than failing the shop", async () => {
    const down = await createHarness(await openTestPglite(), { env: { ...env, REDIS_URL: "redis://127.0.0.1:1" } });
    closers.push(down.close);
    const token = await down.token("rl", "lee");
    for (let i = 0; i < 5; i++) expect((await down.call("GET", "/api/v1/products", { token })).status).toBe(200);
    expect((await down.call("GET", "/readyz")).status).toBe(503);
  });
});
