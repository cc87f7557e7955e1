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
  return db.transaction(async (tx) => {
    const lockTimeout = options.lockTimeoutMs === undefined ? sql`` : sql`, set_config('lock_timeout', ${`${options.lockTimeoutMs}ms`}, true)`;
    await tx.execute(sql`select set_config('role', 'orderly_app', true), set_config('orderly.tenant_id', ${tenantId}, true)${lockTimeout}`);
    return work(tx);
  });
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
   * commits, in every process on this database). Resolves to a function that stops listening.
   */
  listen(channel: string, onNotify: (payload: string) => void): Promise<() => Promise<void>>;
  close(): Promise<void>;
}

const MIGRATIONS = resolve(dirname(fileURLToPath(import.meta.url)), "../../drizzle");

/** The migration sets: the tx kit's tables, which every service has, then one per service. */
export const MIGRATION_SETS = ["kit", "inventory", "payments", "coupons", "shipping", "orders"] as const;
export type MigrationSet = (typeof MIGRATION_SETS)[number];

/** Each set has its own history, so services sharing a database, or each with its own, migrate alike. */
const migrationConfig = (set: MigrationSet) => ({ migrationsFolder: join(MIGRATIONS, set), migrationsTable: `__orderly_${set}_migrations` });
const ordered = (sets: readonly MigrationSet[]) => MIGRATION_SETS.filter((s) => s === "kit" || sets.includes(s));
const MIGRATION_LOCK = 7_301_995; // pg_advisory_lock key owned by Orderly's migrator

export interface PostgresOptions {
  max?: number;
  /** Milliseconds a statement may wait for a row lock before it fails with 55P03. */
  lockTimeoutMs?: number;
  /** Sees every statement with its parameters (the benchmark records the placement's SQL with it). */
  queryLogger?: QueryLogger;
}

export function openPostgres(url: string, options: PostgresOptions = {}): Database {
  const pool = new pg.Pool({
    connectionString: url,
    max: options.max ?? 20,
    connectionTimeoutMillis: 5_000,
    options: options.lockTimeoutMs ? `-c lock_timeout=${options.lockTimeoutMs}` : undefined,
  });
  // An idle client that loses its server must not crash the process; the pool replaces it.
  pool.on("error", () => {});
  pool.on("connect", (client) => {
    // Nor one checked out between two statements (a transaction awaiting other work): pg-pool listens
    // only on idle clients, so without this the loss is an uncaught error. Its next query fails instead.
    client.on("error", () => {});
    releaseWhenBeginFails(client);
  });
  const db = drizzlePg(pool, { schema, logger: options.queryLogger ?? false }) as unknown as Db;
  return {
    db,
    kind: "postgres",
    tenant: (tenantId, work, options) => inTenant(db, tenantId, work, options),
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
    listen: (channel, onNotify) => listenPostgres(url, channel, onNotify),
    close: () => pool.end(),
  };
}

/**
 * drizzle-orm 0.45 sends a transaction's BEGIN before the try/finally that releases its pool client
 * (drizzle-orm#6023, #6241): when BEGIN fails, as it does on a connection that died while idle, the
 * client is never released and the pool loses that slot for good; after a few database outages it
 * has none left and every request hangs. This releases such a client with the error (pg-pool then
 * destroys it). Remove once drizzle releases it itself.
 */
function releaseWhenBeginFails(client: pg.PoolClient): void {
  const query = client.query.bind(client) as (...args: unknown[]) => unknown;
  const isBegin = (config: unknown) => typeof config === "object" && config !== null && /^\s*begin\b/i.test(String((config as { text?: unknown }).text ?? ""));
  (client as { query: unknown }).query = (...args: unknown[]) => {
    const result = query(...args);
    if (isBegin(args[0]) && result instanceof Promise) {
      result.catch((error: unknown) => {
        try {
          client.release(error instanceof Error ? error : new Error(String(error)));
        } catch {
          // already released: nothing leaked
        }
      });
    }
    return result;
  };
}

/** LISTEN on a connection of its own, re-established after it drops (callers also poll meanwhile). */
async function listenPostgres(url: string, channel: string, onNotify: (payload: string) => void): Promise<() => Promise<void>> {
  let client: pg.Client | undefined;
  let stopped = false;
  let retry: NodeJS.Timeout | undefined;
  const connect = async (): Promise<void> => {
    const next = new pg.Client({ connectionString: url });
    next.on("notification", (notification) => onNotify(notification.payload ?? ""));
    next.on("error", () => {
      next.end().catch(() => {});
      if (!stopped) retry = setTimeout(() => connect().catch(() => {}), 1_000);
    });
    await next.connect();
    await next.query(`listen "${channel.replaceAll('"', "")}"`);
    client = next;
    onNotify(""); // anything committed while not listening is picked up now
  };
  await connect();
  return async () => {
    stopped = true;
    clearTimeout(retry);
    await client?.end().catch(() => {});
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
    client = await PGlite.create(pgdata ? { dataDir: pgdata } : { loadDataDir: options.loadDataDir });
  } catch (error) {
    unlock();
    throw error;
  }
  const db = drizzlePglite(client, { schema }) as unknown as Db;
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
      return async () => {
        if (!client.closed) await unlisten();
      };
    },
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

/** A ready snapshot of a migrated embedded database, so tests start one in a fraction of a second. */
export async function migratedPgliteSnapshot(): Promise<Blob> {
  const client = await PGlite.create();
  for (const set of MIGRATION_SETS) await migratePglite(drizzlePglite(client, { schema }), migrationConfig(set));
  const blob = await client.dumpDataDir("none");
  await client.close();
  return blob;
}
