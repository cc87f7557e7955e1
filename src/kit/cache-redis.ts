import { createHash } from "node:crypto";
import { sql } from "drizzle-orm";
import type { Redis } from "ioredis";
import { type Database, rows } from "../db/client.ts";
import type { SharedStore } from "./cache.ts";
import { newRedis } from "./redis-client.ts";

// Each key has a value and a generation. A drop deletes the value and bumps the generation; a write
// names the generation its reader saw and is refused if it moved, so a value loaded from the database
// before a change can never be stored after the change was dropped.
const READ = `
local out = {}
for i = 1, #KEYS, 2 do
  out[#out + 1] = redis.call('GET', KEYS[i]) or ''
  out[#out + 1] = redis.call('PTTL', KEYS[i])
  out[#out + 1] = redis.call('GET', KEYS[i + 1]) or '0'
end
return out
`;
const WRITE = `
if (redis.call('GET', KEYS[2]) or '0') ~= ARGV[3] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
`;
const REMOVE = `
for i = 1, #KEYS, 2 do
  redis.call('DEL', KEYS[i])
  redis.call('INCR', KEYS[i + 1])
  redis.call('PEXPIRE', KEYS[i + 1], ARGV[1])
end
return #KEYS / 2
`;

/** How long a generation outlives its last bump: far longer than any load between a read and its write. */
const GENERATION_MS = 15 * 60_000;
/** After a failed command, Redis is left alone this long: requests go to the database instead of waiting on it. */
const BACKOFF_MS = 1_000;
/** Drops owed past this many keys are settled by dropping every entry of the cache instead. */
const MAX_OWED = 10_000;

type CacheRedis = Redis & {
  orderlyCacheRead(...args: string[]): Promise<(string | number)[]>;
  orderlyCacheWrite(...args: string[]): Promise<number>;
  orderlyCacheRemove(...args: string[]): Promise<number>;
};

/**
 * Where this deployment's entries live in Redis: a hash of the PostgreSQL cluster, database name and
 * database oid, so deployments (or benchmark databases recreated under the same name) sharing one
 * Redis never read each other's entries.
 */
export async function databaseScope(database: Database): Promise<string> {
  const database_ = sql`current_database(), (select oid from pg_database where datname = current_database())`;
  const [row] = await rows<{ id: string }>(database.db, sql`select concat_ws('/', (select system_identifier from pg_control_system()), ${database_}) as id`).catch(() =>
    // pg_control_system() can be revoked: the server's address tells clusters apart nearly as well.
    rows<{ id: string }>(database.db, sql`select concat_ws('/', inet_server_addr(), inet_server_port(), ${database_}) as id`),
  );
  return createHash("sha256").update(row?.id ?? "").digest("hex").slice(0, 16);
}

export interface RedisStoreOptions {
  url: string;
  /** Resolves to this deployment's prefix (databaseScope); the store is unusable until it does. */
  scope: () => Promise<string>;
  /** How long a command may take before the request goes on without Redis (default 250 ms). */
  commandTimeoutMs?: number;
  now?: () => number;
}

/**
 * L2 in Redis. Built never to hold a request up: no offline queue (a command fails at once while
 * disconnected), a short command timeout, and after any failure a pause during which it reports
 * itself unusable. Drops it could not make are owed, retried when Redis answers again, and until then
 * nothing is read from it, so an entry changed during an outage is not served after it.
 */
export function createRedisStore(options: RedisStoreOptions): SharedStore & { prepare(): Promise<void>; close(): Promise<void>; ping(): Promise<void> } {
  const now = options.now ?? Date.now;
  const redis = newRedis(options.url, {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    commandTimeout: options.commandTimeoutMs ?? 250,
    connectTimeout: 2_000,
  }) as CacheRedis;
  redis.on("error", () => {}); // it reconnects by itself
  redis.defineCommand("orderlyCacheRead", { lua: READ });
  redis.defineCommand("orderlyCacheWrite", { numberOfKeys: 2, lua: WRITE });
  redis.defineCommand("orderlyCacheRemove", { lua: REMOVE });

  let prefix: string | undefined;
  let resolving: Promise<void> | undefined;
  let pausedUntil = 0;
  /** Drops owed, per cache; "all": too many, drop the whole cache. */
  const owed = new Map<string, Set<string> | "all">();
  let settling: Promise<void> | undefined;

  let scopeFailedAt = -Infinity;
  const resolvePrefix = () => {
    if (resolving || now() - scopeFailedAt < BACKOFF_MS) return;
    resolving = options.scope().then(
      (scope) => void (prefix = `orderly:cache:${scope}:`),
      () => {
        scopeFailedAt = now(); // asked again a while later, not on every request
        resolving = undefined;
      },
    );
  };
  const keysOf = (cache: string, keys: readonly string[]) => keys.flatMap((key) => [`${prefix}${cache}:v:${key}`, `${prefix}${cache}:g:${key}`]);
  const failed = () => void (pausedUntil = now() + BACKOFF_MS);

  function owe(cache: string, keys: readonly string[]) {
    const current = owed.get(cache);
    if (current === "all") return;
    const set = current ?? new Set<string>();
    for (const key of keys) set.add(key);
    owed.set(cache, set.size > MAX_OWED ? "all" : set);
  }

  async function dropAll(cache: string) {
    let cursor = "0";
    do {
      const [next, found] = await redis.scan(cursor, "MATCH", `${prefix}${cache}:v:*`, "COUNT", 1000);
      cursor = next;
      if (found.length > 0) await redis.del(...found);
    } while (cursor !== "0");
  }

  /** Makes the drops owed, once Redis answers; the store is usable again only when none is left. */
  function settle(): void {
    if (settling || owed.size === 0 || redis.status !== "ready" || prefix === undefined) return;
    settling = (async () => {
      for (const [cache, keys] of [...owed]) {
        if (keys === "all") await dropAll(cache);
        else await redis.orderlyCacheRemove(String(keys.size * 2), ...keysOf(cache, [...keys]), String(GENERATION_MS));
        if (owed.get(cache) === keys) owed.delete(cache);
      }
    })()
      .catch(failed)
      .finally(() => {
        settling = undefined;
        if (owed.size > 0) setTimeout(settle, BACKOFF_MS).unref();
      });
  }
  redis.on("ready", settle);

  return {
    /**
     * Learns the keys' prefix (the database's scope) before the first request needs it: until then the
     * store is not usable, so the first loads after a start would not be shared. Never rejects; a
     * failure is asked again later, as usable() does.
     */
    async prepare() {
      resolvePrefix();
      await resolving;
    },

    usable() {
      if (prefix === undefined) {
        resolvePrefix();
        return false;
      }
      if (owed.size > 0) settle();
      return redis.status === "ready" && owed.size === 0 && now() >= pausedUntil;
    },

    async read(cache, keys) {
      try {
        const flat = await redis.orderlyCacheRead(String(keys.length * 2), ...keysOf(cache, keys));
        return keys.map((_, i) => {
          const json = flat[i * 3] as string;
          return { json: json === "" ? undefined : json, ttlMs: Number(flat[i * 3 + 1]), stamp: String(flat[i * 3 + 2]) };
        });
      } catch (error) {
        failed();
        throw error;
      }
    },

    async write(cache, key, json, ttlMs, stamp) {
      try {
        await redis.orderlyCacheWrite(...keysOf(cache, [key]), json, String(ttlMs), stamp);
      } catch (error) {
        failed();
        throw error;
      }
    },

    async remove(cache, keys) {
      if (prefix === undefined) {
        resolvePrefix();
        await resolving;
      }
      try {
        if (prefix === undefined) throw new Error("the cache's Redis prefix is not known yet");
        await redis.orderlyCacheRemove(String(keys.length * 2), ...keysOf(cache, keys), String(GENERATION_MS));
      } catch (error) {
        failed();
        owe(cache, keys);
        settle();
        throw error;
      }
    },

    async ping() {
      await redis.ping();
    },

    async close() {
      await redis.quit().catch(() => redis.disconnect());
    },
  };
}
