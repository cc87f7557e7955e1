import { eq, sql } from "drizzle-orm";
import { pino } from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { type Database, rows } from "../src/db/client.ts";
import { createBarrier } from "../src/kit/barrier.ts";
import type { Bus } from "../src/kit/bus.ts";
import { manualClock } from "../src/kit/clock.ts";
import { createDeadLetters } from "../src/kit/dead-letters.ts";
import { newId } from "../src/kit/ids.ts";
import { inboxHandler } from "../src/kit/inbox.ts";
import { ok, refuse } from "../src/kit/outcome.ts";
import { createOutbox } from "../src/kit/outbox.ts";
import { createRelay, type Relay } from "../src/kit/relay.ts";
import { createSagaRunner, participantEffect, SAGA_REPLY_TOPIC, type SagaRunner, type SagaStep, type StepOutcome } from "../src/kit/saga.ts";
import { sagas } from "../src/kit/schema.ts";
import { openTestPglite } from "./support/databases.ts";
import { duplicatingBus } from "./support/harness.ts";

const log = pino({ level: "silent" });
const DELAYS = [1_000, 2_000, 4_000];
const DEADLINE_MS = 7_000;

interface Context {
  refuseAt?: string;
  /** onCompleted refuses: e.g. the order left PENDING some other way meanwhile. */
  vetoCompletion?: boolean;
}

/**
 * Two sagas: a chain a → b → c (each needs the one before) and a fan-out in which x and y start at
 * once and z needs x. Every message is delivered twice; participants run behind the barrier.
 */
describe("saga runner", () => {
  const clock = manualClock(new Date());
  let database: Database;
  let relay: Relay;
  let runner: SagaRunner;
  let bus: Bus;
  /** What the participants did, in order: "a:try", "b:cancel", … */
  let effects: string[];
  let finished: Map<string, string>;
  /** Participants that drop what they receive (their service is down). */
  let silent: Set<string>;
  let failingCancels: number;

  const step = (id: string, needs: string[] = [], deadlineMs: number | undefined = DEADLINE_MS): SagaStep<Context> => ({
    id,
    topic: `svc.${id}`,
    needs,
    command: (context, results) => ({ refuse: context.refuseAt === id, previous: results }),
    reference: () => ({}),
    deadlineMs,
  });

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
    runner = createSagaRunner({ outbox, clock, log, retryDelaysMs: DELAYS });
    const finish = {
      onCompleted: async (_tx: unknown, saga: { id: string; context: Context; results: Record<string, unknown> }) => {
        if (saga.context.vetoCompletion) return refuse("ORDER_LEFT_PENDING");
        finished.set(saga.id, `completed ${JSON.stringify(saga.results)}`);
        return ok(undefined);
      },
      onCompensated: async (_tx: unknown, saga: { id: string }, reason: string) => void finished.set(saga.id, `compensated ${reason}`),
    };
    runner.register<Context>({ type: "chain", steps: [step("a"), step("b", ["a"]), step("c", ["b"])], ...finish });
    runner.register<Context>({ type: "fan", steps: [step("x"), step("y"), step("z", ["x"])], ...finish });
    runner.register<Context>({ type: "patient", steps: [{ ...step("p"), deadlineMs: undefined }], ...finish });
    const barrier = createBarrier();
    for (const id of ["a", "b", "c", "x", "y", "z", "p"]) {
      const effect = participantEffect({
        barrier,
        outbox,
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
      const handler = inboxHandler(database, `svc-${id}`, effect);
      await bus.subscribe({
        consumer: `svc-${id}`,
        topics: [`svc.${id}`],
        handler: async (m) => {
          if (!silent.has(id)) await handler(m);
        },
      });
    }
    await bus.subscribe({ consumer: "coordinator", topics: [SAGA_REPLY_TOPIC], handler: inboxHandler(database, "coordinator", runner.replyEffect) });
    await relay.start();
  });
  afterEach(async () => {
    await relay.stop();
    await database.close();
  });

  const start = (type: string, id: string, context: Context = {}) => database.tenant("t", (tx) => runner.start(tx, type, { id, tenantId: "t", context }));
  const settle = async (id: string) => {
    for (let i = 0; i < 1500 && !finished.has(id); i++) await new Promise((r) => setTimeout(r, 10));
    return finished.get(id);
  };
  const until = async (check: () => boolean) => {
    for (let i = 0; i < 1500 && !check(); i++) await new Promise((r) => setTimeout(r, 10));
  };
  const sagaLetters = async () => (await createDeadLetters({ clock, newId }).list(database.db)).filter((l) => l.source === "saga");
  const statusOf = async (id: string) => (await database.db.select().from(sagas).where(eq(sagas.id, id)))[0]?.status;

  it("runs a chain in order, handing each step the results before it", async () => {
    await start("chain", "ok");
    expect(await settle("ok")).toBe('completed {"a":"a-result","b":"b-result","c":"c-result"}');
    expect(effects).toEqual(["a:try", "b:try", "c:try"]);
  });

  it.each(["a", "b", "c"])("compensates the completed steps of a chain in reverse when step %s refuses", async (refuseAt) => {
    await start("chain", `refuse-${refuseAt}`, { refuseAt });
    expect(await settle(`refuse-${refuseAt}`)).toBe(`compensated REFUSED_BY_${refuseAt.toUpperCase()}`);
    const before = ["a", "b", "c"].slice(0, ["a", "b", "c"].indexOf(refuseAt));
    expect(effects).toEqual([...before.map((s) => `${s}:try`), ...[...before].reverse().map((s) => `${s}:cancel`)]);
  });

  it("sends independent steps at once and a dependent step only after what it needs", async () => {
    await relay.stop(); // hold the messages in the outbox to see what the start sent
    await start("fan", "fan");
    const sent = await rows<{ step: string }>(database.db, sql`select payload->>'step' as step from outbox_messages where topic like 'svc.%' order by payload->>'step'`);
    expect(sent.map((r) => r.step)).toEqual(["x", "y"]);
    await relay.start();
    expect(await settle("fan")).toBe('completed {"x":"x-result","y":"y-result","z":"z-result"}');
    expect(effects.indexOf("z:try")).toBeGreaterThan(effects.indexOf("x:try"));
  });

  it("cancels a parallel step that may still be running when another refuses, and a late try then does nothing", async () => {
    silent.add("y"); // y's service is down: its try is not handled
    await start("fan", "crossed", { refuseAt: "x" });
    const sentTo = async (op: string) =>
      rows<{ id: string }>(database.db, sql`select id from outbox_messages where topic = 'svc.y' and payload->>'op' = ${op} and status = 'published'`);
    for (let i = 0; i < 100 && (await sentTo("cancel")).length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(await statusOf("crossed")).toBe("compensating");
    silent.delete("y"); // back: the resent cancel comes before any try (null compensation)
    clock.advance(DELAYS[0]! * 1.25);
    await runner.resumeDue(database);
    expect(await settle("crossed")).toBe("compensated REFUSED_BY_X");
    // The try that was sent before the abort arrives late: the barrier's tombstone makes it do nothing.
    const [lateTry] = await sentTo("try");
    await database.db.execute(sql`update outbox_messages set status = 'pending', next_attempt_at = ${new Date(0).toISOString()}::timestamptz where id = ${lateTry?.id}`);
    for (let i = 0; i < 100 && (await sentTo("try")).length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    await new Promise((r) => setTimeout(r, 100));
    expect(effects.filter((e) => e.startsWith("y"))).toEqual([]);
  });

  it("compensates every step when the completion refuses", async () => {
    await start("chain", "veto", { vetoCompletion: true });
    expect(await settle("veto")).toBe("compensated ORDER_LEFT_PENDING");
    expect(effects).toEqual(["a:try", "b:try", "c:try", "c:cancel", "b:cancel", "a:cancel"]);
  });

  it("resends a step that does not answer, gives up past its deadline counted from publication, and compensates it too", async () => {
    silent.add("b");
    await start("chain", "silent");
    await until(() => effects.includes("a:try"));
    // b's command is published (its deadline counts from here) and dropped by the silent service.
    const published = async () =>
      (await rows(database.db, sql`select 1 from outbox_messages where topic = 'svc.b' and status = 'published'`)).length > 0;
    for (let i = 0; i < 250 && !(await published()); i++) await new Promise((r) => setTimeout(r, 20));
    expect(await published()).toBe(true);
    for (let elapsed = 0; elapsed < DEADLINE_MS; elapsed += 1_500) {
      clock.advance(1_500);
      await runner.resumeDue(database);
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(await statusOf("silent")).toBe("running");
    silent.delete("b"); // the service is back: the abort's cancel of b reaches it
    // Time goes on while the abort compensates (a cancel delayed on a busy machine is resent, as designed).
    for (let i = 0; i < 20 && !finished.has("silent"); i++) {
      clock.advance(1_500);
      await runner.resumeDue(database);
      for (let j = 0; j < 50 && !finished.has("silent"); j++) await new Promise((r) => setTimeout(r, 10));
    }
    expect(finished.get("silent")).toBe("compensated STEP_TIMEOUT");
    // b never ran its try: its cancel was a null compensation; a late try of b now does nothing.
    expect(effects).toEqual(["a:try", "a:cancel"]);
    expect(await sagaLetters()).toEqual([]);
  });

  it("runs no deadline while a command is still in the outbox: an outage delays a saga, never aborts it", async () => {
    await relay.stop(); // the broker is away: nothing leaves the outbox
    await start("chain", "outage");
    for (let i = 0; i < 10; i++) {
      clock.advance(5_000); // far past the deadline
      await runner.resumeDue(database);
    }
    const [resends] = await rows<{ n: number }>(database.db, sql`select count(*)::int as n from outbox_messages where topic = 'svc.a'`);
    expect(resends?.n).toBe(1); // nothing was resent either
    expect(await statusOf("outage")).toBe("running");
    await relay.start();
    expect(await settle("outage")).toBe('completed {"a":"a-result","b":"b-result","c":"c-result"}');
  });

  it("waits as long as it takes for a step without a deadline, resending less and less often", async () => {
    silent.add("p");
    await start("patient", "patient");
    await new Promise((r) => setTimeout(r, 100));
    for (let i = 0; i < 40; i++) {
      clock.advance(30_000); // twenty minutes in all
      await runner.resumeDue(database);
      await new Promise((r) => setTimeout(r, 10));
    }
    expect(await statusOf("patient")).toBe("running");
    const [sends] = await rows<{ n: number }>(database.db, sql`select count(*)::int as n from outbox_messages where topic = 'svc.p'`);
    expect(sends?.n).toBeLessThan(20); // backoff keeps doubling past the configured delays
    silent.delete("p");
    clock.advance(5 * 60_000);
    await runner.resumeDue(database);
    expect(await settle("patient")).toBe('completed {"p":"p-result"}');
  });

  it("retries a failing compensation until it succeeds, without a dead letter", async () => {
    failingCancels = 8; // two deliveries per attempt, and the relay's own retries
    await start("chain", "stubborn", { refuseAt: "c" });
    await until(() => effects.includes("b:try") && failingCancels < 8);
    for (let i = 0; i < 30 && !finished.has("stubborn"); i++) {
      clock.advance(5_000);
      await runner.resumeDue(database);
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(await settle("stubborn")).toBe("compensated REFUSED_BY_C");
    expect(effects).toEqual(["a:try", "b:try", "b:cancel", "a:cancel"]);
    expect(await sagaLetters()).toEqual([]);
  });
});
