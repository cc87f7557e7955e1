import { join } from "node:path";
import { type Config, ConfigError } from "../config.ts";
import { type Database, openPglite, openPostgres } from "./client.ts";

/** The configured database, reachable and migrated, or a ConfigError naming the variable. */
export async function openDatabase(config: Config, options: { lockTimeoutMs?: number } = {}): Promise<Database> {
  if (!config.databaseUrl) {
    const database = await openPglite(config.dataDir).catch((error: unknown) => {
      if (error instanceof ConfigError) throw error;
      throw new ConfigError("ORDERLY_DATA_DIR", `cannot open the embedded database in ${join(config.dataDir, "pgdata")}: ${String(error)}`);
    });
    await database.migrate();
    return database;
  }
  const database = openPostgres(config.databaseUrl, options);
  try {
    await database.ping();
  } catch (error) {
    await database.close().catch(() => {});
    const url = new URL(config.databaseUrl);
    throw new ConfigError("DATABASE_URL", `cannot reach PostgreSQL at ${url.host}${url.pathname}: ${(error as Error).message}`);
  }
  await database.migrate();
  return database;
}
