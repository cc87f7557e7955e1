import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { PGlite } from "@electric-sql/pglite";
import { type SQL, sql } from "drizzle-orm";
import { drizzle as drizzlePg } from "drizzle-orm/node-postgres";
import { migrate as migratePg } from "drizzle-orm/node-postgres/migrator";
import type { Logger as QueryLogger } from "drizzle-orm/logger";
import type { PgDatabase, PgQueryResultHKT } from "drizzle-orm/pg-core";
import { drizzle as drizzlePglite } from "drizzle-orm/pglite";
import { migrate as migratePglite } from "drizzle-orm/pglite/migrator";
import pg from "pg";
import { ConfigError } from "../config.ts";
import { currentTraceparent } from "../kit/trace-context.ts";
import * as schema from "./schema.ts";

export type Schema = typeof schema;
export type Db = PgDatabase<PgQueryResultHKT, Schema>;
/** The transaction handle every write operation takes (style.md rule 3). */
export type Tx = Parameters<Parameters<Db["transaction"]>[0]>[0];
/** Something queries can run on: the database or a transaction. */
export type Queryable = Db | Tx;

/** Runs raw SQL and returns its rows (pg and PGlite both answer `{ rows }`). */
export async function rows<T>(q: Queryable, statement: SQL): Promise<T[]> {
  const result = (await q.execute(statement)) as unknown as { rows: T[] };
  return result.rows;
}

export interface TenantOptions {
  /** Milliseconds any statement may wait for a row lock in this transaction (55P03 past it). */
  lockTimeoutMs?: number;
}

/**
 * Runs work in one transaction scoped to a tenant: as the role orderly_app with orderly.tenant_id
 * set, so row-level security applies on top of the queries' own tenant filters. One round trip.
 */
export function inTenant<T>(db: Db, tenantId: string, work: (tx: Tx) => Promise<T>, options: TenantOptions = {}): Promise<T> {
  return transaction(db, async (tx) => {
    const lockTimeout = options.lockTimeoutMs === undefined ? sql`` : sql`, set_config('lock_timeout', ${`${options.lockTimeoutMs}ms`}, true)`;
    // While a span is active, the outbox rows this transaction writes carry its trace context (kit migration 0005).
    const traceparent = currentTraceparent();
    const traced = traceparent === undefined ? sql`` : sql`, set_config('orderly.traceparent', ${traceparent}, true)`;
    await tx.execute(sql`select set_config('role', 'orderly_app', true), set_config('orderly.tenant_id', ${tenantId}, true)${lockTimeout}${traced}`);
    return work(tx);
  });
}

const commitCallbacks = new WeakMap<Tx, (() => void)[]>();

/**
 * Runs work in one transaction and, once it committed, what it asked for with afterCommit (nothing
 * if it rolled back). Every transaction of the code base is opened here or by inTenant.
 */
export async function transaction<T>(db: Db, work: (tx: Tx) => Promise<T>): Promise<T> {
  const callbacks: (() => void)[] = [];
  const result = await db.transaction((tx) => {
    commitCallbacks.set(tx, callbacks);
    return work(tx);
  });
  for (const callback of callbacks) callback();
  return result;
}

/**
 * Calls `callback` in this process once tx has committed, e.g. to wake the outbox relay at once
 * instead of sending a NOTIFY, which every commit of the database would wait on. A transaction not
 * opened by transaction() or inTenant() is an error: its callbacks would never run.
 */
export function afterCommit(tx: Tx, callback: () => void): void {
  const callbacks = commitCallbacks.get(tx);
  if (!callbacks) throw new Error("afterCommit needs a transaction opened by transaction() or inTenant()");
  callbacks.push(callback);
}

export interface Database {
  /** The owner's handle: bypasses row-level security. Only for migrations and jobs across tenants. */
  db: Db;
  kind: "pglite" | "postgres";
  /** A transaction scoped to one tenant (see inTenant): how every request reaches the database. */
  tenant<T>(tenantId: string, work: (tx: Tx) => Promise<T>, options?: TenantOptions): Promise<T>;
  /** Applies the committed migrations of the given services (and the kit's); safe when several processes start at once. */
  migrate(sets?: readonly MigrationSet[]): Promise<void>;
  ping(): Promise<void>;
  /**
   * Calls onNotify for every NOTIFY on the channel (delivered when the notifying transaction
   * commits, in every process on this database). On PostgreSQL also with "" each time its listening
   * connection is (re)established: a NOTIFY sent while nothing listened is lost, so the caller looks
   * for such work then. Resolves to a function that stops listening.
   */
  listen(channel: string, onNotify: (payload: string) => void): Promise<() => Promise<void>>;
  /** Whether NOTIFYs reach this process now (readiness, metrics). PGlite's never stop while something listens. */
  notifications(): NotificationState;
  /** The connection pool's counters (metrics); undefined for the embedded database, which has one connection. */
  poolStats(): PoolStats | undefined;
  close(): Promise<void>;
}

/** What a pool of database connections holds now (pg's Pool counters). */
export interface PoolStats {
  total: number;
  idle: number;
  /** Checkouts queued for a connection. */
  waiting: number;
  max: number;
}

/** "off": nothing listens; "live": NOTIFYs arrive; "down": the listening connection is lost and being re-established. */
export type NotificationState = "off" | "live" | "down";

const MIGRATIONS = resolve(dirname(fileURLToPath(import.meta.url)), "../../drizzle");

/** The migration sets: the tx kit's tables, which every service has, then one per service. */
export const MIGRATION_SETS = ["kit", "inventory", "payments", "coupons", "shipping", "orders"] as const;
export type MigrationSet = (typeof MIGRATION_SETS)[number];

/** Each set has its own history, so services sharing a database, or each with its own, migrate alike. */
const migrationConfig = (set: MigrationSet) => ({ migrationsFolder: join(MIGRATIONS, set), migrationsTable: `__orderly_${set}_migrations` });
const ordered = (sets: readonly MigrationSet[]) => MIGRATION_SETS.filter((s) => s === "kit" || sets.includes(s));
const MIGRATION_LOCK = 7_301_995; // pg_advisory_lock key owned by Orderly's migrator

/** One migration set's state in a database: how many of its migrations are applied, and which are not yet. */
export interface MigrationStatus {
  set: MigrationSet;
  applied: number;
  pending: string[];
}

/**
 * What `orderly migrate --status` shows and `serve --no-migrate` checks: each set's committed
 * migrations (its drizzle journal) against the history drizzle keeps in the database. As drizzle's
 * migrator decides, a migration is applied when the newest applied one is not older than it.
 */
export async function migrationStatus(db: Db, sets: readonly MigrationSet[] = MIGRATION_SETS): Promise<MigrationStatus[]> {
  const statuses: MigrationStatus[] = [];
  for (const set of ordered(sets)) {
    const journal = JSON.parse(readFileSync(join(MIGRATIONS, set, "meta", "_journal.json"), "utf8")) as { entries: { when: number; tag: string }[] };
    const table = `drizzle.${migrationConfig(set).migrationsTable}`;
    const [exists] = await rows<{ found: boolean }>(db, sql`select to_regclass(${table}) is not null as found`);
    const [last] = exists?.found ? await rows<{ at: string | null }>(db, sql`select max(created_at)::text as at from ${sql.raw(table)}`) : [];
    const lastAt = last?.at == null ? undefined : Number(last.at);
    const pending = journal.entries.filter((e) => lastAt === undefined || e.when > lastAt).map((e) => e.tag);
    statuses.push({ set, applied: journal.entries.length - pending.length, pending });
  }
  return statuses;
}

export interface PostgresOptions {
  max?: number;
  /** Milliseconds a statement of a tenant's transaction may wait for a row lock before it fails with 55P03. */
  lockTimeoutMs?: number | undefined;
  /** Sees every statement with its parameters (the benchmark records the placement's SQL with it). */
  queryLogger?: QueryLogger;
  /** Told when notifications are lost (with the error) and when they are live again (server.ts logs both). */
  onNotificationsChange?: (live: boolean, error?: unknown) => void;
}

export function openPostgres(url: string, options: PostgresOptions = {}): Database {
  const pool = new pg.Pool({
    connectionString: url,
    max: options.max ?? 10,
    // How long a request may queue for a connection. A server that is down refuses at once; this wait
    // is for bursts (a flash sale queues for the pool rather than being told 503).
    connectionTimeoutMillis: 20_000,
  });
  // An idle client that loses its server must not crash the process; the pool replaces it.
  pool.on("error", () => {});
  // Nor may a checked-out one: the pool listens only to idle clients, and an 'error' event nobody
  // listens to is thrown. Its statement in flight fails anyway.
  pool.on("connect", (client) => client.on("error", () => {}));
  // drizzle sends BEGIN before the try/finally that releases its client, so a client whose connection
  // died while idle fails BEGIN and is never given back: every outage would shrink the pool for good
  // and end() would wait forever. Such a client goes back (and out) when its connection ends.
  const checkOut = pool.connect.bind(pool);
  pool.connect = ((callback?: Parameters<typeof checkOut>[0]) => (callback ? checkOut(callback) : checkOut().then(releasedWhenLost))) as typeof pool.connect;
  const db = drizzlePg(pool, { schema, logger: options.queryLogger ?? false }) as unknown as Db;
  const listener = createListener(url, options.onNotificationsChange);
  return {
    db,
    kind: "postgres",
    // lock_timeout is set in each transaction with its role (one statement), never as a connection's
    // startup option, which a pooler such as PgBouncer refuses.
    tenant: (tenantId, work, tenantOptions) => inTenant(db, tenantId, work, { lockTimeoutMs: options.lockTimeoutMs, ...tenantOptions }),
    async migrate(sets = MIGRATION_SETS) {
      const client = await pool.connect();
      try {
        await client.query("select pg_advisory_lock($1)", [MIGRATION_LOCK]);
        try {
          for (const set of ordered(sets)) await migratePg(drizzlePg(client, { schema }), migrationConfig(set));
        } finally {
          await client.query("select pg_advisory_unlock($1)", [MIGRATION_LOCK]);
        }
      } finally {
        client.release();
      }
    },
    async ping() {
      await pool.query("select 1");
    },
    listen: listener.listen,
    notifications: listener.state,
    poolStats: () => ({ total: pool.totalCount, idle: pool.idleCount, waiting: pool.waitingCount, max: pool.options.max }),
    async close() {
      await listener.close();
      await pool.end();
    },
  };
}

/** Gives a checked-out client back to its pool when its connection ends; its holder's release() then does nothing. */
function releasedWhenLost(client: pg.PoolClient): pg.PoolClient {
  const release = client.release;
  let released = false;
  const releaseOnce = (error?: Error | boolean) => {
    if (released) return;
    released = true;
    client.removeListener("end", lost);
    release(error);
  };
  const lost = () => releaseOnce(new Error("the connection to the database ended"));
  client.once("end", lost);
  client.release = releaseOnce;
  return client;
}

const FIRST_RETRY_MS = 100;
const MAX_RETRY_MS = 5_000;

/**
 * One connection LISTENing on every channel of this process. After any loss, however long, it is
 * opened again with capped exponential backoff and jitter and re-issues every LISTEN; callers poll
 * meanwhile. A server that closes the connection may only make it emit `end`, so both count as a loss.
 */
function createListener(url: string, onChange: (live: boolean, error?: unknown) => void = () => {}) {
  const channels = new Map<string, Set<(payload: string) => void>>();
  let live: pg.Client | undefined; // listening on every channel
  let opening: Promise<void> | undefined;
  let retry: NodeJS.Timeout | undefined;
  let failures = 0;
  let down = false; // as last told to onChange

  const deliver = (channel: string, payload: string) => {
    for (const onNotify of [...(channels.get(channel) ?? [])]) onNotify(payload);
  };

  function open(): void {
    const attempt: Promise<void> = connect().finally(() => {
      if (opening === attempt) opening = undefined;
    });
    opening = attempt;
  }

  async function connect(): Promise<void> {
    const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5_000, keepAlive: true, application_name: "orderly-listen" });
    let gone = false;
    const lose = (error: unknown) => {
      if (gone) return;
      gone = true;
      client.end().catch(() => {});
      if (live === client) live = undefined;
      if (channels.size === 0) return; // stopped on purpose
      if (!down) {
        down = true;
        onChange(false, error);
      }
      const delay = Math.min(MAX_RETRY_MS, FIRST_RETRY_MS * 2 ** failures++) * (0.8 + 0.4 * Math.random());
      retry = setTimeout(() => {
        retry = undefined;
        open();
      }, delay);
    };
    client.on("error", lose);
    client.on("end", () => lose(new Error("the LISTEN connection closed")));
    client.on("notification", (notification) => deliver(notification.channel, notification.payload ?? ""));
    try {
      await client.connect();
      // Iterating the live map also covers channels added while this runs.
      for (const channel of channels.keys()) await client.query(`listen ${client.escapeIdentifier(channel)}`);
    } catch (error) {
      lose(error);
      return;
    }
    if (gone) return;
    if (channels.size === 0) {
      gone = true; // every listener stopped while this connected
      await client.end().catch(() => {});
      return;
    }
    live = client;
    failures = 0;
    if (down) {
      down = false;
      onChange(true);
    }
    for (const channel of [...channels.keys()]) deliver(channel, "");
  }

  async function close(): Promise<void> {
    channels.clear();
    clearTimeout(retry);
    retry = undefined;
    down = false;
    const client = live;
    live = undefined;
    await Promise.all([opening, client?.end().catch(() => {})]);
  }

  return {
    state: (): NotificationState => (channels.size === 0 ? "off" : live ? "live" : "down"),

    async listen(channel: string, onNotify: (payload: string) => void): Promise<() => Promise<void>> {
      const entry = (payload: string) => onNotify(payload); // its own identity, so one function may listen twice
      const callbacks = channels.get(channel);
      if (callbacks) callbacks.add(entry);
      else {
        channels.set(channel, new Set([entry]));
        const client = live;
        // A LISTEN that fails ends the connection, which counts as its loss: the next one issues it again.
        if (client) await client.query(`listen ${client.escapeIdentifier(channel)}`).catch(() => client.end().catch(() => {}));
        else if (!opening && !retry) open();
      }
      await opening; // settles once connected or after a failed attempt: callers poll until a retry succeeds
      let stopped = false;
      return async () => {
        if (stopped) return;
        stopped = true;
        const set = channels.get(channel);
        set?.delete(entry);
        if (!set || set.size > 0) return;
        channels.delete(channel);
        if (channels.size === 0) await close();
        else await live?.query(`unlisten ${live.escapeIdentifier(channel)}`).catch(() => {});
      };
    },

    close,
  };
}

/**
 * Holds a lock file on an embedded data directory: two processes on one PGlite directory
 * silently lose writes (stack-notes.md), so the second one is refused.
 */
function lockDataDir(dir: string): () => void {
  const lockFile = join(dir, "orderly.lock");
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(lockFile, "wx");
      writeSync(fd, String(process.pid));
      closeSync(fd);
      return () => rmSync(lockFile, { force: true });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
      const holder = Number(readFileSync(lockFile, "utf8"));
      if (holder && holder !== process.pid && isAlive(holder)) {
        throw new ConfigError("ORDERLY_DATA_DIR", `${dir} is in use by process ${holder}; stop it or choose another ORDERLY_DATA_DIR`);
      }
      rmSync(lockFile, { force: true }); // left by a process that died
    }
  }
  throw new ConfigError("ORDERLY_DATA_DIR", `could not lock ${dir}`);
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** The embedded database: in `dataDir/pgdata`, or in memory when dataDir is undefined (tests). */
export async function openPglite(dataDir: string | undefined, options: { loadDataDir?: Blob } = {}): Promise<Database> {
  let unlock = () => {};
  let pgdata: string | undefined;
  if (dataDir) {
    mkdirSync(dataDir, { recursive: true });
    unlock = lockDataDir(dataDir);
    pgdata = join(dataDir, "pgdata");
  }
  let client: PGlite;
  try {
    client = await PGlite.create({ ...(pgdata ? { dataDir: pgdata } : { loadDataDir: options.loadDataDir }), startParams: PGLITE_START_PARAMS });
  } catch (error) {
    unlock();
    throw error;
  }
  const db = drizzlePglite(client, { schema }) as unknown as Db;
  let listeners = 0;
  return {
    db,
    kind: "pglite",
    tenant: (tenantId, work, options) => inTenant(db, tenantId, work, options),
    async migrate(sets = MIGRATION_SETS) {
      for (const set of ordered(sets)) await migratePglite(drizzlePglite(client, { schema }), migrationConfig(set));
    },
    async ping() {
      await db.execute(sql`select 1`);
    },
    async listen(channel, onNotify) {
      const unlisten = await client.listen(channel, (payload) => onNotify(payload));
      listeners++;
      let stopped = false;
      return async () => {
        if (stopped) return;
        stopped = true;
        listeners--;
        if (!client.closed) await unlisten();
      };
    },
    // In-process: notifications cannot be lost while the database is open.
    notifications: () => (listeners > 0 && !client.closed ? "live" : "off"),
    poolStats: () => undefined,
    async close() {
      try {
        if (!client.closed) await client.close();
      } finally {
        unlock();
      }
    },
  };
}

export function dataDirExists(dataDir: string): boolean {
  return existsSync(join(dataDir, "pgdata", "PG_VERSION"));
}

/**
 * PGlite's own start parameters with smaller buffers than PostgreSQL's defaults (128 MB of shared
 * buffers): one connection on one shop's data needs far less, and the embedded server's idle memory
 * went from 382 to under 300 MiB with these (bench footprint phase).
 */
const PGLITE_START_PARAMS = [...PGlite.defaultStartParams, "-c", "shared_buffers=32MB", "-c", "wal_buffers=1MB"];

/** A ready snapshot of a migrated embedded database, so tests start one in a fraction of a second. */
export async function migratedPgliteSnapshot(): Promise<Blob> {
  const client = await PGlite.create();
  for (const set of MIGRATION_SETS) await migratePglite(drizzlePglite(client, { schema }), migrationConfig(set));
  const blob = await client.dumpDataDir("none");
  await client.close();
  return blob;
}
