import { closeSync, mkdirSync, openSync, readFileSync, rmSync, writeSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { setImmediate as nextTurn } from "node:timers/promises";
import { PGlite } from "@electric-sql/pglite";
import { sql } from "drizzle-orm";
import { drizzle as drizzlePglite } from "drizzle-orm/pglite";
import { migrate as migratePglite } from "drizzle-orm/pglite/migrator";
import { ConfigError } from "../config.ts";
import { type Database, type Db, inTenant, MIGRATION_SETS, migrationConfig, setsBehind } from "./client.ts";
import * as schema from "./schema.ts";

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

/**
 * PGlite runs each statement to its end on the main thread, and the statements queued behind it run
 * one after another as their promises resolve, without the event loop turning in between. Under
 * load one turn ran tens of statements: the server took up its clients' new connections about ten a
 * second, and a client's first request waited up to 6 s (64 connections of the bench's load). So each
 * statement and transaction first lets the event loop turn once, and sockets are served between them.
 */
function yieldingToEventLoop(client: PGlite): PGlite {
  const query = client.query.bind(client);
  const transaction = client.transaction.bind(client);
  return Object.assign(client, {
    query: (async (...args: Parameters<typeof query>) => {
      await nextTurn();
      return query(...args);
    }) as typeof client.query,
    transaction: (async (...args: Parameters<typeof transaction>) => {
      await nextTurn();
      return transaction(...args);
    }) as typeof client.transaction,
  });
}

let compiled: WebAssembly.Module | undefined;

/**
 * PGlite's WebAssembly, compiled once per process, synchronously. PGlite compiles it asynchronously
 * by itself, and that compile ended with the event loop held for 70-130 ms just after the database
 * opened, before anything else could run; compiled synchronously, each function is compiled on its
 * first call instead (a fresh process: ready about 0.1 s sooner, its first few hundred statements
 * slower, the same from then on).
 */
function pgliteModule(): WebAssembly.Module {
  compiled ??= new WebAssembly.Module(readFileSync(createRequire(import.meta.url).resolve("@electric-sql/pglite/pglite.wasm")));
  return compiled;
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
    client = await PGlite.create({
      ...(pgdata ? { dataDir: pgdata } : { loadDataDir: options.loadDataDir }),
      startParams: PGLITE_START_PARAMS,
      pgliteWasmModule: pgliteModule(),
    });
  } catch (error) {
    unlock();
    throw error;
  }
  const db = drizzlePglite(yieldingToEventLoop(client), { schema }) as unknown as Db;
  let listeners = 0;
  return {
    db,
    kind: "pglite",
    tenant: (tenantId, work, options) => inTenant(db, tenantId, work, options),
    async migrate(sets = MIGRATION_SETS) {
      for (const set of await setsBehind(db, sets)) await migratePglite(drizzlePglite(client, { schema }), migrationConfig(set));
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
