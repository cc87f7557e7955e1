import { randomBytes } from "node:crypto";
import { sql } from "drizzle-orm";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { type Database, rows } from "../../src/db/client.ts";
import { systemClock } from "../../src/kit/clock.ts";
import { createDeadLetters } from "../../src/kit/dead-letters.ts";
import { newId } from "../../src/kit/ids.ts";
import { inboxHandler } from "../../src/kit/inbox.ts";
import { createOutbox } from "../../src/kit/outbox.ts";
import { createRabbitBus } from "../../src/kit/rabbit-bus.ts";
import { createRelay, DEFAULT_RETRY_DELAYS_MS } from "../../src/kit/relay.ts";
import { openTestPostgres, postgresUrl } from "../support/databases.ts";
import { withRabbitStopped } from "../support/faults.ts";

function amqpUrl(): string | undefined {
  const url = process.env.AMQP_URL;
  if (!url && process.env.CI === "true") throw new Error("AMQP_URL is not set: the fault suites cannot run in CI");
  return url;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor(check: () => Promise<boolean>, what: string, ms: number) {
  const until = Date.now() + ms;
  while (!(await check().catch(() => false))) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

const count = async (database: Database, statement: ReturnType<typeof sql>) => (await rows<{ n: number }>(database.db, statement))[0]?.n ?? 0;

// The machine's real RabbitMQ is stopped (rabbitmqctl stop_app) for 40 s: longer than the 31 s the
// default retry delays add up to, which is what an outage used to be allowed before it became dead
// letters. Producers keep committing messages meanwhile.
describe.runIf(postgresUrl() && amqpUrl())("a real RabbitMQ outage", () => {
  it("past the whole retry budget: nothing dead-lettered, everything delivered once when the broker is back", { timeout: 240_000 }, async () => {
    const database = await openTestPostgres();
    const log = pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" });
    const deadLetters = createDeadLetters({ clock: systemClock, newId });
    const outbox = createOutbox({ clock: systemClock, newId });
    const consumers = [
      { consumer: "keeper", topics: ["order.*"] },
      { consumer: "ledger", topics: ["order.placed"] },
    ];
    const bus = createRabbitBus({
      url: amqpUrl() as string,
      log,
      retryDelaysMs: DEFAULT_RETRY_DELAYS_MS,
      prefix: `orderly-faults-${randomBytes(4).toString("hex")}`,
      topology: consumers,
      onDeadLetter: (message, consumer, reason) => deadLetters.recordConsumerFailure(database.db, { message, consumer, reason }).then(() => {}),
    });
    const effects = new Map<string, string[]>(consumers.map((c) => [c.consumer, []]));
    for (const { consumer, topics } of consumers) {
      await bus.subscribe({ consumer, topics, handler: inboxHandler(database, consumer, async (_tx, m) => void effects.get(consumer)?.push(m.id)) });
    }
    const relay = createRelay({ database, bus, clock: systemClock, log, deadLetters, retryDelaysMs: DEFAULT_RETRY_DELAYS_MS, pollMs: 200 });
    const send = (i: number) => database.tenant("t1", (tx) => outbox.enqueue(tx, { tenantId: "t1", topic: "order.placed", payload: { i } }));
    const noDeadLetters = async () => {
      expect(await count(database, sql`select count(*)::int as n from dead_letters`)).toBe(0);
      expect(await count(database, sql`select count(*)::int as n from outbox_messages where status = 'dead'`)).toBe(0);
    };
    try {
      await relay.start();
      for (let i = 0; i < 10; i++) await send(i);
      await waitFor(async () => effects.get("keeper")?.length === 10 && effects.get("ledger")?.length === 10, "the first ten", 20_000);

      await withRabbitStopped(40_000, async () => {
        for (let i = 10; i < 30; i++) {
          await send(i);
          await sleep(500);
        }
        await sleep(25_000);
        await noDeadLetters(); // 35 s in: past the old budget
        expect(await count(database, sql`select count(*)::int as n from outbox_messages where status = 'pending'`)).toBe(20);
        // Not one try of theirs counted toward the budget (a rejection would; an outage does not).
        expect(await count(database, sql`select count(*)::int as n from outbox_messages where status = 'pending' and attempts > 0`)).toBe(0);
      });

      await waitFor(async () => effects.get("keeper")?.length === 30 && effects.get("ledger")?.length === 30, "all thirty after the restart", 60_000);
      await waitFor(async () => (await count(database, sql`select count(*)::int as n from outbox_messages where status = 'published'`)) === 30, "every row published", 30_000);
      await sleep(1_000);
      for (const [consumer, ids] of effects) {
        expect(ids, consumer).toHaveLength(30);
        expect(new Set(ids).size, consumer).toBe(30);
      }
      await noDeadLetters();
    } finally {
      await relay.stop();
      await bus.purge().catch(() => {});
      await bus.close();
      await database.close();
    }
  });
});
