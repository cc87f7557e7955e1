import { PGlite } from "@electric-sql/pglite";
import { sql } from "drizzle-orm";
import { drizzle as drizzlePglite } from "drizzle-orm/pglite";
import { migrate as migratePglite } from "drizzle-orm/pglite/migrator";
import { type Database, type Db, inTenant, MIGRATION_SETS, migrationConfig, setsBehind } from "./client.ts";
import { startPglite, takeAhead } from "./pglite-thread.ts";
import * as schema from "./schema.ts";

/**
 * The embedded database: in `dataDir/pgdata`, or in memory when dataDir is undefined (tests). PGlite
 * runs on a thread of its own (pglite-thread.ts); the one bootAhead started is taken if there is one.
 * Resolves while it still opens: statements wait until it is open, and fail as it failed if it could not.
 */
export async function openPglite(dataDir: string | undefined, options: { loadDataDir?: Blob } = {}): Promise<Database> {
  const { client, unlock } = takeAhead(dataDir) ?? startPglite(dataDir, options.loadDataDir);
  const db = drizzlePglite(client as unknown as PGlite, { schema }) as unknown as Db;
  let listeners = 0;
  return {
    db,
    kind: "pglite",
    tenant: (tenantId, work, options) => inTenant(db, tenantId, work, options),
    async migrate(sets = MIGRATION_SETS) {
      for (const set of await setsBehind(db, sets)) await migratePglite(drizzlePglite(client as unknown as PGlite, { schema }), migrationConfig(set));
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
    // One process, no connection to lose: notifications cannot be lost while the database is open.
    notifications: () => (listeners > 0 && !client.closed ? "live" : "off"),
    poolStats: () => undefined,
    async close() {
      try {
        await client.close();
      } finally {
        unlock();
      }
    },
  };
}

/** A ready snapshot of a migrated embedded database, so tests start one in a fraction of a second. */
export async function migratedPgliteSnapshot(): Promise<Blob> {
  const client = await PGlite.create();
  for (const set of MIGRATION_SETS) await migratePglite(drizzlePglite(client, { schema }), migrationConfig(set));
  const blob = await client.dumpDataDir("none");
  await client.close();
  return blob;
}
