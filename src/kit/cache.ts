import type { Counter } from "prom-client";
import type { Database, Queryable } from "../db/client.ts";
import { createInvalidations, type Invalidations } from "./cache-invalidations.ts";
import { createRedisStore, databaseScope } from "./cache-redis.ts";
import { boundedLru } from "./lru.ts";

/**
 * A read-through cache for data whose truth is in the database: names, prices, coupon terms. Never
 * for stock or money decisions, which are taken by conditional writes in the database.
 *
 * Levels: an LRU in process memory (L1), then, when given, a store shared by every replica (Redis, L2),
 * then the loader. Concurrent misses of one key in a process share one load (single flight). Every
 * entry lives its TTL give or take `jitter`, so entries filled together do not expire together.
 *
 * Invalidation: a change announces its keys with `invalidateOnCommit(tx, keys)` in the transaction
 * that writes it; PostgreSQL delivers that NOTIFY when, and only if, the transaction commits, to every
 * process on the database, and each one drops the keys from its L1 and from L2. So a committed change
 * is seen everywhere as soon as the notification arrives (milliseconds). What can make a replica
 * serve an older value:
 * - its LISTEN connection is lost: it then bypasses the cache until the connection is back, and
 *   clears L1 on reconnect (a notification sent meanwhile is lost);
 * - Redis is unreachable when a key must be dropped from L2: the process keeps the key and drops it
 *   before it reads L2 again; only if every replica that was told dies first does the L2 copy live on;
 * - every replica's LISTEN connection is lost while the database still commits changes: L2 copies
 *   of those keys live on.
 * In those rare cases the staleness is bounded by the TTL (plus its jitter).
 */
export interface Cache<V> {
  readonly name: string;
  /** The value of key: from L1, L2 or `load` (undefined: there is none, which is cached too). */
  get(key: string, load: () => Promise<V | undefined>): Promise<V | undefined>;
  /** The values of keys that exist; `load` is called once with the keys no level had and answers those that exist. */
  getMany(keys: readonly string[], load: (missing: string[]) => Promise<Map<string, V>>): Promise<Map<string, V>>;
  /** Drops keys everywhere now: this process's L1, L2, and (by NOTIFY) every other process's L1. */
  invalidate(keys: readonly string[]): Promise<void>;
  /**
   * Drops keys everywhere when `tx` commits (a NOTIFY in it; nothing if it rolls back). Until the
   * notification comes back, this process reads those keys from the database, so a writer reads its write.
   */
  invalidateOnCommit(tx: Queryable, keys: readonly string[]): Promise<void>;
  /** Empties this process's L1 (L2 entries expire by their TTL). */
  clear(): void;
}

/** The shared level: one store every replica reads and writes. */
export interface SharedStore {
  /** Whether it may be read and written now (reachable, and no drop it missed is still owed). */
  usable(): boolean;
  /**
   * One entry per key: its JSON (undefined: absent), remaining life, and a stamp to hand back to
   * write() so that a value loaded before an invalidation is not stored after it. Rejects when unreachable.
   */
  read(cache: string, keys: readonly string[]): Promise<{ json: string | undefined; ttlMs: number; stamp: string }[]>;
  /** Stores json under key unless the key was dropped since `stamp` was read. */
  write(cache: string, key: string, json: string, ttlMs: number, stamp: string): Promise<void>;
  /** Drops keys; if the store cannot be reached, it owes the drop and is not usable until it is done. */
  remove(cache: string, keys: readonly string[]): Promise<void>;
}

/** The counters of `orderly_cache_*` (src/ops/metrics.ts). */
export interface CacheMetrics {
  requests: Counter<"cache" | "level" | "result">;
  loads: Counter<"cache" | "result">;
  invalidations: Counter<"cache">;
}

export interface CacheOptions {
  name: string;
  ttlMs: number;
  /** Fraction of the TTL each entry's life is moved by, at random, either way (default 0.1). */
  jitter?: number;
  /** Entries kept in L1. */
  max: number;
  /** The shared level (Redis); without it, L1 only. */
  store?: SharedStore | undefined;
  invalidations: Invalidations;
  metrics: CacheMetrics;
  /**
   * Whether concurrent misses of a key share one load (default true). The embedded database runs one
   * statement at a time, so there a caller inside a transaction must never wait for a load running
   * outside it: the load would wait for that transaction, and the transaction for the load.
   */
  singleFlight?: boolean;
  random?: () => number;
  /** Clock of TTLs (tests). */
  perf?: { now(): number };
}

/** A key from its parts (tenant, SKU…), unambiguous whatever characters they hold (":" and "%" escaped). */
export const cacheKey = (...parts: string[]) => parts.map((part) => part.replaceAll("%", "%25").replaceAll(":", "%3A")).join(":");

/** How long a key written by this process is read from the database if its notification never comes (the writer rolled back). */
const PENDING_MS = 30_000;

interface Entry<V> {
  value: V | undefined;
}

interface Flight<V> {
  promise: Promise<V | undefined>;
  /** The key was invalidated while it loaded: its result is handed to its waiters, not kept. */
  stale: boolean;
}

export function createCache<V>(options: CacheOptions): Cache<V> {
  const { name, ttlMs, store, invalidations, metrics } = options;
  const jitter = options.jitter ?? 0.1;
  const random = options.random ?? Math.random;
  const singleFlight = options.singleFlight ?? true;
  const perf = options.perf ?? performance;
  const l1 = boundedLru<string, Entry<V>>(options.max, { ttlResolution: 0, perf });
  /** The loads of each key under way, to mark them stale when the key is invalidated. */
  const loading = new Map<string, Set<Flight<V>>>();
  /** The load of each key that later callers join (single flight). */
  const flights = new Map<string, Flight<V>>();
  /** Keys this process changed in a transaction whose notification has not come back yet. */
  const pending = new Map<string, number>();

  const count = (level: "memory" | "redis", result: "hit" | "miss" | "bypass" | "error", n = 1) => metrics.requests.inc({ cache: name, level, result }, n);
  const lifetime = () => Math.max(1, Math.round(ttlMs * (1 - jitter + 2 * jitter * random())));

  const isPending = (key: string) => {
    const until = pending.get(key);
    if (until === undefined) return false;
    if (until > perf.now()) return true;
    pending.delete(key);
    return false;
  };

  function forget(keys: readonly string[] | "all"): void {
    const all = keys === "all";
    if (all) l1.clear();
    for (const key of all ? [...loading.keys()] : keys) {
      if (!all) l1.delete(key);
      for (const flight of loading.get(key) ?? []) flight.stale = true;
      flights.delete(key);
    }
  }

  // Every process drops the keys it is told about from L1 and from L2 (idempotent; one would do, all is safer).
  invalidations.subscribe(name, (keys) => {
    forget(keys);
    if (keys === "all") return;
    for (const key of keys) pending.delete(key);
    metrics.invalidations.inc({ cache: name }, keys.length);
    store?.remove(name, keys).catch(() => {}); // the store owes the drop and is unusable until done
  });

  /**
   * Reads keys from L2, then the rest from the loader. With `own` (its flight per key), fills both
   * levels with what a flight not invalidated meanwhile found; without, keeps nothing (the cache is not trusted now).
   */
  async function fetch(keys: string[], load: (missing: string[]) => Promise<Map<string, V>>, own?: Map<string, Flight<V>>): Promise<Map<string, V | undefined>> {
    const found = new Map<string, V | undefined>();
    const lives = new Map<string, number>();
    const stamps = new Map<string, string>();
    const current = (key: string) => own?.get(key)?.stale === false;
    let missing = keys;
    if (store && own && store.usable()) {
      try {
        const entries = await store.read(name, keys);
        missing = [];
        for (const [i, key] of keys.entries()) {
          const entry = entries[i] as (typeof entries)[number];
          if (entry.json === undefined) {
            missing.push(key);
            stamps.set(key, entry.stamp);
          } else {
            found.set(key, (JSON.parse(entry.json) as Entry<V>).value);
            // An L1 copy never outlives the L2 entry it came from.
            lives.set(key, Math.min(Math.max(1, entry.ttlMs), lifetime()));
          }
        }
        count("redis", "hit", keys.length - missing.length);
        count("redis", "miss", missing.length);
      } catch {
        count("redis", "error", keys.length);
        missing = keys;
      }
    }
    if (missing.length > 0) {
      let loaded: Map<string, V>;
      try {
        loaded = await load(missing);
        metrics.loads.inc({ cache: name, result: "ok" });
      } catch (error) {
        metrics.loads.inc({ cache: name, result: "error" });
        throw error;
      }
      for (const key of missing) {
        const value = loaded.get(key);
        found.set(key, value);
        const life = lifetime();
        lives.set(key, life);
        const stamp = stamps.get(key);
        if (!store || stamp === undefined || !current(key)) continue;
        // Not awaited: the answer does not wait for Redis. A failed write only costs a later miss.
        store.write(name, key, JSON.stringify({ value } satisfies Entry<V>), life, stamp).catch(() => count("redis", "error"));
      }
    }
    for (const key of keys) if (current(key)) l1.set(key, { value: found.get(key) }, { ttl: lives.get(key) ?? lifetime() });
    return found;
  }

  async function getMany(keys: readonly string[], load: (missing: string[]) => Promise<Map<string, V>>): Promise<Map<string, V>> {
    const result = new Map<string, V>();
    const joined: Promise<void>[] = [];
    const toFetch: string[] = [];
    const uncached: string[] = [];
    // Without notifications an invalidation could be missed: read the database, keep nothing.
    const trusted = invalidations.live();
    for (const key of new Set(keys)) {
      if (!trusted || isPending(key)) {
        count("memory", "bypass");
        uncached.push(key);
        continue;
      }
      const entry = l1.get(key);
      if (entry) {
        count("memory", "hit");
        if (entry.value !== undefined) result.set(key, entry.value);
        continue;
      }
      count("memory", "miss");
      const flight = singleFlight ? flights.get(key) : undefined;
      if (flight) {
        joined.push(
          flight.promise.then((value) => {
            if (value !== undefined) result.set(key, value);
          }),
        );
      } else toFetch.push(key);
    }

    const settle = (found: Map<string, V | undefined>) => {
      for (const [key, value] of found) if (value !== undefined) result.set(key, value);
    };
    const work: Promise<void>[] = [...joined];
    if (uncached.length > 0) work.push(fetch(uncached, load).then(settle));
    if (toFetch.length > 0) {
      const mine = new Map<string, Flight<V>>();
      let fetching: Promise<Map<string, V | undefined>> | undefined;
      for (const key of toFetch) {
        const flight: Flight<V> = { stale: false, promise: Promise.resolve().then(async () => (await (fetching as Promise<Map<string, V | undefined>>)).get(key)) };
        flight.promise.catch(() => {}); // its waiters see the error; nobody else must
        mine.set(key, flight);
        if (singleFlight) flights.set(key, flight);
        const set = loading.get(key) ?? new Set();
        loading.set(key, set.add(flight));
      }
      fetching = fetch(toFetch, load, mine);
      work.push(
        fetching.then(settle).finally(() => {
          for (const [key, flight] of mine) {
            if (flights.get(key) === flight) flights.delete(key);
            const set = loading.get(key);
            set?.delete(flight);
            if (set?.size === 0) loading.delete(key);
          }
        }),
      );
    }
    await Promise.all(work);
    return result;
  }

  return {
    name,
    getMany,

    async get(key, load) {
      const found = await getMany([key], async () => {
        const value = await load();
        return value === undefined ? new Map() : new Map([[key, value]]);
      });
      return found.get(key);
    },

    async invalidate(keys) {
      if (keys.length === 0) return;
      forget(keys);
      // A drop Redis missed is owed by the store, which is not read until it is made.
      await Promise.all([store?.remove(name, keys).catch(() => {}), invalidations.notify(name, keys)]);
    },

    async invalidateOnCommit(tx, keys) {
      if (keys.length === 0) return;
      const until = perf.now() + PENDING_MS;
      for (const key of keys) pending.set(key, until);
      forget(keys);
      await invalidations.notify(name, keys, tx);
    },

    clear() {
      forget("all");
    },
  };
}

/** One process's caches: their shared Redis connection and invalidation channel. */
export interface Caching {
  define<V>(options: { name: string; ttlMs: number; max: number; jitter?: number }): Cache<V>;
  /** Listens for invalidations (until then every cache reads through to the database) and prepares L2. */
  start(): Promise<void>;
  /** Empties the L1 of every cache of this process. */
  clear(): void;
  close(): Promise<void>;
}

/**
 * The caches of one process on `database`: L1 only without Redis; with Redis, L2 shared by the
 * replicas on PostgreSQL. The embedded database has one process by construction, so it gets no L2.
 */
export function createCaching(deps: { database: Database; redisUrl?: string | undefined; metrics: CacheMetrics }): Caching {
  const { database, metrics } = deps;
  const invalidations = createInvalidations(database);
  const store = deps.redisUrl && database.kind === "postgres" ? createRedisStore({ url: deps.redisUrl, scope: () => databaseScope(database) }) : undefined;
  const caches: Cache<unknown>[] = [];
  return {
    define<V>(options: { name: string; ttlMs: number; max: number; jitter?: number }) {
      const cache = createCache<V>({ ...options, store, invalidations, metrics, singleFlight: database.kind === "postgres" });
      caches.push(cache as Cache<unknown>);
      return cache;
    },
    async start() {
      await Promise.all([invalidations.start(), store?.prepare()]);
    },
    clear: () => {
      for (const cache of caches) cache.clear();
    },
    async close() {
      await invalidations.stop();
      await store?.close();
    },
  };
}
