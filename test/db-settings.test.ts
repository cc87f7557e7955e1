import pg from "pg";
import { sql } from "drizzle-orm";
import { describe, expect, it } from "vitest";
import { rows } from "../src/db/client.ts";
import { openPostgres } from "../src/db/postgres.ts";
import { openTestPostgres, postgresUrl } from "./support/databases.ts";

describe.runIf(postgresUrl())("PostgreSQL connection settings", () => {
  it("sets lock_timeout in each tenant transaction, never as a connection's startup option (which PgBouncer refuses)", async () => {
    const migrated = await openTestPostgres();
    const database = openPostgres(migrated.url, { max: 2, lockTimeoutMs: 300 });
    const blocker = new pg.Client({ connectionString: migrated.url });
    await blocker.connect();
    try {
      // A statement outside a tenant transaction runs with the server's default.
      expect((await rows<{ lock_timeout: string }>(database.db, sql`show lock_timeout`))[0]?.lock_timeout).toBe("0");
      expect(await database.tenant("t", async (tx) => (await rows<{ lock_timeout: string }>(tx, sql`show lock_timeout`))[0]?.lock_timeout)).toBe("300ms");
      // And it applies: a row held elsewhere makes the tenant's statement give up after it.
      await database.tenant("t", (tx) => tx.execute(sql`insert into stock_levels (tenant_id, sku, initial, available) values ('t', 'HELD', 1, 1)`));
      await blocker.query("begin");
      await blocker.query("select 1 from stock_levels where tenant_id = 't' and sku = 'HELD' for update");
      const started = Date.now();
      const waited = database.tenant("t", (tx) => tx.execute(sql`update stock_levels set available = 2 where tenant_id = 't' and sku = 'HELD'`));
      await expect(waited).rejects.toMatchObject({ cause: { code: "55P03" } });
      expect(Date.now() - started).toBeLessThan(3_000);
      await blocker.query("rollback");
    } finally {
      await blocker.end();
      await database.close();
      await migrated.close();
    }
  });
});
