import { sql } from "drizzle-orm";
import type { Database, Queryable } from "../db/client.ts";

/** The NOTIFY channel that carries the keys of changed cache entries to every process on the database. */
export const CACHE_CHANNEL = "orderly_cache";

/** PostgreSQL refuses payloads of 8000 bytes or more; keys are sent in chunks well below that. */
const MAX_PAYLOAD_BYTES = 7_000;

/** What a cache is told: these keys changed, or "all" (notifications may have been missed: forget everything). */
export type InvalidationHandler = (keys: string[] | "all") => void;

export interface Invalidations {
  /** Whether notifications reach this process now; while they do not, caches must not be trusted. */
  live(): boolean;
  subscribe(cache: string, handler: InvalidationHandler): () => void;
  /** Tells every process on the database (this one included) that keys of `cache` changed: when `q` commits if it is a transaction, at once otherwise. */
  notify(cache: string, keys: readonly string[], q?: Queryable): Promise<void>;
  start(): Promise<void>;
  stop(): Promise<void>;
}

function payloads(cache: string, keys: readonly string[]): string[] {
  const out: string[] = [];
  let chunk: string[] = [];
  const encode = (k: string[]) => JSON.stringify({ c: cache, k });
  for (const key of keys) {
    if (chunk.length > 0 && Buffer.byteLength(encode([...chunk, key])) > MAX_PAYLOAD_BYTES) {
      out.push(encode(chunk));
      chunk = [];
    }
    chunk.push(key);
  }
  if (chunk.length > 0) out.push(encode(chunk));
  return out;
}

/**
 * Cache invalidations over the database's own LISTEN/NOTIFY (Database.listen: one connection per
 * process, re-established after any loss). A NOTIFY sent in a transaction is delivered only if and
 * when it commits, so an invalidation can never arrive before the change it announces, nor for a
 * change that rolled back. When the listening connection is (re)established, every cache is told to
 * forget everything: a notification sent while nothing listened is lost.
 */
export function createInvalidations(database: Database): Invalidations {
  const handlers = new Map<string, Set<InvalidationHandler>>();
  let unlisten: (() => Promise<void>) | undefined;

  const onPayload = (payload: string) => {
    if (payload === "") {
      for (const set of handlers.values()) for (const handler of set) handler("all");
      return;
    }
    let message: { c?: unknown; k?: unknown };
    try {
      message = JSON.parse(payload) as typeof message;
    } catch {
      return; // not ours
    }
    if (typeof message.c !== "string" || !Array.isArray(message.k)) return;
    const keys = message.k.filter((k): k is string => typeof k === "string");
    for (const handler of handlers.get(message.c) ?? []) handler(keys);
  };

  return {
    live: () => unlisten !== undefined && database.notifications() === "live",

    subscribe(cache, handler) {
      const set = handlers.get(cache) ?? new Set();
      handlers.set(cache, set.add(handler));
      return () => void set.delete(handler);
    },

    async notify(cache, keys, q = database.db) {
      for (const payload of payloads(cache, keys)) await q.execute(sql`select pg_notify(${CACHE_CHANNEL}, ${payload})`);
    },

    async start() {
      unlisten ??= await database.listen(CACHE_CHANNEL, onPayload);
    },

    async stop() {
      const stop = unlisten;
      unlisten = undefined;
      await stop?.();
    },
  };
}
