import { join } from "node:path";
import { type Config, ConfigError } from "../config.ts";
import { type Database, type MigrationSet, openPglite, openPostgres, type PostgresOptions } from "./client.ts";

/**
 * The configured database, reachable and migrated, or a ConfigError naming the variable. A split
 * service passes its own URL (and the variable it came from) and migrates only its own tables.
 */
export async function openDatabase(
  config: Config,
  options: Pick<PostgresOptions, "lockTimeoutMs" | "onNotificationsChange"> & { url?: string; variable?: string; sets?: readonly MigrationSet[] } = {},
): Promise<Database> {
  const databaseUrl = options.url ?? config.databaseUrl;
  if (!databaseUrl) {
    const database = await openPglite(config.dataDir).catch((error: unknown) => {
      if (error instanceof ConfigError) throw error;
      throw new ConfigError("ORDERLY_DATA_DIR", `cannot open the embedded database in ${join(config.dataDir, "pgdata")}: ${String(error)}`);
    });
    await database.migrate();
    return database;
  }
  const database = openPostgres(databaseUrl, { max: config.dbPoolMax, ...options });
  try {
    await database.ping();
  } catch (error) {
    await database.close().catch(() => {});
    const url = new URL(databaseUrl);
    throw new ConfigError(options.variable ?? "DATABASE_URL", `cannot reach PostgreSQL at ${url.host}${url.pathname}: ${(error as Error).message}`);
  }
  await database.migrate(options.sets);
  return database;
}
