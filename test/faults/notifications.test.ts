import { randomBytes } from "node:crypto";
import { sql } from "drizzle-orm";
import { describe, expect, it } from "vitest";
import { openPostgres } from "../../src/db/postgres.ts";
import { isDatabaseUnavailable } from "../../src/db/errors.ts";
import { openTestPostgres, postgresUrl } from "../support/databases.ts";
import { withPostgresStopped } from "../support/faults.ts";

const OUTAGE_MS = 3_000; // longer than the one retry, 1 s after the loss, that LISTEN used to get
const PROMPTLY_MS = 300; // well under the relay's 1 s poll

async function waitFor(check: () => boolean, what: string, ms: number) {
  const until = Date.now() + ms;
  while (!check()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe.runIf(postgresUrl())("notifications after a real PostgreSQL restart", () => {
  it("listens again after PostgreSQL was stopped for 3 s and delivers the next NOTIFY at once, reporting down then live", async () => {
    const direct = await openTestPostgres();
    const changes: boolean[] = [];
    const database = openPostgres(direct.url, { onNotificationsChange: (live) => changes.push(live) });
    try {
      const channel = `test_${randomBytes(4).toString("hex")}`;
      const received: string[] = [];
      await database.listen(channel, (payload) => received.push(payload));
      expect(database.notifications()).toBe("live");
      received.length = 0;

      await withPostgresStopped(OUTAGE_MS, async () => {
        await waitFor(() => database.notifications() === "down", "the loss to be seen", 5_000);
      });
      // Accepting connections again; backoff is capped at 5 s (+20 % jitter).
      await waitFor(() => database.notifications() === "live", "LISTEN to be re-established", 8_000);
      expect(received).toEqual([""]); // the reconnection wakes the listener: work committed meanwhile is picked up

      let sent = Date.now();
      for (let attempt = 1; ; attempt++) {
        sent = Date.now();
        try {
          await direct.db.execute(sql`select pg_notify(${channel}, 'after the restart')`);
          break;
        } catch (error) {
          // The direct pool may still hand out a connection from before the restart.
          if (!isDatabaseUnavailable(error) || attempt === 5) throw error;
        }
      }
      await waitFor(() => received.includes("after the restart"), "the NOTIFY", 2_000);
      expect(Date.now() - sent).toBeLessThan(PROMPTLY_MS);
      expect(changes).toEqual([false, true]);
    } finally {
      await database.close();
      await direct.close();
    }
  });
});
