import { sql } from "drizzle-orm";
import { describe, expect, it } from "vitest";
import { type Database, rows } from "../src/db/client.ts";
import { openPostgres } from "../src/db/postgres.ts";
import { manualClock } from "../src/kit/clock.ts";
import { purgeExpired } from "../src/kit/retention.ts";
import { startJobs } from "../src/ops/jobs.ts";
import { testDatabases } from "./support/databases.ts";
import { createHarness } from "./support/harness.ts";

const HOUR = 3_600_000;

/** Five rows of each kind past a week's retention (closed dead letters: past 30 days), and the rows that must stay. */
async function seed(database: Database, now: Date) {
  const ago = (hours: number) => new Date(now.getTime() - hours * HOUR).toISOString();
  const q = (statement: ReturnType<typeof sql>) => database.db.execute(statement);
  for (let i = 0; i < 5; i++) {
    await q(sql`insert into outbox_messages (id, tenant_id, topic, payload, status, next_attempt_at, created_at, published_at)
                values (${`msg_old${i}`}, 't', 'order.placed', '{}', 'published', ${ago(201)}, ${ago(201)}, ${ago(200)})`);
    await q(sql`insert into inbox_messages (consumer, message_id, tenant_id, processed_at) values ('c', ${`msg_old${i}`}, 't', ${ago(200)})`);
    await q(sql`insert into saga_barriers (tenant_id, saga_id, step, op, created_at) values ('t', ${`saga_old${i}`}, 's', 'try', ${ago(200)})`);
    await q(sql`insert into sagas (id, tenant_id, type, status, context, steps, next_attempt_at, created_at, updated_at)
                values (${`saga_old${i}`}, 't', 'x', ${i % 2 ? "completed" : "compensated"}, '{}', '{}', ${ago(300)}, ${ago(300)}, ${ago(200)})`);
    // The dead outbox row a closed letter was about goes with the letter.
    await q(sql`insert into outbox_messages (id, tenant_id, topic, payload, status, next_attempt_at, created_at)
                values (${`msg_dlq${i}`}, 't', 'order.placed', '{}', 'dead', ${ago(40 * 24)}, ${ago(40 * 24)})`);
    await q(sql`insert into dead_letters (id, tenant_id, source, reference, reason, status, created_at, updated_at)
                values (${`dlq_old${i}`}, 't', 'outbox', ${`msg_dlq${i}`}, 'r', 'resolved', ${ago(40 * 24)}, ${ago(31 * 24)})`);
    await q(sql`insert into dead_letter_actions (dead_letter_id, action, actor, note, at) values (${`dlq_old${i}`}, 'resolve', 'ops', 'done', ${ago(31 * 24)})`);
  }
  // Kept: younger than the retention, or not finished, or an open dead letter however old.
  await q(sql`insert into outbox_messages (id, tenant_id, topic, payload, status, next_attempt_at, created_at, published_at) values
              ('msg_young', 't', 'order.placed', '{}', 'published', ${ago(11)}, ${ago(11)}, ${ago(10)}),
              ('msg_pending', 't', 'order.placed', '{}', 'pending', ${ago(300)}, ${ago(300)}, null),
              ('msg_dead', 't', 'order.placed', '{}', 'dead', ${ago(300)}, ${ago(300)}, null)`);
  await q(sql`insert into inbox_messages (consumer, message_id, tenant_id, processed_at) values ('c', 'msg_young', 't', ${ago(10)})`);
  await q(sql`insert into saga_barriers (tenant_id, saga_id, step, op, created_at) values ('t', 'saga_young', 's', 'try', ${ago(10)})`);
  await q(sql`insert into sagas (id, tenant_id, type, status, context, steps, next_attempt_at, created_at, updated_at) values
              ('saga_young', 't', 'x', 'completed', '{}', '{}', ${ago(10)}, ${ago(10)}, ${ago(10)}),
              ('saga_running', 't', 'x', 'running', '{}', '{}', ${ago(300)}, ${ago(300)}, ${ago(300)})`);
  await q(sql`insert into dead_letters (id, tenant_id, source, reference, reason, status, created_at, updated_at) values
              ('dlq_young', 't', 'outbox', 'msg', 'r', 'skipped', ${ago(40 * 24)}, ${ago(20 * 24)}),
              ('dlq_open', 't', 'consumer', 'msg', 'r', 'open', ${ago(400 * 24)}, ${ago(400 * 24)})`);
  await q(sql`insert into dead_letter_actions (dead_letter_id, action, actor, at) values ('dlq_young', 'skip', 'ops', ${ago(20 * 24)})`);
  // A message retried by an operator long ago that died again: its old letter goes, its row stays with the open one.
  await q(sql`insert into outbox_messages (id, tenant_id, topic, payload, status, next_attempt_at, created_at)
              values ('msg_died_twice', 't', 'order.placed', '{}', 'dead', ${ago(40 * 24)}, ${ago(40 * 24)})`);
  await q(sql`insert into dead_letters (id, tenant_id, source, reference, reason, status, created_at, updated_at) values
              ('dlq_retried', 't', 'outbox', 'msg_died_twice', 'r', 'retried', ${ago(40 * 24)}, ${ago(35 * 24)}),
              ('dlq_again', 't', 'outbox', 'msg_died_twice', 'r', 'open', ${ago(30 * 24)}, ${ago(30 * 24)})`);
}

async function left(database: Database) {
  const ids = async (statement: ReturnType<typeof sql>) => (await rows<{ id: string }>(database.db, statement)).map((r) => r.id).sort();
  return {
    outbox: await ids(sql`select id from outbox_messages`),
    inbox: await ids(sql`select message_id as id from inbox_messages`),
    barriers: await ids(sql`select saga_id as id from saga_barriers`),
    sagas: await ids(sql`select id from sagas`),
    deadLetters: await ids(sql`select id from dead_letters`),
    actions: await ids(sql`select dead_letter_id as id from dead_letter_actions`),
  };
}

const KEPT = {
  outbox: ["msg_dead", "msg_died_twice", "msg_pending", "msg_young"],
  inbox: ["msg_young"],
  barriers: ["saga_young"],
  sagas: ["saga_running", "saga_young"],
  deadLetters: ["dlq_again", "dlq_open", "dlq_young"],
  actions: ["dlq_young"],
};

describe.each(testDatabases())("retention on $name", ({ name, open }) => {
  it("purges rows past their retention in bounded batches, keeping younger rows, unfinished work and open dead letters", async () => {
    const database = await open();
    try {
      const clock = manualClock(new Date("2026-06-01T00:00:00Z"));
      await seed(database, clock.now());
      const week = { retentionMs: 168 * HOUR };

      // One statement per kind, two rows each: every kind loses exactly two of its five old rows.
      expect(await purgeExpired(database.db, clock.now(), { ...week, batch: 2, maxBatches: 1 })).toEqual({ outbox: 2, inbox: 2, barriers: 2, sagas: 2, deadLetters: 2 });
      const partly = await left(database);
      expect(partly.outbox).toHaveLength(KEPT.outbox.length + 3 + 3); // published rows, and the dead rows of letters still there
      expect(partly.actions).toHaveLength(KEPT.actions.length + 3); // the audit goes with its letter

      expect(await purgeExpired(database.db, clock.now(), { ...week, batch: 2 })).toEqual({ outbox: 3, inbox: 3, barriers: 3, sagas: 3, deadLetters: 4 });
      expect(await left(database)).toEqual(KEPT);

      // A day later the young rows are still within a week; a month later they are not (the open letter stays).
      clock.advance(24 * HOUR);
      expect(await purgeExpired(database.db, clock.now(), week)).toEqual({ outbox: 0, inbox: 0, barriers: 0, sagas: 0, deadLetters: 0 });
      clock.advance(30 * 24 * HOUR);
      await purgeExpired(database.db, clock.now(), week);
      expect(await left(database)).toEqual({
        ...KEPT,
        outbox: ["msg_dead", "msg_died_twice", "msg_pending"],
        inbox: [],
        barriers: [],
        sagas: ["saga_running"],
        deadLetters: ["dlq_again", "dlq_open"],
        actions: [],
      });
    } finally {
      await database.close();
    }
  });

  it.runIf(name === "postgres")("shares the work between replicas purging at the same time", async () => {
    const database = (await open()) as Database & { url: string };
    const replicas = [openPostgres(database.url), openPostgres(database.url), openPostgres(database.url)];
    try {
      const now = new Date("2026-06-01T00:00:00Z");
      await seed(database, now);
      const runs = await Promise.all(replicas.map((replica) => purgeExpired(replica.db, now, { retentionMs: 168 * HOUR, batch: 1 })));
      const total = (kind: keyof (typeof runs)[number]) => runs.reduce((sum, run) => sum + run[kind], 0);
      expect([total("outbox"), total("inbox"), total("barriers"), total("sagas"), total("deadLetters")]).toEqual([5, 5, 5, 5, 6]);
      expect(await left(database)).toEqual(KEPT);
    } finally {
      for (const replica of replicas) await replica.close();
      await database.close();
    }
  });

  it("runs as a background job with ORDERLY_RETENTION_HOURS on the services' clock", async () => {
    const database = await open();
    const clock = manualClock(new Date("2026-06-01T00:00:00Z"));
    const harness = await createHarness(database, { clock, env: { ORDERLY_RETENTION_HOURS: "250" } });
    let stop = async () => {};
    try {
      await seed(database, clock.now()); // all of it before the job's first run: a letter and its audit row are one unit
      stop = startJobs(harness.services, { retentionPurgeMs: 50 });
      await new Promise((r) => setTimeout(r, 500));
      // 250 h: the rows 200 h old are still within it; closed dead letters follow their own 30 days.
      expect((await left(database)).inbox).toHaveLength(6);
      expect((await left(database)).deadLetters).toEqual(KEPT.deadLetters);
      clock.advance(51 * HOUR);
      // One run purges the tables one after the other: wait for all of them, not for the inbox alone.
      await expect.poll(() => left(database), { timeout: 5_000, interval: 50 }).toEqual(KEPT);
    } finally {
      await stop();
      await harness.close();
    }
  });
});
