import { eq } from "drizzle-orm";
import { pino } from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { Database } from "../src/db/client.ts";
import { createBarrier } from "../src/kit/barrier.ts";
import type { Bus } from "../src/kit/bus.ts";
import { manualClock } from "../src/kit/clock.ts";
import { createDeadLetters } from "../src/kit/dead-letters.ts";
import { newId } from "../src/kit/ids.ts";
import { createOutbox } from "../src/kit/outbox.ts";
import { createRelay, type Relay } from "../src/kit/relay.ts";
import { createSagaRunner, SAGA_REPLY_TOPIC, type SagaRunner, sagaParticipant, type StepOutcome } from "../src/kit/saga.ts";
import { sagas } from "../src/kit/schema.ts";
import { openTestPglite } from "./support/databases.ts";
import { duplicatingBus } from "./support/harness.ts";

const log = pino({ level: "silent" });
const STEPS = ["a", "b", "c"] as const;
const DELAYS = [1_000, 2_000, 4_000];

interface Context {
  refuseAt?: string;
}

describe("saga runner", () => {
  const clock = manualClock(new Date());
  let database: Database;
  let relay: Relay;
  let runner: SagaRunner;
  let bus: Bus;
  /** What the participants did, in order: "a:try", "b:cancel", … */
  let effects: string[];
  let finished: Map<string, string>;
  /** Participant behaviour switches. */
  let silent: Set<string>;
  let failingCancels: number;

  beforeEach(async () => {
    database = await openTestPglite();
    effects = [];
    finished = new Map();
    silent = new Set();
    failingCancels = 0;
    const outbox = createOutbox({ clock, newId });
    const deadLetters = createDeadLetters({ clock, newId });
    bus = duplicatingBus();
    relay = createRelay({ database, bus, clock, log, deadLetters, retryDelaysMs: [10], pollMs: 20 });
    runner = createSagaRunner({ outbox, clock, log, deadLetters, retryDelaysMs: DELAYS });
    runner.register<Context>({
      type: "demo",
      steps: STEPS.map((id) => ({
        id,
        run: (context, results) => ({ topic: `svc.${id}`, payload: { refuse: context.refuseAt === id, previous: results } }),
        compensate: () => ({ topic: `svc.${id}`, payload: {} }),
      })),
      onCompleted: async (_tx, saga) => void finished.set(saga.id, `completed ${JSON.stringify(saga.results)}`),
      onCompensated: async (_tx, saga, reason) => void finished.set(saga.id, `compensated ${reason}`),
    });
    const barrier = createBarrier();
    for (const id of STEPS) {
      const participant = sagaParticipant({
        database,
        barrier,
        outbox,
        consumer: `svc-${id}`,
        steps: {
          [id]: {
            async try(_tx, _tenant, command): Promise<StepOutcome> {
              if (command.refuse) return { ok: false, reason: `REFUSED_BY_${id.toUpperCase()}` };
              effects.push(`${id}:try`);
              return { ok: true, result: `${id}-result` };
            },
            async cancel() {
              if (failingCancels > 0) {
                failingCancels--;
                throw new Error("compensation failed");
              }
              effects.push(`${id}:cancel`);
            },
          },
        },
      });
      await bus.subscribe({
        consumer: `svc-${id}`,
        topics: [`svc.${id}`],
        handler: async (m) => {
          if (!silent.has(id)) await participant(m);
        },
      });
    }
    await bus.subscribe({ consumer: "coordinator", topics: [SAGA_REPLY_TOPIC], handler: runner.replyHandler(database, "coordinator") });
    await relay.start();
  });
  afterEach(async () => {
    await relay.stop();
    await database.close();
  });

  const start = (id: string, context: Context) => database.tenant("t", (tx) => runner.start(tx, "demo", { id, tenantId: "t", context }));
  const settle = async (id: string) => {
    for (let i = 0; i < 1500 && !finished.has(id); i++) await new Promise((r) => setTimeout(r, 10));
    return finished.get(id);
  };
  const until = async (check: () => boolean) => {
    for (let i = 0; i < 1500 && !check(); i++) await new Promise((r) => setTimeout(r, 10));
  };

  it("runs every step in order, handing each step the results before it", async () => {
    await start("ok", {});
    expect(await settle("ok")).toBe('completed {"a":"a-result","b":"b-result","c":"c-result"}');
    expect(effects).toEqual(["a:try", "b:try", "c:try"]);
  });

  it.each(STEPS)("compensates the completed steps in reverse when step %s refuses", async (refuseAt) => {
    await start(`refuse-${refuseAt}`, { refuseAt });
    expect(await settle(`refuse-${refuseAt}`)).toBe(`compensated REFUSED_BY_${refuseAt.toUpperCase()}`);
    const before = STEPS.slice(0, STEPS.indexOf(refuseAt));
    expect(effects).toEqual([...before.map((s) => `${s}:try`), ...[...before].reverse().map((s) => `${s}:cancel`)]);
  });

  it("resends a step that does not answer with backoff, then aborts and compensates it too", async () => {
    silent.add("b");
    await start("silent", {});
    await until(() => effects.includes("a:try"));
    await new Promise((r) => setTimeout(r, 100)); // b's command is delivered and dropped meanwhile
    expect(effects).toEqual(["a:try"]);
    for (const delay of DELAYS) {
      clock.advance(delay * 1.25);
      expect(await runner.resumeDue(database)).toBe(1);
      await new Promise((r) => setTimeout(r, 50));
    }
    silent.delete("b"); // the service is back: the abort's cancel of b reaches it
    clock.advance(DELAYS[2]! * 1.25);
    expect(await runner.resumeDue(database)).toBe(1);
    expect(await settle("silent")).toBe("compensated STEP_TIMEOUT");
    // b never ran its try: its cancel was a null compensation; a late try of b now does nothing.
    expect(effects).toEqual(["a:try", "a:cancel"]);
    const letters = await createDeadLetters({ clock, newId }).list(database.db);
    expect(letters.filter((l) => l.source === "saga").map((l) => [l.reference, l.reason])).toEqual([["silent", "step b did not answer after 3 attempts; the saga compensates"]]);
  });

  it("retries a failing compensation until it succeeds, dead-lettering it once past the limit", async () => {
    failingCancels = 8; // two deliveries per attempt: past the three delays
    await start("stubborn", { refuseAt: "c" });
    await until(() => effects.includes("b:try") && failingCancels < 8);
    for (let i = 0; i < 12 && !finished.has("stubborn"); i++) {
      clock.advance(5_000);
      await runner.resumeDue(database);
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(await settle("stubborn")).toBe("compensated REFUSED_BY_C");
    expect(effects).toEqual(["a:try", "b:try", "b:cancel", "a:cancel"]);
    const [row] = await database.db.select().from(sagas).where(eq(sagas.id, "stubborn"));
    expect(row?.deadLettered).toBe(true);
    // The saga's own dead letter, once; the relay also dead-lettered the command messages that kept failing.
    const letters = await createDeadLetters({ clock, newId }).list(database.db);
    expect(letters.filter((l) => l.source === "saga").map((l) => l.reference)).toEqual(["stubborn"]);
  });
});
