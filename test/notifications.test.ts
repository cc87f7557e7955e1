import { randomBytes } from "node:crypto";
import { sql } from "drizzle-orm";
import { afterEach, describe, expect, it } from "vitest";
import { type Database, rows } from "../src/db/client.ts";
import { openPostgres } from "../src/db/postgres.ts";
import { openTestPostgres, postgresUrl } from "./support/databases.ts";
import { type CuttableProxy, cuttableProxy } from "./support/faults.ts";
import { createHarness } from "./support/harness.ts";

// LISTEN after an outage, seen through a proxy this file cuts: only its own connections lose the
// server, so it runs beside the other suites. test/faults/notifications.test.ts stops the real one.

const OUTAGE_MS = 3_000; // longer than the one retry, 1 s after the loss, that LISTEN used to get
const PROMPTLY_MS = 300; // well under the relay's 1 s poll

async function waitFor(check: () => boolean | Promise<boolean>, what: string, ms: number) {
  const until = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe.runIf(postgresUrl())("notifications after a PostgreSQL outage (proxy)", () => {
  const closers: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const close of closers.splice(0).reverse()) await close();
  });

  /** A fresh test database, and a second handle on it whose every connection goes through a cuttable proxy. */
  async function proxied(options: Parameters<typeof openPostgres>[1] = {}): Promise<{ direct: Database; database: Database; proxy: CuttableProxy }> {
    const direct = await openTestPostgres();
    closers.push(() => direct.close());
    const proxy = await cuttableProxy(Number(new URL(direct.url).port || 5432));
    closers.push(() => proxy.close());
    const database = openPostgres(proxy.url(direct.url), options);
    return { direct, database, proxy };
  }

  it("listens again after an outage of 3 s and delivers the next NOTIFY at once, reporting down then live", async () => {
    const changes: boolean[] = [];
    const { direct, database, proxy } = await proxied({ onNotificationsChange: (live) => changes.push(live) });
    closers.push(() => database.close());
    const channel = `test_${randomBytes(4).toString("hex")}`;
    const received: string[] = [];
    await database.listen(channel, (payload) => received.push(payload));
    expect(database.notifications()).toBe("live");

    proxy.cut();
    await waitFor(() => database.notifications() === "down", "the loss to be seen", 2_000);
    await sleep(OUTAGE_MS);
    expect(database.notifications()).toBe("down");
    proxy.restore();

    // Backoff is capped at 5 s (+20 % jitter), so the next attempt comes within 6 s of the restore.
    await waitFor(() => database.notifications() === "live", "LISTEN to be re-established", 8_000);
    expect(received).toContain(""); // the reconnection itself wakes the listener: work committed meanwhile is picked up
    const sent = Date.now();
    await direct.db.execute(sql`select pg_notify(${channel}, 'after the outage')`);
    await waitFor(() => received.includes("after the outage"), "the NOTIFY", 2_000);
    expect(Date.now() - sent).toBeLessThan(PROMPTLY_MS);
    expect(changes).toEqual([false, true]);
  });

  it("answers /readyz with 503 naming notifications while the listener is down, and 200 once it is back", async () => {
    const { database, proxy } = await proxied();
    // The saga strategy: its relay and settlement waiter listen (the local strategy's relay does too).
    const h = await createHarness(database, { strategy: "saga" });
    closers.push(() => h.close());
    const ready = await h.call("GET", "/readyz");
    expect(ready.status).toBe(200);
    expect(ready.body.checks).toMatchObject({ database: "ok", notifications: "ok" });

    proxy.cut();
    await waitFor(() => database.notifications() === "down", "the loss to be seen", 2_000);
    const during = await h.call("GET", "/readyz");
    expect(during.status).toBe(503);
    expect(during.headers["content-type"]).toMatch(/^application\/problem\+json/);
    expect(during.body).toMatchObject({ status: 503, code: "SERVICE_UNAVAILABLE" });
    expect(during.body.detail).toMatch(/notifications/);
    await sleep(OUTAGE_MS);
    expect((await h.call("GET", "/readyz")).status).toBe(503);
    proxy.restore();

    await waitFor(async () => (await h.call("GET", "/readyz")).status === 200, "/readyz to be ready again", 8_000);
    expect((await h.call("GET", "/readyz")).body.checks).toMatchObject({ database: "ok", notifications: "ok" });
  });

  it("serves the relay and the settlement waiter from one LISTEN connection", async () => {
    const { direct, database } = await proxied();
    const h = await createHarness(database, { strategy: "saga" });
    closers.push(() => h.close());
    const listening = await rows<{ n: number }>(
      direct.db,
      sql`select count(*)::int as n from pg_stat_activity where datname = current_database() and application_name = 'orderly-listen'`,
    );
    expect(listening[0]?.n).toBe(1);
  });

  it("stops retrying and opens nothing more once the database is closed during an outage", async () => {
    const { database, proxy } = await proxied();
    let closed = false;
    closers.push(async () => {
      if (!closed) await database.close();
    });
    await database.listen(`test_${randomBytes(4).toString("hex")}`, () => {});
    proxy.cut();
    await waitFor(() => database.notifications() === "down", "the loss to be seen", 2_000);
    const lost = proxy.opened;
    await waitFor(() => proxy.opened > lost, "a reconnection attempt", 2_000);

    await database.close();
    closed = true;
    expect(database.notifications()).toBe("off");
    const attempts = proxy.opened;
    proxy.restore(); // a retry left behind would now connect, and stay connected
    await sleep(2_000); // longer than any backoff step reached by now (at most 400 ms + 20 %)
    expect(proxy.opened).toBe(attempts);
  });
});
