import { readFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import pg from "pg";
import { inject } from "vitest";
import { type Database } from "../../src/db/client.ts";
import { openPglite } from "../../src/db/pglite.ts";
import { openPostgres } from "../../src/db/postgres.ts";

export interface TestDatabase {
  name: "pglite" | "postgres";
  open(): Promise<Database>;
}

/** A fresh embedded database, already migrated. */
export async function openTestPglite(): Promise<Database> {
  const snapshot = new Blob([readFileSync(inject("pgliteSnapshot"))]);
  return openPglite(undefined, { loadDataDir: snapshot });
}

/**
 * A fresh PostgreSQL database on the server of DATABASE_URL, migrated, dropped when closed.
 * Without DATABASE_URL: undefined, and under CI=true an error (a missing service fails, never skips).
 */
export function postgresUrl(): string | undefined {
  const url = process.env.DATABASE_URL;
  if (!url && process.env.CI === "true") throw new Error("DATABASE_URL is not set: the PostgreSQL suites cannot run in CI");
  return url;
}

/** A fresh PostgreSQL database; `createOptions` is appended to its CREATE DATABASE (e.g. another collation). */
export async function openTestPostgres(options: { max?: number; migrate?: boolean; createOptions?: string } = {}): Promise<Database & { url: string }> {
  const base = postgresUrl();
  if (!base) throw new Error("DATABASE_URL is not set");
  const name = `orderly_test_${randomBytes(6).toString("hex")}`;
  const admin = new pg.Client({ connectionString: base });
  await admin.connect();
  await admin.query(`create database ${name} ${options.createOptions ?? ""}`);
  await admin.end();
  const url = new URL(base);
  url.pathname = `/${name}`;
  const database = openPostgres(url.toString(), { max: options.max ?? 20, lockTimeoutMs: 10_000 });
  if (options.migrate ?? true) await database.migrate();
  return {
    ...database,
    url: url.toString(),
    async close() {
      await database.close();
      const dropper = new pg.Client({ connectionString: base });
      await dropper.connect();
      await dropper.query(`drop database if exists ${name} with (force)`);
      await dropper.end();
    },
  };
}

/** The databases every integration suite runs against: the embedded one always, PostgreSQL when configured. */
export function testDatabases(): TestDatabase[] {
  const list: TestDatabase[] = [{ name: "pglite", open: openTestPglite }];
  if (postgresUrl()) list.push({ name: "postgres", open: () => openTestPostgres() });
  return list;
}
