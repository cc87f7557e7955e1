import { randomUUID } from "node:crypto";
import { sql } from "drizzle-orm";
import type { Redis } from "ioredis";
import type { Database, Tx } from "../db/client.ts";
import { boundedLru } from "./lru.ts";
import { newRedis } from "./redis-client.ts";

// The sold-out gate keeps requests for a sold-out SKU away from the database. It never admits
// anything the database would refuse and never decides a sale: it only refuses, and only what
// PostgreSQL itself refused a moment ago. A mark "(tenant, sku) has fewer than N units" is set when
// a placement was refused for lack of that SKU; a request for N or more units is then refused at
// once. A mark ends when stock comes back (restock, release: cleared at once), when the
// reconciliation finds stock in PostgreSQL, or after its TTL if nothing re-checks it (the
// reconciliation re-checks only the marks of SKUs its database holds).
//
// Each (tenant, sku) also has an epoch, replaced whenever its stock comes back. A request reads the
// epoch before it reaches the database and may set a mark only if the epoch is unchanged: a refusal
// that raced a restock can never leave a mark behind it.

/** The NOTIFY channel on which committed stock increases are announced (payload: {"tenantId","skus"}). */
export const STOCK_RETURNED_CHANNEL = "orderly_stock_returned";

export interface GateLine {
  sku: string;
  quantity: number;
}

/** One SKU's mark as kept in the store. */
export interface Mark {
  tenantId: string;
  sku: string;
  /** Fewer than this many units were available when the mark was set. */
  below: number;
  epoch: string;
}

/** Where marks live: process memory (one process) or Redis (shared by every replica). */
export interface MarkStore {
  /** The first line a live mark rules out, else the epoch of every line (in order). Rejects when the store is unreachable. */
  check(tenantId: string, lines: readonly GateLine[]): Promise<{ soldOut: string } | { epochs: string[] }>;
  /** Marks the SKU as holding fewer than `below` units for ttlMs, if its epoch is still `epoch`. */
  mark(tenantId: string, sku: string, below: number, epoch: string, ttlMs: number): Promise<boolean>;
  /** Removes the SKU's mark and replaces its epoch. */
  clear(tenantId: string, sku: string): Promise<void>;
  /** Marks set within the last minute (live, or just expired): what the reconciliation re-checks. */
  marks(): Promise<Mark[]>;
  /** True for one caller per period across all replicas sharing the store. */
  lead(periodMs: number): Promise<boolean>;
  /** Resolves true once the store answers, false if it does not within timeoutMs. */
  ready(timeoutMs: number): Promise<boolean>;
  close(): Promise<void>;
}

const MARK_KEEP_MS = 24 * 3600 * 1000; // how long an epoch outlives its last change
const INDEX_GRACE_MS = 60_000; // expired marks stay listed this long, for the reconciliation

/** Marks in process memory: for a process that runs both placement and stock (all-in-one) without Redis. */
export function createMemoryMarkStore(options: { now?: () => number; maxKeys?: number } = {}): MarkStore {
  const now = options.now ?? Date.now;
  const entries = boundedLru<string, { tenantId: string; sku: string; epoch: string; below?: number; until?: number }>(options.maxKeys ?? 100_000);
  let epochs = 0;
  const keyOf = (tenantId: string, sku: string) => `${tenantId}\n${sku}`;
  const live = (e: { below?: number; until?: number } | undefined) => e?.below !== undefined && (e.until ?? 0) > now();
  return {
    async check(tenantId, lines) {
      const seen: string[] = [];
      for (const line of lines) {
        const entry = entries.get(keyOf(tenantId, line.sku));
        if (live(entry) && line.quantity >= (entry?.below as number)) return { soldOut: line.sku };
        seen.push(entry?.epoch ?? "");
      }
      return { epochs: seen };
    },
    async mark(tenantId, sku, below, epoch, ttlMs) {
      const entry = entries.get(keyOf(tenantId, sku));
      if ((entry?.epoch ?? "") !== epoch) return false;
      const stronger = live(entry) ? Math.min(below, entry?.below as number) : below;
      entries.set(keyOf(tenantId, sku), { tenantId, sku, epoch, below: stronger, until: now() + ttlMs });
      return true;
    },
    async clear(tenantId, sku) {
      entries.set(keyOf(tenantId, sku), { tenantId, sku, epoch: `m${++epochs}` });
    },
    async marks() {
      const found: Mark[] = [];
      for (const e of entries.values()) {
        if (e.below !== undefined && (e.until ?? 0) > now() - INDEX_GRACE_MS) found.push({ tenantId: e.tenantId, sku: e.sku, below: e.below, epoch: e.epoch });
      }
      return found;
    },
    lead: async () => true,
    ready: async () => true,
    close: async () => {},
  };
}

// All keys share the hash tag {orderly-gate}, so the scripts touching a mark and the index stay in one slot.
const NOW = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`;

// KEYS: one mark per line; ARGV: the lines' quantities. {0, epoch...} or {index of the refused line}.
const CHECK = `${NOW}
local epochs = {0}
for i, key in ipairs(KEYS) do
  local s = redis.call('HMGET', key, 'epoch', 'below', 'until')
  local below, till = tonumber(s[2]), tonumber(s[3])
  if below and till and till > now and tonumber(ARGV[i]) >= below then return {i} end
  epochs[i + 1] = s[1] or ''
end
return epochs
`;

// KEYS: mark, index; ARGV: expected epoch, below, ttl ms, index member, keep ms. 1 if set.
const MARK = `${NOW}
local s = redis.call('HMGET', KEYS[1], 'epoch', 'below', 'until')
if (s[1] or '') ~= ARGV[1] then return 0 end
local below, till = tonumber(ARGV[2]), tonumber(s[3])
local held = tonumber(s[2])
if held and till and till > now and held < below then below = held end
local untilMs = now + tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'below', below, 'until', untilMs)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('ZADD', KEYS[2], untilMs, ARGV[4])
return 1
`;

// KEYS: mark, index; ARGV: new epoch, index member, keep ms.
const CLEAR = `
redis.call('HSET', KEYS[1], 'epoch', ARGV[1])
redis.call('HDEL', KEYS[1], 'below', 'until')
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('ZREM', KEYS[2], ARGV[2])
return 1
`;

/**
 * Rejects if Redis has not answered within ms. The deadline is judged after the event loop's next
 * I/O poll (setImmediate): a reply already waiting on the socket while the process was busy is not
 * a timeout, so only Redis's own slowness counts, not the loop's lag.
 */
function within<T>(ms: number, work: Promise<T>): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => setImmediate(() => reject(new Error(`Redis did not answer within ${ms} ms`))), ms);
    work.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}

type GateRedis = Redis & {
  orderlyGateCheck(...args: (string | number)[]): Promise<(number | string)[]>;
  orderlyGateMark(...args: (string | number)[]): Promise<number>;
  orderlyGateClear(...args: (string | number)[]): Promise<number>;
};

/**
 * Marks in Redis, shared by every replica. No offline queue and a short deadline on the request's
 * own calls: while Redis is unreachable every call rejects at once, and a slow Redis is given up on
 * after deadlineMs; the gate then admits (the database decides).
 */
export function createRedisMarkStore(options: { url: string; prefix?: string; deadlineMs?: number }): MarkStore {
  const base = `${options.prefix ?? "orderly:"}{orderly-gate}:`;
  const index = `${base}index`;
  const member = (tenantId: string, sku: string) => `${encodeURIComponent(tenantId)}:${sku}`;
  const keyOf = (tenantId: string, sku: string) => `${base}m:${member(tenantId, sku)}`;
  const deadlineMs = options.deadlineMs ?? 100;
  const redis = newRedis(options.url, {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    commandTimeout: 5_000, // only frees commands a hung Redis never answers; requests stop waiting much sooner (within)
    connectTimeout: 1_000,
  }) as GateRedis;
  redis.on("error", () => {}); // it reconnects by itself; callers see the failures
  redis.defineCommand("orderlyGateCheck", { lua: CHECK });
  redis.defineCommand("orderlyGateMark", { numberOfKeys: 2, lua: MARK });
  redis.defineCommand("orderlyGateClear", { numberOfKeys: 2, lua: CLEAR });
  return {
    async check(tenantId, lines) {
      const keys = lines.map((l) => keyOf(tenantId, l.sku));
      const [first, ...epochs] = await within(deadlineMs, redis.orderlyGateCheck(keys.length, ...keys, ...lines.map((l) => l.quantity)));
      if (first !== 0) return { soldOut: (lines[Number(first) - 1] as GateLine).sku };
      return { epochs: epochs.map(String) };
    },
    async mark(tenantId, sku, below, epoch, ttlMs) {
      return (await within(deadlineMs, redis.orderlyGateMark(keyOf(tenantId, sku), index, epoch, below, ttlMs, member(tenantId, sku), MARK_KEEP_MS))) === 1;
    },
    async clear(tenantId, sku) {
      await within(deadlineMs, redis.orderlyGateClear(keyOf(tenantId, sku), index, randomUUID(), member(tenantId, sku), MARK_KEEP_MS));
    },
    async marks() {
      const [seconds] = await redis.time();
      await redis.zremrangebyscore(index, "-inf", String(Number(seconds) * 1000 - INDEX_GRACE_MS));
      const members = await redis.zrange(index, "0", "999");
      const found: Mark[] = [];
      for (const m of members) {
        const at = m.lastIndexOf(":");
        const [tenantId, sku] = [decodeURIComponent(m.slice(0, at)), m.slice(at + 1)];
        const [epoch, below] = await redis.hmget(keyOf(tenantId, sku), "epoch", "below");
        if (below === null) await redis.zrem(index, m);
        else found.push({ tenantId, sku, below: Number(below), epoch: epoch ?? "" });
      }
      return found;
    },
    async lead(periodMs) {
      return (await redis.set(`${base}lead`, randomUUID(), "PX", Math.max(1, periodMs - 50), "NX")) === "OK";
    },
    async ready(timeoutMs) {
      if (redis.status === "ready") return true;
      return new Promise<boolean>((resolve) => {
        const done = (answer: boolean) => {
          clearTimeout(timer);
          redis.off("ready", onReady);
          resolve(answer);
        };
        const onReady = () => done(true);
        const timer = setTimeout(() => done(false), timeoutMs);
        redis.once("ready", onReady);
      });
    },
    async close() {
      await redis.quit().catch(() => redis.disconnect());
    },
  };
}

/** What a request learned from the gate: refused at once, or admitted with the epochs it may set marks under. */
export type GateDecision = { kind: "sold-out"; sku: string } | { kind: "admitted"; ticket: GateTicket | undefined };

export interface GateTicket {
  tenantId: string;
  lines: readonly GateLine[];
  epochs: string[];
}

export interface SoldOutGate {
  /** Never throws: a store that cannot answer admits the request. */
  check(tenantId: string, lines: readonly GateLine[]): Promise<GateDecision>;
  /**
   * After the database refused the admitted request for lack of stock: marks the lines of `skus`
   * (the SKUs it named), or the only line of a one-line order when it named none. Never throws.
   */
  learn(ticket: GateTicket | undefined, skus: readonly string[]): Promise<void>;
  /** Stock of these SKUs came back (committed): their marks go. Never throws. */
  stockReturned(tenantId: string, skus: readonly string[]): Promise<void>;
  /**
   * Re-checks every mark of a SKU the database holds: clears those with stock again, renews the rest. With
   * a shared store one replica a period does it, unless `force`. A store or database that cannot be
   * reached makes it a no-op (counted); marks then expire on their own.
   */
  reconcile(options?: { force?: boolean }): Promise<{ cleared: number; renewed: number }>;
  readonly reconcileEveryMs: number;
  /** Resolves true once the store answers (false after timeoutMs): until then every request is admitted. */
  ready(timeoutMs?: number): Promise<boolean>;
  close(): Promise<void>;
}

/**
 * Available units per `${tenantId}\n${sku}`, for the pairs the database holds. Read on the owner's
 * handle, across tenants. A pair missing is not this database's (a deployment sharing the Redis, or
 * a product removed): its mark is left alone to expire.
 */
export type ReadAvailable = (keys: readonly { tenantId: string; sku: string }[]) => Promise<Map<string, number>>;

export const availableKey = (tenantId: string, sku: string) => `${tenantId}\n${sku}`;

export function createSoldOutGate(options: {
  store: MarkStore;
  /** The database's stock, for the reconciliation (only where the stock tables are). */
  readAvailable?: ReadAvailable;
  /** How long a mark refuses without being re-checked. */
  ttlMs?: number;
  reconcileEveryMs?: number;
  /** Told when the store failed (the request was admitted, or a mark was not cleared). */
  onStoreError?: (error: unknown, during: "check" | "learn" | "clear" | "reconcile") => void;
}): SoldOutGate {
  const { store } = options;
  const ttlMs = options.ttlMs ?? 10_000;
  const reconcileEveryMs = options.reconcileEveryMs ?? 1_000;
  const failed = (during: "check" | "learn" | "clear" | "reconcile") => (error: unknown) => options.onStoreError?.(error, during);
  return {
    reconcileEveryMs,
    async check(tenantId, lines) {
      try {
        const found = await store.check(tenantId, lines);
        return "soldOut" in found ? { kind: "sold-out", sku: found.soldOut } : { kind: "admitted", ticket: { tenantId, lines, epochs: found.epochs } };
      } catch (error) {
        failed("check")(error);
        return { kind: "admitted", ticket: undefined };
      }
    },
    async learn(ticket, skus) {
      if (!ticket) return;
      const named = ticket.lines.map((line, i) => ({ line, epoch: ticket.epochs[i] ?? "" })).filter(({ line }) => skus.includes(line.sku));
      const marked = named.length > 0 || ticket.lines.length !== 1 ? named : [{ line: ticket.lines[0] as GateLine, epoch: ticket.epochs[0] ?? "" }];
      await Promise.all(marked.map(({ line, epoch }) => store.mark(ticket.tenantId, line.sku, line.quantity, epoch, ttlMs).catch(failed("learn"))));
    },
    async stockReturned(tenantId, skus) {
      await Promise.all(skus.map((sku) => store.clear(tenantId, sku).catch(failed("clear"))));
    },
    async reconcile({ force = false } = {}) {
      const { readAvailable } = options;
      if (!readAvailable) return { cleared: 0, renewed: 0 };
      try {
        if (!force && !(await store.lead(reconcileEveryMs))) return { cleared: 0, renewed: 0 };
        // Epochs are read before the database: a restock committed after that read changes the epoch, so the renewal below fails.
        const marks = await store.marks();
        if (marks.length === 0) return { cleared: 0, renewed: 0 };
        const available = await readAvailable(marks);
        let cleared = 0;
        let renewed = 0;
        for (const m of marks) {
          const units = available.get(availableKey(m.tenantId, m.sku));
          if (units === undefined) continue;
          if (units >= m.below) {
            await store.clear(m.tenantId, m.sku);
            cleared++;
          } else if (await store.mark(m.tenantId, m.sku, m.below, m.epoch, ttlMs)) {
            renewed++;
          }
        }
        return { cleared, renewed };
      } catch (error) {
        failed("reconcile")(error);
        return { cleared: 0, renewed: 0 };
      }
    },
    ready: (timeoutMs = 1_000) => store.ready(timeoutMs),
    close: () => store.close(),
  };
}

/** Announces, in the transaction that returns stock, that these SKUs have stock again: delivered when it commits. */
export async function announceStockReturned(tx: Tx, change: { tenantId: string; skus: readonly string[] }): Promise<void> {
  if (change.skus.length === 0) return;
  await tx.execute(sql`select pg_notify(${STOCK_RETURNED_CHANNEL}, ${JSON.stringify({ tenantId: change.tenantId, skus: change.skus })})`);
}

/**
 * Clears marks as stock comes back, in every process listening on this database. When the listening
 * connection is re-established (announcements may have been lost meanwhile) every mark is re-checked.
 */
export function listenForStockReturns(database: Database, gate: SoldOutGate, onError: (error: unknown) => void): Promise<() => Promise<void>> {
  return database.listen(STOCK_RETURNED_CHANNEL, (payload) => {
    if (payload === "") {
      gate.reconcile({ force: true }).catch(onError);
      return;
    }
    try {
      const { tenantId, skus } = JSON.parse(payload) as { tenantId: string; skus: string[] };
      gate.stockReturned(tenantId, skus).catch(onError);
    } catch (error) {
      onError(error);
    }
  });
}
