import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterEach, describe, expect, inject, it } from "vitest";
import { ConfigError, loadConfig } from "../config.ts";
import { sqlState } from "./errors.ts";
import { openDatabase } from "./open.ts";
import { bootAhead, type PgliteThread, startPglite, takeAhead } from "./pglite-thread.ts";

const opened: PgliteThread[] = [];
const dirs: string[] = [];

/** A thread on a fresh copy of the migrated test database (no initdb: a second instead of three). */
function thread(): PgliteThread {
  const { client } = startPglite(undefined, new Blob([readFileSync(inject("pgliteSnapshot"))]));
  opened.push(client);
  return client;
}

function scratchDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "orderly-pglite-thread-"));
  dirs.push(dir);
  return dir;
}

afterEach(async () => {
  for (const client of opened.splice(0)) await client.close().catch(() => {});
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

describe("the embedded database's thread", () => {
  it("runs a transaction with no other caller's statement between its own", async () => {
    const db = thread();
    await db.query("create table t (n int)");
    let inside!: () => void;
    const begun = new Promise<void>((resolve) => (inside = resolve));
    const rolledBack = db.transaction(async (tx) => {
      await tx.query("insert into t values (1)");
      inside();
      await sleep(50);
      throw new Error("undo");
    });
    await begun;
    // Asked while the transaction is open: answered after its rollback, so it never sees the row.
    const counted = await db.query<{ n: number }>("select count(*)::int as n from t");
    await expect(rolledBack).rejects.toThrow("undo");
    expect(counted.rows).toEqual([{ n: 0 }]);
    const committed = await db.transaction(async (tx) => (await tx.query<{ n: number }>("insert into t values (2) returning n")).rows);
    expect(committed).toEqual([{ n: 2 }]);
    expect((await db.query("select n from t", [], { rowMode: "array" })).rows).toEqual([[2]]);
  });

  it("refuses a commit PostgreSQL answered with a rollback, and a statement on a transaction that has ended", async () => {
    const db = thread();
    await db.query("create table v (n int primary key)");
    let kept!: Pick<PgliteThread, "query">;
    const goneOn = db.transaction(async (tx) => {
      kept = tx;
      await tx.query("insert into v values (1)");
      await tx.query("insert into v values (1)").catch(() => {}); // the work goes on after a failed statement
      return "done";
    });
    const refused = await goneOn.catch((error: unknown) => error);
    expect(sqlState(refused)).toBe("25P02");
    expect((await db.query("select count(*)::int as n from v")).rows).toEqual([{ n: 0 }]);
    await expect(kept.query("insert into v values (2)")).rejects.toThrow(/transaction has ended/);
    expect((await db.query("select count(*)::int as n from v")).rows).toEqual([{ n: 0 }]);
  });

  it("closes once however often it is asked, even while it is still opening; then answers no statement", async () => {
    const db = thread();
    await Promise.all([db.close(), db.close()]);
    await db.close();
    expect(db.closed).toBe(true);
    await expect(db.query("select 1")).rejects.toThrow();
  });

  it("answers a statement's failure with its SQLSTATE and fields, and goes on answering", async () => {
    const db = thread();
    await db.query("create table u (k text constraint u_k_key unique)");
    await db.query("insert into u values ($1)", ["a"]);
    const failure = await db.query("insert into u values ($1)", ["a"]).catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(Error);
    expect(sqlState(failure)).toBe("23505");
    expect(failure).toMatchObject({ constraint: "u_k_key", table: "u" });
    expect((await db.query<{ k: string }>("select k from u")).rows).toEqual([{ k: "a" }]);
  });

  it("answers timestamps, dates, intervals and their arrays as text, as drizzle asks, and refuses any other parser", async () => {
    const db = thread();
    const statement = "select '2026-12-07 10:00:00+00'::timestamptz as at, array['2026-12-07 10:00:00'::timestamp] as ats, '1 day'::interval as span, 7::int as n, '{\"a\":1}'::jsonb as doc";
    const expected = { at: "2026-12-07 10:00:00+00", ats: "{\"2026-12-07 10:00:00\"}", span: "1 day", n: 7, doc: { a: 1 } };
    expect((await db.query(statement)).rows).toEqual([expected]);
    const keep = (value: string) => value;
    expect((await db.query(statement, [], { parsers: { 1184: keep, 1115: keep } })).rows).toEqual([expected]);
    await expect(db.query("select 1", [], { parsers: { 1184: (value: string) => new Date(value) } })).rejects.toThrow(/parser for type 1184/);
    await expect(db.query("select 1", [], { parsers: { 23: keep } })).rejects.toThrow(/parser for type 23/);
  });

  it("delivers notifications to each listener until it stops listening, and listens in the database while any does", async () => {
    const db = thread();
    const channels = async () => (await db.query<{ channel: string }>("select pg_listening_channels() as channel")).rows.map((r) => r.channel);
    const heard: string[] = [];
    const stop = await db.listen("news", (payload) => heard.push(`a:${payload}`));
    const stopOther = await db.listen("news", (payload) => heard.push(`b:${payload}`));
    await db.query("select pg_notify('news', 'one')");
    await stop();
    expect(await channels()).toEqual(["news"]);
    await db.query("select pg_notify('news', 'two')");
    await stopOther();
    expect(await channels()).toEqual([]);
    await db.query("select pg_notify('news', 'three')");
    await sleep(20);
    expect(heard).toEqual(["a:one", "b:one", "b:two"]);
  });

  it("answers every statement with the reason it could not open, and its data directory is not locked after closing", async () => {
    const dataDir = scratchDir();
    writeFileSync(join(dataDir, "pgdata"), "a file where the data directory should be");
    const { client, unlock } = startPglite(dataDir);
    opened.push(client);
    const why = await client.ready.catch((error: unknown) => error);
    expect(why).toBeInstanceOf(Error);
    await expect(client.query("select 1")).rejects.toThrow((why as Error).message);
    await client.close();
    unlock();

    const config = { ...loadConfig({}), dataDir };
    const refused = await openDatabase(config).catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(ConfigError);
    expect(refused).toMatchObject({ variable: "ORDERLY_DATA_DIR", message: expect.stringContaining("cannot open the embedded database") });
    expect(existsSync(join(dataDir, "orderly.lock"))).toBe(false);
  });

  it("boots ahead for one data directory, handed once to what opens it; a lock held by another process is refused then", async () => {
    const dataDir = scratchDir();
    bootAhead(dataDir);
    expect(takeAhead(join(dataDir, "other"))).toBeUndefined();
    const ahead = takeAhead(dataDir);
    if (!ahead) throw new Error("nothing was booted ahead");
    opened.push(ahead.client);
    expect(takeAhead(dataDir)).toBeUndefined();
    await ahead.client.ready;
    await ahead.client.close();
    ahead.unlock();

    // What openDatabase opens for that directory is the database booted ahead: taken, open, unlocked when closed.
    bootAhead(dataDir);
    const database = await openDatabase({ ...loadConfig({}), dataDir }, { migrate: "none" });
    expect(takeAhead(dataDir)).toBeUndefined();
    expect(readFileSync(join(dataDir, "orderly.lock"), "utf8")).toBe(String(process.pid));
    await database.ping();
    await database.close();
    expect(existsSync(join(dataDir, "orderly.lock"))).toBe(false);

    // Locked by another live process (this one's parent): the boot ahead is refused when taken.
    writeFileSync(join(dataDir, "orderly.lock"), String(process.ppid));
    bootAhead(dataDir);
    expect(() => takeAhead(dataDir)).toThrow(ConfigError);
    expect(readFileSync(join(dataDir, "orderly.lock"), "utf8")).toBe(String(process.ppid));
  });
});
