import { readFileSync } from "node:fs";
import { join } from "node:path";
import { type SQL, sql } from "drizzle-orm";
import type { PgDatabase, PgQueryResultHKT } from "drizzle-orm/pg-core";
import { PACKAGE_ROOT } from "../kit/package-root.ts";
import { currentTraceparent } from "../kit/trace-context.ts";
import type * as schema from "./schema.ts";

// What every database handle shares. The drivers are apart (postgres.ts, pglite.ts), so a process
// loads only the one it opens (open.ts imports it when it opens the database).

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

/** The start of the statement that scopes a transaction to a tenant (tenantSettings): postgres.ts sends BEGIN with it. */
export const TENANT_SETTINGS = "select set_config('role', 'orderly_app', true)";

/**
 * `column = ${anyOf(values)}`: the column equals one of the strings, which travel as one jsonb
 * parameter (drizzle spreads an array into a parameter per value: a new statement for every count).
 * Written `any(array(select …))`, the values are read first and the planner can probe an index on
 * the column with them; `in (select jsonb_array_elements_text(…))`, which it guesses returns 100
 * rows, it joined against a sequential scan once a table held some thousands of rows.
 */
export function anyOf(values: readonly string[]): SQL {
  return sql`any(array(select jsonb_array_elements_text(${JSON.stringify(values)}::jsonb)))`;
}

/** A string as an SQL literal, as pg's escapeLiteral writes it (E'' when it holds a backslash). */
export function literal(text: string): string {
  const quoted = `'${text.replaceAll("'", "''").replaceAll("\\", "\\\\")}'`;
  return text.includes("\\") ? `E${quoted}` : quoted;
}

/**
 * The statement that scopes a transaction to a tenant: the role orderly_app, orderly.tenant_id and,
 * when given, the lock timeout and the trace context of the outbox rows it writes (kit migration
 * 0005). Its values are written as literals: with no parameters, it can travel with BEGIN as one
 * simple query (postgres.ts).
 */
export function tenantSettings(tenantId: string, options: TenantOptions & { traceparent?: string | undefined } = {}): string {
  const settings = [TENANT_SETTINGS, `set_config('orderly.tenant_id', ${literal(tenantId)}, true)`];
  if (options.lockTimeoutMs !== undefined) settings.push(`set_config('lock_timeout', ${literal(`${Math.trunc(options.lockTimeoutMs)}ms`)}, true)`);
  if (options.traceparent !== undefined) settings.push(`set_config('orderly.traceparent', ${literal(options.traceparent)}, true)`);
  return settings.join(", ");
}

/**
 * Runs work in one transaction scoped to a tenant: as the role orderly_app with orderly.tenant_id
 * set, so row-level security applies on top of the queries' own tenant filters. On PostgreSQL the
 * BEGIN and the settings are one round trip.
 */
export function inTenant<T>(db: Db, tenantId: string, work: (tx: Tx) => Promise<T>, options: TenantOptions = {}): Promise<T> {
  return transaction(db, async (tx) => {
    // While a span is active, the outbox rows this transaction writes carry its trace context.
    await tx.execute(sql.raw(tenantSettings(tenantId, { ...options, traceparent: currentTraceparent() })));
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

const MIGRATIONS = join(PACKAGE_ROOT, "drizzle");

/** The migration sets: the tx kit's tables, which every service has, then one per service. */
export const MIGRATION_SETS = ["kit", "inventory", "payments", "coupons", "shipping", "orders"] as const;
export type MigrationSet = (typeof MIGRATION_SETS)[number];

/** Each set has its own history, so services sharing a database, or each with its own, migrate alike. */
export const migrationConfig = (set: MigrationSet) => ({ migrationsFolder: join(MIGRATIONS, set), migrationsTable: `__orderly_${set}_migrations` });
export const ordered = (sets: readonly MigrationSet[]) => MIGRATION_SETS.filter((s) => s === "kit" || sets.includes(s));
export const MIGRATION_LOCK = 7_301_995; // pg_advisory_lock key owned by Orderly's migrator

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
  const lastApplied = await lastAppliedOf(db, ordered(sets));
  return ordered(sets).map((set) => {
    const journal = JSON.parse(readFileSync(join(MIGRATIONS, set, "meta", "_journal.json"), "utf8")) as { entries: { when: number; tag: string }[] };
    const lastAt = lastApplied.get(set);
    const pending = journal.entries.filter((e) => lastAt === undefined || e.when > lastAt).map((e) => e.tag);
    return { set, applied: journal.entries.length - pending.length, pending };
  });
}

/**
 * When each set's newest applied migration was created, for the sets whose history table exists: two
 * statements whatever the number of sets (a start on the embedded database spent 0.15 s in two per set).
 */
async function lastAppliedOf(db: Db, sets: readonly MigrationSet[]): Promise<Map<MigrationSet, number>> {
  const tables = new Map(sets.map((set) => [migrationConfig(set).migrationsTable, set]));
  const existing = await rows<{ name: string }>(
    db,
    sql`select c.relname as name from pg_class c join pg_namespace n on n.oid = c.relnamespace where n.nspname = 'drizzle' and c.relname = ${anyOf([...tables.keys()])}`,
  );
  if (existing.length === 0) return new Map();
  const newest = sql.join(
    existing.map(({ name }) => sql`select ${tables.get(name)}::text as set, max(created_at)::text as at from ${sql.identifier("drizzle")}.${sql.identifier(name)}`),
    sql` union all `,
  );
  const applied = await rows<{ set: MigrationSet; at: string | null }>(db, newest);
  return new Map(applied.flatMap(({ set, at }) => (at == null ? [] : [[set, Number(at)] as const])));
}

/**
 * The sets, in the order they migrate, with a migration not applied yet: the migrator runs for
 * those alone. It reads and hashes every migration file of a set, and creates its schema and table
 * if missing, even when nothing is to be applied (on the embedded database 0.15-0.2 s of a start).
 */
export async function setsBehind(db: Db, sets: readonly MigrationSet[] = MIGRATION_SETS): Promise<MigrationSet[]> {
  return (await migrationStatus(db, sets)).filter((s) => s.pending.length > 0).map((s) => s.set);
}
