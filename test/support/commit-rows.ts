// `node bin/tsx-run.mjs test/support/commit-rows.ts DATA_DIR FROM COUNT`: opens the embedded database
// in DATA_DIR (creating it if need be) and commits COUNT rows, one transaction each, with ids from
// FROM. A process of its own, so that test/embedded-durability.test.ts can count its syncs with strace.
import { sql } from "drizzle-orm";
import { openPglite } from "../../src/db/pglite.ts";

const [dataDir, from, count] = process.argv.slice(-3) as [string, string, string];
const database = await openPglite(dataDir);
try {
  await database.db.execute(sql`create table if not exists durability_probe (id integer primary key)`);
  for (let id = Number(from); id < Number(from) + Number(count); id++) await database.db.execute(sql`insert into durability_probe values (${id})`);
} finally {
  await database.close();
}
