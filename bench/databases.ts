// PostgreSQL databases the bench creates on the server of DATABASE_URL, and the facts it reports about that server.
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import pg from "pg";
import { sleep } from "./figures.ts";
import { ensureRunning, onCleanup } from "./lifecycle.ts";

const run = promisify(execFile);

/** The URL of another database on the same server. */
export function databaseUrl(base: string, name: string): string {
  const url = new URL(base);
  url.pathname = `/${name}`;
  return url.toString();
}

export async function query<T extends object>(url: string, text: string, values: unknown[] = []): Promise<T[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<T>(text, values)).rows;
  } finally {
    await client.end();
  }
}

export async function databaseExists(base: string, name: string): Promise<boolean> {
  return (await query(base, "select 1 from pg_database where datname = $1", [name])).length > 0;
}

/** Creates an empty database and registers its drop for the end of the run; returns its URL. */
export async function scratchDatabase(base: string, name: string): Promise<string> {
  ensureRunning();
  await query(base, `create database ${name}`);
  onCleanup(`drop database ${name}`, () => dropDatabase(base, name));
  return databaseUrl(base, name);
}

/** Retried for 30 s: other suites on a shared server restart PostgreSQL on purpose (fault tests). */
export async function dropDatabase(base: string, name: string): Promise<void> {
  for (const until = Date.now() + 30_000; ; await sleep(1_000)) {
    try {
      return void (await query(base, `drop database if exists ${name} with (force)`));
    } catch (error) {
      if (Date.now() > until) throw error;
    }
  }
}

/** Runs a SQL file with psql, stopping at the first error. */
export async function psqlFile(url: string, file: string): Promise<void> {
  await run("psql", ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-f", file], { env: { ...process.env, PGOPTIONS: "-c client_min_messages=warning" } });
}

/** When the PostgreSQL server last started: a change during a phase means something restarted it, and that phase's figures are void. */
export async function postgresStartedAt(base: string): Promise<string> {
  const [row] = await query<{ at: string }>(base, "select pg_postmaster_start_time()::text as at");
  return row?.at ?? "";
}

export interface ServerFacts {
  version: string;
  dataDirectory: string;
  walSyncMethod: string;
  maxConnections: number;
}

export async function serverFacts(base: string): Promise<ServerFacts> {
  const [row] = await query<{ version: string; data_directory: string; wal_sync_method: string; max_connections: string }>(
    base,
    `select current_setting('server_version') as version, current_setting('data_directory') as data_directory,
            current_setting('wal_sync_method') as wal_sync_method, current_setting('max_connections') as max_connections`,
  );
  if (!row) throw new Error("PostgreSQL answered no settings");
  return { version: row.version, dataDirectory: row.data_directory, walSyncMethod: row.wal_sync_method, maxConnections: Number(row.max_connections) };
}
