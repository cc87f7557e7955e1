import { randomBytes } from "node:crypto";
import { type SQL, sql } from "drizzle-orm";
import { PgDialect } from "drizzle-orm/pg-core";
import { pino } from "pino";
import { Connection } from "rabbitmq-client";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { type Database, literal, rows, transaction } from "../src/db/client.ts";
import { openPostgres } from "../src/db/postgres.ts";
import { type Bus, type BusMessage, createInProcessBus, MessageRejected, topicMatches } from "../src/kit/bus.ts";
import { systemClock } from "../src/kit/clock.ts";
import { createDeadLetters, type DeadLetters } from "../src/kit/dead-letters.ts";
import { newId } from "../src/kit/ids.ts";
import { inboxHandler, topicRouter } from "../src/kit/inbox.ts";
import { createOutbox } from "../src/kit/outbox.ts";
import { createRabbitBus } from "../src/kit/rabbit-bus.ts";
import { claimDue, createRelay, markPublished, type Relay } from "../src/kit/relay.ts";
import { openTestPglite, openTestPostgres, postgresUrl } from "./support/databases.ts";

/** RabbitMQ of AMQP_URL; under CI=true a missing one fails instead of skipping. */
function amqpUrl(): string | undefined {
  const url = process.env.AMQP_URL;
  if (!url && process.env.CI === "true") throw new Error("AMQP_URL is not set: the RabbitMQ suites cannot run in CI");
  return url;
}

const log = pino({ level: "silent" });
const DELAYS = [50, 100];

async function waitFor(check: () => Promise<boolean>, what: string, ms = 10_000) {
  const until = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe("topic patterns", () => {
  it("match as AMQP topics do", () => {
    expect(topicMatches("order.*", "order.placed")).toBe(true);
    expect(topicMatches("order.*", "order.placed.late")).toBe(false);
    expect(topicMatches("order.#", "order.placed.late")).toBe(true);
    expect(topicMatches("order.#", "order")).toBe(true);
    expect(topicMatches("#.placed", "x.y.placed")).toBe(true);
    expect(topicMatches("order.placed", "order.cancelled")).toBe(false);
  });
});

const buses = [{ name: "in-process" }, ...(amqpUrl() ? [{ name: "RabbitMQ" }] : [])];

describe.each(buses)("outbox, relay and inbox over the $name bus", ({ name }) => {
  let database: Database;
  let bus: Bus & { purge?: () => Promise<void>; connection?: { onConnect(ms: number): Promise<void> } };
  let relay: Relay;
  let deadLetters: DeadLetters;
  const outbox = createOutbox({ clock: systemClock, newId });

  beforeEach(async () => {
    database = await openTestPglite();
    deadLetters = createDeadLetters({ clock: systemClock, newId });
    bus =
      name === "in-process"
        ? createInProcessBus()
        : createRabbitBus({
            url: amqpUrl() as string,
            log,
            retryDelaysMs: DELAYS,
            prefix: `orderly-test-${randomBytes(4).toString("hex")}`,
            topology: [],
            onDeadLetter: async (message, consumer, reason) => {
              await deadLetters.recordConsumerFailure(database.db, { message, consumer, reason });
            },
          });
    await bus.connection?.onConnect(5_000);
    relay = createRelay({ database, bus, clock: systemClock, log, deadLetters, retryDelaysMs: DELAYS, pollMs: 100 });
  });
  afterEach(async () => {
    await relay.stop();
    await bus.purge?.();
    await bus.close();
    await database.close();
  });

  const handled = async (consumer: string) =>
    (await rows<{ message_id: string }>(database.db, sql`select message_id from inbox_messages where consumer = ${consumer} order by message_id`)).map((r) => r.message_id);
  const send = (topic: string, payload: unknown = {}, tenantId = "t1") => database.tenant(tenantId, (tx) => outbox.enqueue(tx, { tenantId, topic, payload }));

  it("delivers committed messages to the subscribers whose topics match, never a rolled-back one", async () => {
    for (const [consumer, topics] of [["all-orders", ["order.*"]], ["placed-only", ["order.placed"]], ["inventory", ["inventory.#"]]] as const) {
      await bus.subscribe({ consumer, topics: [...topics], handler: inboxHandler(database, consumer, async () => {}) });
    }
    await relay.start();
    const placed = await send("order.placed", { n: 1 });
    const cancelled = await send("order.cancelled");
    await database.tenant("t1", async (tx) => {
      await outbox.enqueue(tx, { tenantId: "t1", topic: "order.placed", payload: { rolledBack: true } });
      tx.rollback();
    }).catch(() => {});
    await waitFor(async () => (await handled("all-orders")).length === 2 && (await handled("placed-only")).length === 1, "deliveries");
    expect(await handled("all-orders")).toEqual([placed, cancelled].sort());
    expect(await handled("placed-only")).toEqual([placed]);
    expect(await handled("inventory")).toEqual([]);
    // The relay marks rows once the broker confirmed them, which may come after a consumer handled them.
    const unsent = async () => (await rows<{ n: number }>(database.db, sql`select count(*)::int as n from outbox_messages where status <> 'published'`))[0]?.n;
    await waitFor(async () => (await unsent()) === 0, "every outbox row marked published");
  });

  it("has one effect per message and consumer however often it is delivered", async () => {
    const payloads: unknown[] = [];
    await bus.subscribe({ consumer: "counter", topics: ["#"], handler: inboxHandler(database, "counter", async (_tx, m) => void payloads.push(m.payload)) });
    const id = await send("order.placed", { k: 1 });
    const message: BusMessage = { id, tenantId: "t1", topic: "order.placed", payload: { k: 1 } };
    await bus.publish(message);
    await bus.publish(message);
    await relay.start();
    await waitFor(async () => (await rows(database.db, sql`select 1 from outbox_messages where status = 'published'`)).length === 1, "relay");
    await new Promise((r) => setTimeout(r, 200));
    expect(await handled("counter")).toEqual([id]);
    expect(payloads).toHaveLength(1);
  });

  it("retries a failing handler with backoff until it succeeds, with one effect", async () => {
    let calls = 0;
    const effects: unknown[] = [];
    await bus.subscribe({
      consumer: "flaky",
      topics: ["order.*"],
      handler: inboxHandler(database, "flaky", async (_tx, m) => {
        calls++;
        if (calls <= 2) throw new Error(`transient failure ${calls}`);
        effects.push(m.id);
      }),
    });
    await relay.start();
    const id = await send("order.placed");
    await waitFor(async () => (await handled("flaky")).length === 1, "the third attempt");
    expect(calls).toBe(3);
    expect(effects).toEqual([id]);
  });

  it("dead-letters a message that keeps failing, and an operator's retry delivers it, audited", async () => {
    let healthy = false;
    await bus.subscribe({
      consumer: "broken",
      topics: ["order.*"],
      handler: inboxHandler(database, "broken", async () => {
        if (!healthy) throw new Error("the warehouse system is down");
      }),
    });
    await relay.start();
    const id = await send("order.placed");
    await waitFor(async () => (await deadLetters.list(database.db, { status: "open" })).length === 1, "a dead letter");
    const [letter] = await deadLetters.list(database.db, { status: "open" });
    expect(letter).toMatchObject({ reference: id, tenantId: "t1" });
    expect(letter?.reason).toContain("the warehouse system is down");
    healthy = true;
    expect(await deadLetters.retry(database.db, letter?.id as string, "ops-1")).toMatchObject({ ok: true, value: { status: "retried" } });
    await waitFor(async () => (await handled("broken")).length === 1, "the retried delivery");
    expect(await handled("broken")).toEqual([id]);
    expect(await deadLetters.retry(database.db, letter?.id as string, "ops-1")).toEqual({
      ok: false,
      reason: "NOT_OPEN",
      detail: `dead letter ${letter?.id} is already retried`,
    });
    expect((await deadLetters.actions(database.db, letter?.id as string)).map((a) => [a.action, a.actor])).toEqual([["retry", "ops-1"]]);
  });

  it("delivers a re-drive to its one consumer only, under the original message id", async () => {
    const payloads: unknown[] = [];
    await bus.subscribe({ consumer: "failed-before", topics: ["order.*"], handler: inboxHandler(database, "failed-before", async (_tx, m) => void payloads.push(m.payload)) });
    await bus.subscribe({ consumer: "bystander", topics: ["order.*"], handler: inboxHandler(database, "bystander", async () => {}) });
    await relay.start();
    const redrive = await database.tenant("t1", (tx) =>
      outbox.enqueue(tx, { tenantId: "t1", topic: "order.placed", payload: { again: true }, consumer: "failed-before", redriveOf: "msg_original" }),
    );
    await waitFor(async () => (await handled("failed-before")).length === 1, "the re-drive");
    expect(await handled("failed-before")).toEqual(["msg_original"]);
    expect(payloads).toEqual([{ again: true }]);
    await waitFor(async () => (await rows(database.db, sql`select 1 from outbox_messages where id = ${redrive} and status = 'published'`)).length === 1, "the row marked published");
    await new Promise((r) => setTimeout(r, 200));
    expect(await handled("bystander")).toEqual([]);
  });

  it("refuses a message no consumer would take, and the relay dead-letters it past its budget", async () => {
    const ghost: BusMessage = { id: "msg_ghost", tenantId: "t1", topic: "order.placed", payload: {}, consumer: "ghost" };
    await expect(bus.publish(ghost)).rejects.toBeInstanceOf(MessageRejected);
    if (name === "RabbitMQ") {
      // mandatory: a topic no queue is bound to comes back instead of vanishing
      await expect(bus.publish({ id: "msg_nobody", tenantId: "t1", topic: "nobody.listens", payload: {} })).rejects.toBeInstanceOf(MessageRejected);
    }
    await relay.start();
    const id = await database.tenant("t1", (tx) => outbox.enqueue(tx, { tenantId: "t1", topic: "order.placed", payload: {}, consumer: "ghost", redriveOf: "msg_x" }));
    await waitFor(async () => (await deadLetters.list(database.db, { status: "open" })).length === 1, "the outbox dead letter");
    expect((await deadLetters.list(database.db))[0]).toMatchObject({ source: "outbox", reference: id, topic: "order.placed" });
    const [row] = await rows<{ status: string; attempts: number }>(database.db, sql`select status, attempts from outbox_messages where id = ${id}`);
    expect(row).toEqual({ status: "dead", attempts: DELAYS.length + 1 });
  });

  it.runIf(name === "RabbitMQ")("keeps a message for a consumer no process runs yet: the topology it was given is declared", async () => {
    const prefix = `orderly-test-${randomBytes(4).toString("hex")}`;
    const topology = [{ consumer: "late", topics: ["order.*"] }];
    const rabbit = (extra: Partial<Parameters<typeof createRabbitBus>[0]> = {}) =>
      createRabbitBus({ url: amqpUrl() as string, log, retryDelaysMs: DELAYS, prefix, topology, onDeadLetter: async () => {}, ...extra });
    const producer = rabbit();
    let consumer: ReturnType<typeof rabbit> | undefined;
    try {
      await producer.connection.onConnect(5_000);
      await waitFor(async () => (await producer.publish({ id: "msg_early", tenantId: "t1", topic: "order.placed", payload: { early: true } }).then(() => true)), "the first publish");
      consumer = rabbit({ topology: [] });
      const received: BusMessage[] = [];
      await consumer.subscribe({ consumer: "late", topics: ["order.*"], handler: async (m) => void received.push(m) });
      await waitFor(async () => received.length === 1, "the early message");
      expect(received[0]).toMatchObject({ id: "msg_early", topic: "order.placed", payload: { early: true } });
    } finally {
      await producer.purge();
      await consumer?.close();
      await producer.close();
    }
  });

  it.runIf(name === "RabbitMQ")("treats a topology it could not declare as an outage: the message waits, then goes once it is declared", async () => {
    const prefix = `orderly-test-${randomBytes(4).toString("hex")}`;
    // A queue of that name with other arguments (left by another version, say) makes the declaration fail.
    const raw = new Connection(amqpUrl() as string);
    const ch = await raw.acquire();
    await ch.queueDeclare({ queue: `${prefix}.late`, durable: true, arguments: { "x-max-length": 1000 } });
    const bus = createRabbitBus({ url: amqpUrl() as string, log, retryDelaysMs: DELAYS, prefix, topology: [{ consumer: "late", topics: ["order.*"] }], onDeadLetter: async () => {} });
    try {
      await bus.connection.onConnect(5_000);
      const message = { id: "msg_waits", tenantId: "t1", topic: "order.placed", payload: {} };
      const failed = await bus.publish(message).then(() => undefined, (error: unknown) => error);
      // Not a rejection (which the relay dead-letters past its retries): an outage, which it retries for as long as it lasts.
      expect(failed).toBeInstanceOf(Error);
      expect(failed).not.toBeInstanceOf(MessageRejected);
      await ch.queueDelete({ queue: `${prefix}.late` });
      await bus.publish(message); // declared now, and routed to the consumer's queue
      const received: BusMessage[] = [];
      await bus.subscribe({ consumer: "late", topics: ["order.*"], handler: async (m) => void received.push(m) });
      await waitFor(async () => received.length === 1, "the message");
    } finally {
      await bus.purge();
      await bus.close();
      await ch.close();
      await raw.close();
    }
  });
});

describe.runIf(postgresUrl())("two relays on PostgreSQL", () => {
  // Generous bounds: on a loaded CI machine this once ran out of the default 60 s (it takes about 1 s alone).
  it("publish each outbox row once between them, woken at once by the commits of their process", { timeout: 120_000 }, async () => {
    const first = await openTestPostgres();
    const second = openPostgres(first.url);
    const published = new Map<string, number>();
    const counting: Bus = {
      async publish(m) {
        published.set(m.id, (published.get(m.id) ?? 0) + 1);
      },
      async subscribe() {},
      async ping() {},
      async close() {},
    };
    const deadLetters = createDeadLetters({ clock: systemClock, newId });
    const relays = [first, second].map((database) => createRelay({ database, bus: counting, clock: systemClock, log, deadLetters, batch: 7, pollMs: 60_000 }));
    try {
      await Promise.all(relays.map((r) => r.start()));
      const outbox = createOutbox({ clock: systemClock, newId });
      for (let i = 0; i < 20; i++) {
        await first.tenant("t1", async (tx) => {
          for (let j = 0; j < 10; j++) await outbox.enqueue(tx, { tenantId: "t1", topic: "order.placed", payload: { i, j } });
        });
      }
      // The relays poll only once a minute here: everything they send within the wait came through the commit signal.
      await waitFor(async () => published.size === 200, "200 published messages", 30_000);
      expect([...published.values()].every((n) => n === 1)).toBe(true);
    } finally {
      await Promise.all(relays.map((r) => r.stop()));
      await second.close();
      await first.close();
    }
  });
});

describe.runIf(postgresUrl())("a consumer's serial lanes on PostgreSQL", () => {
  it("applies messages with the same key one transaction after another, and others beside them", async () => {
    const database = await openTestPostgres({ max: 6 });
    try {
      const open = new Map<string, number>();
      let together = 0;
      let sameKeyTogether = 0;
      const router = topicRouter(database, "orders", [
        {
          topic: "saga.reply",
          serialKey: (message) => (message.payload as { sagaId: string }).sagaId,
          async effect(tx, message) {
            const key = (message.payload as { sagaId: string }).sagaId;
            open.set(key, (open.get(key) ?? 0) + 1);
            sameKeyTogether = Math.max(sameKeyTogether, open.get(key) ?? 0);
            together = Math.max(together, [...open.values()].reduce((a, b) => a + b, 0));
            await tx.execute(sql`select pg_sleep(0.05)`);
            open.set(key, (open.get(key) ?? 0) - 1);
          },
        },
      ]);
      const message = (sagaId: string): BusMessage => ({ id: newId("msg"), tenantId: "t1", topic: "saga.reply", payload: { sagaId } });
      await Promise.all([message("s1"), message("s1"), message("s1"), message("s2"), message("s2")].map((m) => router(m)));
      expect(sameKeyTogether).toBe(1);
      expect(together).toBe(2);
      expect((await rows<{ n: number }>(database.db, sql`select count(*)::int as n from inbox_messages`))[0]?.n).toBe(5);
    } finally {
      await database.close();
    }
  });
});

describe.runIf(postgresUrl())("the relay's claim on PostgreSQL", () => {
  it("finds the few pending rows among many published ones without reading the published ones, and its table is vacuumed after 1,000 dead rows", async () => {
    const database = await openTestPostgres();
    try {
      const [options] = await rows<{ reloptions: string[] }>(database.db, sql`select reloptions from pg_class where relname = 'outbox_messages'`);
      expect(options?.reloptions).toEqual(expect.arrayContaining(["autovacuum_vacuum_scale_factor=0", "autovacuum_vacuum_threshold=1000"]));
      // As under load: 20,000 messages written pending and since published, whose entries autovacuum has not yet taken out of outbox_due.
      await database.db.execute(sql`alter table outbox_messages set (autovacuum_enabled = false)`);
      await database.db.execute(sql`
        insert into outbox_messages (id, tenant_id, topic, payload, status, next_attempt_at, created_at)
        select 'msg_' || g, 't1', 'order.placed', '{}'::jsonb, 'pending', now() - interval '1 hour' + g * interval '1 ms', now() - interval '1 hour' + g * interval '1 ms'
        from generate_series(1, 20030) g`);
      await database.db.execute(sql`update outbox_messages set status = 'published', published_at = now() where id not in (select 'msg_' || g from generate_series(20001, 20030) g)`);
      // The statistics know the pending rows are few: the planner would then rather scan a bitmap of every entry, and sort.
      await database.db.execute(sql`analyze outbox_messages`);
      const published: string[] = [];
      const bus: Bus = { publish: async (m) => void published.push(m.id), subscribe: async () => {}, ping: async () => {}, async close() {} };
      const relay = createRelay({ database, bus, clock: systemClock, log, deadLetters: createDeadLetters({ clock: systemClock, newId }), batch: 100 });
      // The first pass reads the published rows' entries once, and marks them dead.
      expect(await relay.relayOnce()).toBe(30);
      await database.db.execute(sql`update outbox_messages set status = 'pending', published_at = null where id in (select 'msg_' || g from generate_series(20001, 20030) g)`);
      // The next claim, as the relay makes it, reads the index and the pending rows' pages (about 310 pages here). The
      // planner left to itself read every entry's page: 700-1,100 (a bitmap scan, or by created_at a sequential one).
      const explained = await explainClaim(database);
      expect(explained.claimed).toBe(30);
      expect(explained.sharedBlocks).toBeLessThan(450);
    } finally {
      await database.close();
    }
  });
});

describe.runIf(postgresUrl())("the relay's published mark on PostgreSQL", () => {
  it("finds the rows it marks by their primary key, whatever the table's size, also in a prepared statement's generic plan", async () => {
    const database = await openTestPostgres();
    try {
      const ids = Array.from({ length: 30 }, (_, i) => `msg_${i + 1}`);
      // `id in (select jsonb_array_elements_text(…))`, whose rows the planner guesses at 100, was joined against a
      // sequential scan of every row once the table held some thousands (3.7 ms a call in the split bench: 10,000
      // catalogue messages and the orders'), and probed the index again above some 15,000; 40,000 shows the new
      // form keeps to the index as the table grows.
      for (const size of [10_000, 40_000]) {
        await database.db.execute(sql`
          insert into outbox_messages (id, tenant_id, topic, payload, status, next_attempt_at, created_at, published_at)
          select 'msg_' || g, 't1', 'product.changed', jsonb_build_object('sku', 'SKU-' || g, 'name', repeat('x', 200)), 'published', now(), now(), now()
          from generate_series(1, ${size}) g
          on conflict (id) do nothing`);
        await database.db.execute(sql`analyze outbox_messages`);
        for (const plan of ["custom", "generic"] as const) {
          const marked = (await explainRolledBack(database, markPublished(ids, new Date()), plan)).map((node) => node["Node Type"]);
          expect({ size, plan, marked }).toEqual({ size, plan, marked: expect.not.arrayContaining(["Seq Scan"]) });
          expect({ size, plan, marked }).toEqual({ size, plan, marked: expect.arrayContaining([expect.stringMatching(/Index Scan$/)]) });
        }
      }
    } finally {
      await database.close();
    }
  });
});

interface PlanNode {
  "Node Type": string;
  "Actual Rows": number;
  "Shared Hit Blocks": number;
  "Shared Read Blocks": number;
  Plans?: PlanNode[];
}

/** Runs the relay's claim under EXPLAIN ANALYZE and rolls it back: the rows it claimed and the pages it touched. */
async function explainClaim(database: Database): Promise<{ claimed: number; sharedBlocks: number }> {
  const [plan] = await explainRolledBack(database, claimDue(new Date(), 10_000, 100));
  if (!plan) throw new Error("no plan");
  return { claimed: plan["Actual Rows"], sharedBlocks: plan["Shared Hit Blocks"] + plan["Shared Read Blocks"] };
}

/**
 * Runs a statement under EXPLAIN ANALYZE and rolls it back: every node of its plan, the top first. `generic`: the
 * plan a prepared statement comes to, planned without its values (PREPARE, then EXPLAIN EXECUTE under
 * force_generic_plan); an EXPLAIN with parameters plans with their values.
 */
async function explainRolledBack(database: Database, statement: SQL, plan: "custom" | "generic" = "custom"): Promise<PlanNode[]> {
  const rolledBack = new Error("rolled back");
  let top: PlanNode | undefined;
  await transaction(database.db, async (tx) => {
    let explained = sql`explain (analyze, buffers, format json) ${statement}`;
    if (plan === "generic") {
      const query = new PgDialect().sqlToQuery(statement);
      await tx.execute(sql`select set_config('plan_cache_mode', 'force_generic_plan', true)`);
      await tx.execute(sql.raw(`prepare explained as ${query.sql}`));
      explained = sql.raw(`explain (analyze, buffers, format json) execute explained(${query.params.map((p) => literal(String(p))).join(", ")})`);
    }
    const [row] = await rows<{ "QUERY PLAN": { Plan: PlanNode }[] }>(tx, explained);
    if (plan === "generic") await tx.execute(sql`deallocate explained`); // a prepared statement outlives its transaction
    top = row?.["QUERY PLAN"][0]?.Plan;
    throw rolledBack;
  }).catch((error: unknown) => {
    if (error !== rolledBack) throw error;
  });
  if (!top) throw new Error("no plan");
  const nodes = (node: PlanNode): PlanNode[] => [node, ...(node.Plans ?? []).flatMap(nodes)];
  return nodes(top);
}
