import { randomBytes } from "node:crypto";
import { sql } from "drizzle-orm";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { type Database, rows } from "../src/db/client.ts";
import { openPostgres } from "../src/db/postgres.ts";
import { type Bus, type BusHandler, createInProcessBus } from "../src/kit/bus.ts";
import { systemClock } from "../src/kit/clock.ts";
import { createDeadLetters } from "../src/kit/dead-letters.ts";
import { newId } from "../src/kit/ids.ts";
import { inboxHandler } from "../src/kit/inbox.ts";
import { createOutbox } from "../src/kit/outbox.ts";
import { createRabbitBus } from "../src/kit/rabbit-bus.ts";
import { createRelay, type Relay } from "../src/kit/relay.ts";
import { openTestPglite, openTestPostgres, postgresUrl } from "./support/databases.ts";
import { type CuttableProxy, cuttableProxy } from "./support/faults.ts";

// Outages seen by this test's own clients only (a cuttable TCP proxy in front of RabbitMQ or
// PostgreSQL), so these run beside other tests. Retry delays are short: the whole retry budget is
// 350 ms, and every outage here lasts several times that.

function amqpUrl(): string | undefined {
  const url = process.env.AMQP_URL;
  if (!url && process.env.CI === "true") throw new Error("AMQP_URL is not set: the RabbitMQ suites cannot run in CI");
  return url;
}

const log = pino({ level: "silent" });
const DELAYS = [50, 100, 200];
const outbox = createOutbox({ clock: systemClock, newId });
const deadLetters = createDeadLetters({ clock: systemClock, newId });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor(check: () => Promise<boolean>, what: string, ms = 15_000) {
  const until = Date.now() + ms;
  while (!(await check().catch(() => false))) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

const count = async (database: Database, statement: ReturnType<typeof sql>) => (await rows<{ n: number }>(database.db, statement))[0]?.n ?? 0;
const inbox = (database: Database, consumer: string) => count(database, sql`select count(*)::int as n from inbox_messages where consumer = ${consumer}`);
const published = (database: Database) => count(database, sql`select count(*)::int as n from outbox_messages where status = 'published'`);
const deadOutbox = (database: Database) => count(database, sql`select count(*)::int as n from outbox_messages where status = 'dead'`);
const letters = (database: Database) => count(database, sql`select count(*)::int as n from dead_letters`);
const send = (database: Database, n: number, topic = "order.placed") =>
  Promise.all(Array.from({ length: n }, (_, i) => database.tenant("t1", (tx) => outbox.enqueue(tx, { tenantId: "t1", topic, payload: { i } }))));

/** Everything a test opened, closed in reverse whatever happened. */
const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
});

type RabbitOptions = { url?: string; prefix: string; onDeadLetter?: Parameters<typeof createRabbitBus>[0]["onDeadLetter"] };
const openRabbit = (options: RabbitOptions) =>
  createRabbitBus({
    url: options.url ?? (amqpUrl() as string),
    log,
    retryDelaysMs: DELAYS,
    prefix: options.prefix,
    topology: [],
    onDeadLetter: options.onDeadLetter ?? (async () => {}),
  });

/** A RabbitMQ bus closed after the test, whose queues (by prefix) are deleted then too. */
function rabbitBus(options: RabbitOptions) {
  const bus = openRabbit(options);
  cleanups.push(async () => {
    await bus.purge();
    await bus.close();
  });
  return bus;
}

async function proxyTo(port: number): Promise<CuttableProxy> {
  const proxy = await cuttableProxy(port);
  cleanups.push(() => proxy.close());
  return proxy;
}

function startRelay(database: Database, bus: Bus, claimMs?: number): Relay {
  const relay = createRelay({ database, bus, clock: systemClock, log, deadLetters, retryDelaysMs: DELAYS, pollMs: 100, ...(claimMs ? { claimMs } : {}) });
  cleanups.push(() => relay.stop());
  return relay;
}

describe.runIf(amqpUrl())("a broker outage", () => {
  it("longer than the whole retry budget delays messages, dead-letters none, and delivers each once when it ends", async () => {
    const database = await openTestPglite();
    cleanups.push(() => database.close());
    const proxy = await proxyTo(5672);
    const prefix = `orderly-test-${randomBytes(4).toString("hex")}`;
    const bus = rabbitBus({ url: proxy.url(amqpUrl() as string), prefix });
    const effects: string[] = [];
    await bus.subscribe({ consumer: "keeper", topics: ["order.*"], handler: inboxHandler(database, "keeper", async (_tx, m) => void effects.push(m.id)) });
    const relay = startRelay(database, bus);
    await relay.start();
    await send(database, 5);
    await waitFor(async () => (await inbox(database, "keeper")) === 5, "the first five");
    // Delivered is not yet marked published: the relay marks a row once the broker confirms it.
    await waitFor(async () => (await published(database)) === 5, "the first five marked published");

    proxy.cut();
    await send(database, 10);
    await sleep(2_000); // the budget is 350 ms
    expect(await deadOutbox(database)).toBe(0);
    expect(await letters(database)).toBe(0);
    expect(await count(database, sql`select count(*)::int as n from outbox_messages where status = 'pending'`)).toBe(10);
    // Retries while unreachable never use up the budget a rejected message has.
    expect(await count(database, sql`select count(*)::int as n from outbox_messages where status = 'pending' and attempts > 0`)).toBe(0);

    proxy.restore();
    await waitFor(async () => (await inbox(database, "keeper")) === 15, "all fifteen after the outage");
    await waitFor(async () => (await published(database)) === 15, "every row published");
    expect(new Set(effects).size).toBe(15);
    expect(effects).toHaveLength(15);
    expect(await letters(database)).toBe(0);
  });

  it("leaves the rows of a relay that cannot reach the broker to a relay that can", async () => {
    const database = await openTestPglite();
    cleanups.push(() => database.close());
    const proxy = await proxyTo(5672);
    const prefix = `orderly-test-${randomBytes(4).toString("hex")}`;
    const cutOff = openRabbit({ url: proxy.url(amqpUrl() as string), prefix });
    cleanups.push(() => cutOff.close());
    await cutOff.connection.onConnect(5_000);
    proxy.cut();
    const healthy = rabbitBus({ prefix });
    await healthy.subscribe({ consumer: "keeper", topics: ["order.*"], handler: inboxHandler(database, "keeper", async () => {}) });
    await send(database, 20);
    await startRelay(database, cutOff, 10_000).start();
    await sleep(300); // the cut-off relay has had its chance to claim them
    await startRelay(database, healthy, 10_000).start();
    // Well within the 10 s a claim is held: the healthy relay found every row free.
    await waitFor(async () => (await inbox(database, "keeper")) === 20, "all twenty through the healthy relay", 3_000);
    expect(await deadOutbox(database)).toBe(0);
  });
});

const buses = [{ name: "in-process" }, ...(amqpUrl() ? [{ name: "RabbitMQ" }] : [])];

describe.runIf(postgresUrl()).each(buses)("a consumer's database outage over the $name bus", ({ name }) => {
  /** A producer on its own database, a consumer whose database sits behind a proxy the test cuts. */
  async function setup(handlerOf: (consumerDb: Database) => BusHandler) {
    const producer = await openTestPglite();
    cleanups.push(() => producer.close());
    const server = await openTestPostgres();
    cleanups.push(() => server.close());
    const proxy = await proxyTo(Number(new URL(server.url).port || 5432));
    const consumerDb = openPostgres(proxy.url(server.url), { max: 4 });
    cleanups.push(() => consumerDb.close());
    const prefix = `orderly-test-${randomBytes(4).toString("hex")}`;
    const onDeadLetter = async (message: Parameters<typeof deadLetters.recordConsumerFailure>[1]["message"], consumer: string, reason: string) => {
      await deadLetters.recordConsumerFailure(consumerDb.db, { message, consumer, reason });
    };
    const bus = name === "in-process" ? createInProcessBus() : rabbitBus({ prefix, onDeadLetter });
    let calls = 0;
    const handler = handlerOf(consumerDb);
    await bus.subscribe({
      consumer: "keeper",
      topics: ["order.*"],
      handler: async (message) => {
        calls++;
        await handler(message);
      },
    });
    const parked = async () => {
      if (name !== "RabbitMQ") return 0;
      const probe = openRabbit({ prefix });
      try {
        return (await probe.connection.queueDeclare({ queue: `${prefix}.keeper.parking`, passive: true })).messageCount;
      } finally {
        await probe.close();
      }
    };
    const relay = startRelay(producer, bus);
    await relay.start();
    return { producer, server, consumerDb, proxy, calls: () => calls, parked };
  }

  it("waits for it: no hot loop, no parked copy, no dead letter, each message handled once when it is back", async () => {
    const effects: string[] = [];
    const t = await setup((consumerDb) => inboxHandler(consumerDb, "keeper", async (_tx, m) => void effects.push(m.id)));
    await send(t.producer, 1);
    // Committed, not only run: cut during its COMMIT, the first would be rolled back and run again.
    await waitFor(async () => (await inbox(t.consumerDb, "keeper")) === 1, "a first delivery");

    t.proxy.cut();
    const before = t.calls();
    await send(t.producer, 3);
    await sleep(3_000);
    const during = t.calls() - before;
    // Tries follow the capped schedule (at most about one per 200 ms per message), not the database's refusals.
    expect(during).toBeGreaterThanOrEqual(3);
    expect(during).toBeLessThan(3 * 25);
    expect(await deadOutbox(t.producer)).toBe(0);
    expect(await letters(t.producer)).toBe(0);
    expect(await t.parked()).toBe(0);

    t.proxy.restore();
    await waitFor(async () => effects.length === 4, "the three held back");
    await sleep(300);
    expect(new Set(effects).size).toBe(4);
    expect(effects).toHaveLength(4);
    expect(await letters(t.server)).toBe(0);
    expect(await t.parked()).toBe(0);
  });

  it.runIf(name === "RabbitMQ")("keeps a message past its budget unparked while its dead letter cannot be recorded, then records and parks it once", async () => {
    const t = await setup(() => async () => {
      throw new Error("the label printer is offline");
    });
    t.proxy.cut();
    const [id] = await send(t.producer, 1);
    await sleep(3_000);
    expect(t.calls()).toBeGreaterThanOrEqual(DELAYS.length + 1);
    expect(t.calls()).toBeLessThan(25);
    expect(await t.parked()).toBe(0);

    t.proxy.restore();
    await waitFor(async () => (await letters(t.server)) === 1, "the dead letter");
    await waitFor(async () => (await t.parked()) === 1, "the parked message");
    await sleep(500);
    expect(await t.parked()).toBe(1);
    expect(await deadLetters.list(t.server.db)).toMatchObject([{ source: "consumer", consumer: "keeper", reference: id, topic: "order.placed", payload: { i: 0 } }]);
  });
});
