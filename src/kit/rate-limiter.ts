import type { Redis } from "ioredis";
import { boundedLru } from "./lru.ts";
import { newRedis } from "./redis-client.ts";

export interface RateDecision {
  allowed: boolean;
  /** Whole tokens left after this request. */
  remaining: number;
  /** Seconds until a token is available again (0 when allowed). */
  retryAfterS: number;
  /** Seconds until the bucket is full again. */
  resetS: number;
}

/** A token bucket per key: `burst` tokens, refilled at `rps` per second. */
export interface RateLimiter {
  readonly rps: number;
  readonly burst: number;
  take(key: string): Promise<RateDecision>;
  /** Resolves once the store can be used (rejects if it cannot be reached within a few seconds). */
  ready(): Promise<void>;
  close(): Promise<void>;
  ping(): Promise<void>;
}

function decide(tokens: number, allowed: boolean, rps: number, burst: number): RateDecision {
  return {
    allowed,
    remaining: Math.floor(tokens),
    retryAfterS: allowed ? 0 : Math.max(1, Math.ceil((1 - tokens) / rps)),
    resetS: Math.ceil((burst - tokens) / rps),
  };
}

/** Buckets in process memory (one replica), the least recently used forgotten past `maxKeys`. */
export function createMemoryRateLimiter(options: { rps: number; burst: number; maxKeys?: number; now?: () => number }): RateLimiter {
  const { rps, burst } = options;
  const now = options.now ?? Date.now;
  const buckets = boundedLru<string, { tokens: number; at: number }>(options.maxKeys ?? 100_000);
  return {
    rps,
    burst,
    async take(key) {
      const at = now();
      const bucket = buckets.get(key) ?? { tokens: burst, at };
      const tokens = Math.min(burst, bucket.tokens + ((at - bucket.at) / 1000) * rps);
      const allowed = tokens >= 1;
      const left = allowed ? tokens - 1 : tokens;
      buckets.set(key, { tokens: left, at });
      return decide(left, allowed, rps, burst);
    },
    ready: async () => {},
    close: async () => {},
    ping: async () => {},
  };
}

// One atomic script per request, on Redis's own clock, so every replica shares one bucket per key.
const TAKE_TOKEN = `
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil then tokens = burst; at = now end
tokens = math.min(burst, tokens + math.max(0, now - at) * rate / 1000)
local allowed = 0
if tokens >= 1 then tokens = tokens - 1; allowed = 1 end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, tostring(tokens)}
`;

type WithTakeToken = Redis & { orderlyTakeToken(key: string, rps: number, burst: number): Promise<[number, string]> };

/** Buckets in Redis, shared by all replicas. */
export function createRedisRateLimiter(options: { url: string; rps: number; burst: number; prefix?: string }): RateLimiter {
  const { rps, burst } = options;
  const prefix = options.prefix ?? "orderly:rl:";
  // No offline queue: while Redis is unreachable take() rejects at once, so callers never wait on it.
  const redis = newRedis(options.url, { maxRetriesPerRequest: 1, enableOfflineQueue: false, connectTimeout: 2_000 }) as WithTakeToken;
  redis.on("error", () => {}); // it reconnects by itself
  redis.defineCommand("orderlyTakeToken", { numberOfKeys: 1, lua: TAKE_TOKEN });
  return {
    rps,
    burst,
    async take(key) {
      const [allowed, tokens] = await redis.orderlyTakeToken(`${prefix}${key}`, rps, burst);
      return decide(Number(tokens), allowed === 1, rps, burst);
    },
    async ready() {
      if (redis.status === "ready") return;
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => {
          redis.off("ready", onReady);
          reject(new Error("Redis did not answer within 3 s"));
        }, 3_000);
        const onReady = () => {
          clearTimeout(timer);
          resolve();
        };
        redis.once("ready", onReady);
      });
    },
    async close() {
      await redis.quit().catch(() => redis.disconnect());
    },
    async ping() {
      await redis.ping();
    },
  };
}
