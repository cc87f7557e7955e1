import { join } from "node:path";
import { type Config, ConfigError, noEmbeddedInProduction } from "../config.ts";
import { type Database, type MigrationSet, migrationStatus } from "./client.ts";
import type { PostgresOptions } from "./postgres.ts";

/**
 * The configured database, reachable and migrated, or a ConfigError naming the variable. A split
 * service passes its own URL (and the variable it came from) and migrates only its own tables.
 * With `migrate: "check"` (serve --no-migrate: a migration job ran them) it applies nothing and
 * refuses a database whose migrations are not all applied; with "none" it only opens it.
 */
export async function openDatabase(config: Config, options: OpenOptions = {}): Promise<Database> {
  const database = await reachDatabase(config, options);
  try {
    await prepareDatabase(database, config, options);
  } catch (error) {
    await database.close().catch(() => {});
    throw error;
  }
  return database;
}

type OpenOptions = Pick<PostgresOptions, "lockTimeoutMs" | "onNotificationsChange"> & {
  url?: string | undefined;
  variable?: string;
  sets?: readonly MigrationSet[];
  migrate?: "apply" | "check" | "none";
};

/**
 * The first half of openDatabase: PostgreSQL reached, nothing applied; the embedded database still
 * opening on its thread (its statements wait until it is open), so a server builds its app meanwhile.
 */
export async function reachDatabase(config: Config, options: OpenOptions = {}): Promise<Database> {
  const databaseUrl = options.url ?? config.databaseUrl;
  if (!databaseUrl) {
    // Every command, not only serve: a migration or a dead-letter retry on an embedded database in
    // the data dir would answer "done" for a database nothing serves.
    if (config.production) throw noEmbeddedInProduction();
    const { openPglite } = await import("./pglite.ts");
    return openPglite(config.dataDir).catch((error: unknown) => {
      if (error instanceof ConfigError) throw error;
      throw cannotOpenEmbedded(config, error);
    });
  }
  const { openPostgres } = await import("./postgres.ts");
  const database = openPostgres(databaseUrl, {
    max: config.dbPoolMax,
    preparedStatements: config.dbPreparedStatements,
    lockTimeoutMs: options.lockTimeoutMs,
    onNotificationsChange: options.onNotificationsChange,
  });
  try {
    await database.ping();
  } catch (error) {
    await database.close().catch(() => {});
    const url = new URL(databaseUrl);
    throw new ConfigError(options.variable ?? "DATABASE_URL", `cannot reach PostgreSQL at ${url.host}${url.pathname}: ${(error as Error).message}`);
  }
  return database;
}

/**
 * The second half of openDatabase: waits for the embedded database to open, then applies the
 * migrations (`migrate` "apply", the default), or refuses a database with any pending ("check").
 */
export async function prepareDatabase(database: Database, config: Config, options: OpenOptions = {}): Promise<void> {
  if (database.kind === "pglite") {
    await database.ping().catch((error: unknown) => {
      throw cannotOpenEmbedded(config, error);
    });
  }
  const migrate = options.migrate ?? "apply";
  if (migrate === "apply") await database.migrate(options.sets);
  if (migrate !== "check") return;
  const behind = (await migrationStatus(database.db, options.sets)).filter((s) => s.pending.length > 0);
  if (behind.length > 0) {
    const missing = behind.map((s) => `${s.set} (${s.pending.length} pending, first ${s.pending[0]})`).join(", ");
    throw new ConfigError(options.variable ?? "DATABASE_URL", `the database is not migrated: ${missing}; run orderly migrate first, or serve without --no-migrate`);
  }
}

const cannotOpenEmbedded = (config: Config, error: unknown) =>
  new ConfigError("ORDERLY_DATA_DIR", `cannot open the embedded database in ${join(config.dataDir, "pgdata")}: ${String(error)}`);
