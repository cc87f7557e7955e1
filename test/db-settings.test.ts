import pg from "pg";
import { sql } from "drizzle-orm";
import { afterEach, describe, expect, it, vi } from "vitest";
import { type Queryable, rows, transaction } from "../src/db/client.ts";
import { openPostgres } from "../src/db/postgres.ts";
import { openTestPostgres, postgresUrl, testDatabases } from "./support/databases.ts";

afterEach(() => vi.restoreAllMocks());

const OWN_TENANT = `it's a \\ tenant`;

describe.each(testDatabases())("tenant transactions on $name", ({ open }) => {
  it("set the tenant, the role and the lock timeout as literals, whatever characters the tenant's id holds", async () => {
    const database = await open();
    try {
      const settings = await database.tenant(
        OWN_TENANT,
        async (tx) => (await rows<{ tenant: string; role: string; lock: string }>(tx, sql`select current_setting('orderly.tenant_id') as tenant, current_user as role, current_setting('lock_timeout') as lock`))[0],
        { lockTimeoutMs: 1_234 },
      );
      expect(settings).toEqual({ tenant: OWN_TENANT, role: "orderly_app", lock: "1234ms" });
    } finally {
      await database.close();
    }
  });
});

describe.each(testDatabases())("the migrations' functions on $name", ({ open }) => {
  it("are PL/pgSQL, whose statements keep their plans: an SQL function PostgreSQL cannot inline is planned again on every call", async () => {
    const database = await open();
    try {
      const functions = await rows<{ name: string; language: string }>(
        database.db,
        sql`select p.proname as name, l.lanname as language from pg_proc p join pg_language l on l.oid = p.prolang
            where p.pronamespace = 'public'::regnamespace and p.prokind = 'f' order by p.proname`,
      );
      expect(functions.map((f) => f.name)).toEqual(expect.arrayContaining(["outbox_claim", "outbox_enqueue", "inventory_prices_match", "shipping_create_document"]));
      expect(functions.filter((f) => f.language !== "plpgsql")).toEqual([]);
    } finally {
      await database.close();
    }
  });
});

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

  it("prepares each statement with parameters once per connection; a generic plan still sees only the tenant's rows", async () => {
    const migrated = await openTestPostgres();
    const database = openPostgres(migrated.url, { max: 1, lockTimeoutMs: 300 });
    const unprepared = openPostgres(migrated.url, { max: 1, preparedStatements: false });
    const preparedOn = async (db: typeof database) =>
      rows<{ statement: string; generic: number; custom: number }>(
        db.db,
        sql`select statement, generic_plans::int as generic, custom_plans::int as custom from pg_prepared_statements where statement like '%from stock_levels%'`,
      );
    try {
      for (const tenant of ["a", "b"]) {
        await database.tenant(tenant, (tx) => tx.execute(sql`insert into stock_levels (tenant_id, sku, initial, available) values (${tenant}, ${`SKU-${tenant}`}, 1, 1)`));
      }
      // The plan PostgreSQL may settle on after five runs, made at once: the tenant is a setting, not a parameter.
      await database.db.execute(sql`set plan_cache_mode = force_generic_plan`);
      const skus = (db: typeof database, tenant: string) =>
        db.tenant(tenant, async (tx) => (await rows<{ sku: string }>(tx, sql`select sku from stock_levels where available >= ${1}`)).map((r) => r.sku));
      for (let run = 0; run < 3; run++) {
        expect(await skus(database, "a")).toEqual(["SKU-a"]);
        expect(await skus(database, "b")).toEqual(["SKU-b"]);
        expect(await skus(unprepared, "a")).toEqual(["SKU-a"]);
      }
      expect(await preparedOn(database)).toEqual([{ statement: "select sku from stock_levels where available >= $1", generic: 6, custom: 0 }]);
      expect(await preparedOn(unprepared)).toEqual([]);
    } finally {
      await unprepared.close();
      await database.close();
      await migrated.close();
    }
  });

  /** Runs work on the one connection of a pool as Orderly opens it (its query wrapped), then drops the database. */
  async function onPooledClient(work: (client: pg.PoolClient) => Promise<void>) {
    const migrated = await openTestPostgres();
    const database = openPostgres(migrated.url, { max: 1 });
    const client = await (database.db as unknown as { $client: pg.Pool }).$client.connect();
    try {
      await work(client);
    } finally {
      client.release();
      await database.close();
      await migrated.close();
    }
  }

  it("does not prepare a statement whose values pg may fail to convert, so the same text still runs on that connection", () =>
    onPooledClient(async (client) => {
      const asJson = async (value: unknown) => (await client.query("select $1::jsonb as v", [value])).rows;
      // pg sends Parse, fails to convert the value, and closes the statement: a name would stay marked prepared.
      await expect(asJson({ n: 1n })).rejects.toThrow(/BigInt/);
      expect(await asJson({ n: 1 })).toEqual([{ v: { n: 1 } }]);
      expect(await asJson('{"n": 2}')).toEqual([{ v: { n: 2 } }]);
    }));

  it("passes a Submittable (a cursor, a stream) with parameters on as it is, and it is answered", () =>
    onPooledClient(async (client) => {
      const query = client.query(new pg.Query("select $1::int as n", [7]));
      const answered = new Promise<pg.QueryResult>((resolve, reject) => {
        query.on("end", resolve);
        query.on("error", reject);
      });
      // A copy of it would be sent instead, and the one given here never answered.
      const never = new Promise<never>((_, reject) => setTimeout(() => reject(new Error("the query given was never answered")), 5_000));
      expect((await Promise.race([answered, never])).rows).toEqual([{ n: 7 }]);
    }));

  it("sends BEGIN with a tenant's settings as one round trip, and a plain transaction's BEGIN on its own; each is still one transaction", async () => {
    const migrated = await openTestPostgres();
    // Counted where pg sends statements: the pool's connection binds it when it connects.
    const sent = vi.spyOn(pg.Client.prototype, "query");
    const database = openPostgres(migrated.url, { max: 1, lockTimeoutMs: 300 });
    const texts = () => sent.mock.calls.map(([config]) => (typeof config === "string" ? config : (config as { text: string }).text));
    const txids = (tx: Queryable) => rows<{ id: string }>(tx, sql`select txid_current()::text as id`);
    try {
      await database.ping();
      sent.mockClear();
      const [first, second] = await database.tenant("t", async (tx) => [(await txids(tx))[0]?.id, (await txids(tx))[0]?.id]);
      expect(first).toBe(second);
      expect(texts()).toEqual([expect.stringMatching(/^begin; select set_config\('role', 'orderly_app', true\), set_config\('orderly.tenant_id', 't', true\)/), "select txid_current()::text as id", "select txid_current()::text as id", "commit"]);

      sent.mockClear();
      const [plainFirst, plainSecond] = await transaction(database.db, async (tx) => [(await txids(tx))[0]?.id, (await txids(tx))[0]?.id]);
      expect(plainFirst).toBe(plainSecond);
      expect(texts()).toEqual(["begin", "select txid_current()::text as id", "select txid_current()::text as id", "commit"]);

      // What fails inside is rolled back, the settings' statement included.
      const failing = database.tenant("t", async (tx) => {
        await tx.execute(sql`insert into stock_levels (tenant_id, sku, initial, available) values ('t', 'GONE', 1, 1)`);
        throw new Error("refused");
      });
      await expect(failing).rejects.toThrow("refused");
      expect(await rows(database.db, sql`select 1 from stock_levels where sku = 'GONE'`)).toEqual([]);
      // A transaction that ran nothing still begins and ends; the one connection is then out of any transaction:
      // two statements on it are two transactions.
      sent.mockClear();
      await database.tenant("t", async () => {});
      await transaction(database.db, async () => {});
      expect(texts()).toEqual([expect.stringMatching(/^begin; select set_config/), "commit", "begin", "commit"]);
      const [a, b] = [(await txids(database.db))[0]?.id, (await txids(database.db))[0]?.id];
      expect(a).not.toBe(b);
    } finally {
      await database.close();
      await migrated.close();
    }
  });
});
