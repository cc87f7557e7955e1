import { and, asc, eq, inArray, lte } from "drizzle-orm";
import type { Logger } from "pino";
import type { Database, Tx } from "../db/client.ts";
import type { Barrier, BarrierOp } from "./barrier.ts";
import type { BusHandler } from "./bus.ts";
import type { Clock } from "./clock.ts";
import type { DeadLetters } from "./dead-letters.ts";
import { type AfterCommit, inboxHandler } from "./inbox.ts";
import type { Outbox } from "./outbox.ts";
import { backoffMs, DEFAULT_RETRY_DELAYS_MS } from "./relay.ts";
import { sagas } from "./schema.ts";

/** Every step operation answers success (with a result for later steps) or a typed refusal. */
export type StepOutcome = { ok: true; result?: unknown } | { ok: false; reason: string };

/** A command to the service that owns a step; the runner adds the saga's identity to the payload. */
export interface StepCommand {
  topic: string;
  payload: Record<string, unknown>;
}

export interface SagaStep<C> {
  id: string;
  /** The forward command, or undefined when this saga does not need the step. */
  run(context: C, results: Record<string, unknown>): StepCommand | undefined;
  /** The inverse, sent when a later step refuses or this one timed out. */
  compensate(context: C, results: Record<string, unknown>): StepCommand;
}

export interface SagaView<C> {
  id: string;
  tenantId: string;
  context: C;
  results: Record<string, unknown>;
}

export interface SagaDefinition<C> {
  type: string;
  steps: SagaStep<C>[];
  /** In the transaction that saw the last step succeed. */
  onCompleted(tx: Tx, saga: SagaView<C>, afterCommit: AfterCommit): Promise<void>;
  /** In the transaction that saw the last compensation done; `reason` is the refusal (or STEP_TIMEOUT). */
  onCompensated(tx: Tx, saga: SagaView<C>, reason: string, afterCommit: AfterCommit): Promise<void>;
}

/** A command as it travels: the step's payload plus who asked. */
export interface SagaCommandPayload {
  sagaId: string;
  step: string;
  op: BarrierOp;
  [field: string]: unknown;
}

export interface SagaReply {
  sagaId: string;
  step: string;
  op: "try" | "cancel";
  outcome: StepOutcome;
}

export const SAGA_REPLY_TOPIC = "saga.reply";
export const STEP_TIMEOUT = "STEP_TIMEOUT";

type SagaRow = typeof sagas.$inferSelect;

/**
 * Runs sagas of reservations: state in the database, every command and reply through the outbox.
 * A step's reply moves the saga on; a refusal compensates the completed steps in reverse order; a
 * step that does not answer is sent again with stored exponential backoff and jitter, and past the
 * last delay the saga aborts and compensates (the step itself included: its barrier turns a cancel
 * of a try that never ran into a no-op). A compensation is retried for as long as it takes, with a
 * dead letter once it passed the limit, so it is never lost.
 */
export function createSagaRunner(deps: { outbox: Outbox; clock: Clock; log: Logger; deadLetters: DeadLetters; retryDelaysMs?: number[] }) {
  const { outbox, clock, log, deadLetters } = deps;
  const delays = deps.retryDelaysMs ?? DEFAULT_RETRY_DELAYS_MS;
  const definitions = new Map<string, SagaDefinition<unknown>>();

  const definitionOf = (type: string) => {
    const definition = definitions.get(type);
    if (!definition) throw new Error(`no saga definition ${type}`);
    return definition;
  };
  const view = <C>(row: SagaRow): SagaView<C> => ({ id: row.id, tenantId: row.tenantId, context: row.context as C, results: row.results });

  function commandOf(definition: SagaDefinition<unknown>, row: Pick<SagaRow, "context" | "results">, index: number, op: "try" | "cancel"): StepCommand {
    const step = definition.steps[index] as SagaStep<unknown>;
    const command = op === "try" ? step.run(row.context, row.results) : step.compensate(row.context, row.results);
    if (!command) throw new Error(`step ${step.id} has no ${op} command`);
    return command;
  }

  async function send(tx: Tx, row: Pick<SagaRow, "id" | "tenantId" | "type" | "context" | "results">, index: number, op: "try" | "cancel") {
    const definition = definitionOf(row.type);
    const command = commandOf(definition, row, index, op);
    const payload: SagaCommandPayload = { ...command.payload, sagaId: row.id, step: (definition.steps[index] as SagaStep<unknown>).id, op };
    await outbox.enqueue(tx, { tenantId: row.tenantId, topic: command.topic, payload });
  }

  const nextForward = (definition: SagaDefinition<unknown>, row: Pick<SagaRow, "context" | "results">, from: number): number | undefined => {
    for (let i = from; i < definition.steps.length; i++) if ((definition.steps[i] as SagaStep<unknown>).run(row.context, row.results)) return i;
    return undefined;
  };

  const due = (attempts: number) => new Date(clock.now().getTime() + backoffMs(delays, Math.max(1, attempts)));

  async function update(tx: Tx, row: SagaRow, patch: Partial<SagaRow>): Promise<SagaRow> {
    const next = { ...row, ...patch, updatedAt: clock.now() };
    await tx.update(sagas).set(next).where(eq(sagas.id, row.id));
    return next;
  }

  /** Moves to the next compensation (the last step in `done`), or finishes compensating. */
  async function compensateNext(tx: Tx, row: SagaRow, afterCommit: AfterCommit): Promise<void> {
    const definition = definitionOf(row.type);
    const index = row.done[row.done.length - 1];
    if (index === undefined) {
      const finished = await update(tx, row, { status: "compensated" });
      await definition.onCompensated(tx, view(finished), finished.abortReason ?? "ABORTED", afterCommit);
      return;
    }
    const next = await update(tx, row, { status: "compensating", stepIndex: index, op: "cancel", attempts: 0, nextAttemptAt: due(1) });
    await send(tx, next, index, "cancel");
  }

  async function abort(tx: Tx, row: SagaRow, reason: string, includeCurrent: boolean, afterCommit: AfterCommit): Promise<void> {
    const done = includeCurrent && !row.done.includes(row.stepIndex) ? [...row.done, row.stepIndex] : row.done;
    await compensateNext(tx, await update(tx, row, { status: "compensating", abortReason: reason, done }), afterCommit);
  }

  /** Applies a participant's reply, in the transaction of the reply's inbox row. */
  async function handleReply(tx: Tx, reply: SagaReply, afterCommit: AfterCommit): Promise<void> {
    const [row] = await tx.select().from(sagas).where(eq(sagas.id, reply.sagaId)).for("update");
    if (!row || row.status === "completed" || row.status === "compensated") return;
    const definition = definitionOf(row.type);
    if ((definition.steps[row.stepIndex] as SagaStep<unknown>).id !== reply.step || row.op !== reply.op) return; // stale
    if (reply.op === "cancel") {
      await compensateNext(tx, await update(tx, row, { done: row.done.slice(0, -1) }), afterCommit);
      return;
    }
    if (!reply.outcome.ok) {
      await abort(tx, row, reply.outcome.reason, false, afterCommit);
      return;
    }
    const advanced = await update(tx, row, { results: { ...row.results, [reply.step]: reply.outcome.result ?? null }, done: [...row.done, row.stepIndex] });
    const next = nextForward(definition, advanced, row.stepIndex + 1);
    if (next === undefined) {
      const finished = await update(tx, advanced, { status: "completed" });
      await definition.onCompleted(tx, view(finished), afterCommit);
      return;
    }
    await send(tx, await update(tx, advanced, { stepIndex: next, attempts: 0, nextAttemptAt: due(1) }), next, "try");
  }
  return {
    handleReply,

    register<C>(definition: SagaDefinition<C>): void {
      definitions.set(definition.type, definition as SagaDefinition<unknown>);
    },

    /** Starts a saga in the caller's transaction: its first command leaves when that commits. */
    async start<C>(tx: Tx, type: string, saga: { id: string; tenantId: string; context: C }, afterCommit: AfterCommit = () => {}): Promise<void> {
      const definition = definitionOf(type);
      const now = clock.now();
      const row: SagaRow = {
        id: saga.id,
        tenantId: saga.tenantId,
        type,
        status: "running",
        context: saga.context,
        results: {},
        done: [],
        stepIndex: 0,
        op: "try",
        attempts: 0,
        nextAttemptAt: due(1),
        abortReason: null,
        deadLettered: false,
        createdAt: now,
        updatedAt: now,
      };
      const first = nextForward(definition, row, 0);
      await tx.insert(sagas).values({ ...row, stepIndex: first ?? 0 });
      if (first === undefined) {
        await update(tx, row, { status: "completed" });
        await definition.onCompleted(tx, view(row), afterCommit);
        return;
      }
      await send(tx, row, first, "try");
    },

    /**
     * Resends the command of every saga whose step is overdue (one short transaction each, claimed
     * with SKIP LOCKED so many replicas can run it); aborts a forward step past the last delay.
     */
    async resumeDue(database: Database, batch = 100): Promise<number> {
      let resumed = 0;
      for (; resumed < batch; resumed++) {
        const later: (() => Promise<void>)[] = [];
        const afterCommit: AfterCommit = (work) => later.push(work);
        const more = await database.db.transaction(async (tx) => {
          const [row] = await tx
            .select()
            .from(sagas)
            .where(and(inArray(sagas.status, ["running", "compensating"]), lte(sagas.nextAttemptAt, clock.now())))
            .orderBy(asc(sagas.nextAttemptAt))
            .limit(1)
            .for("update", { skipLocked: true });
          if (!row) return false;
          const attempts = row.attempts + 1;
          if (row.status === "running" && attempts > delays.length) {
            const step = (definitionOf(row.type).steps[row.stepIndex] as SagaStep<unknown>).id;
            const reason = `step ${step} did not answer after ${row.attempts} attempts; the saga compensates`;
            log.warn({ sagaId: row.id, step }, reason);
            await deadLetters.record(tx, { tenantId: row.tenantId, source: "saga", reference: row.id, reason });
            await abort(tx, row, STEP_TIMEOUT, true, afterCommit);
            return true;
          }
          const deadLetter = row.status === "compensating" && attempts > delays.length && !row.deadLettered;
          if (deadLetter) {
            const reason = `compensation of step ${row.stepIndex} has not answered after ${row.attempts} attempts; still retrying`;
            await deadLetters.record(tx, { tenantId: row.tenantId, source: "saga", reference: row.id, reason });
          }
          await update(tx, row, { attempts, nextAttemptAt: due(attempts), deadLettered: row.deadLettered || deadLetter });
          await send(tx, row, row.stepIndex, row.op);
          return true;
        });
        for (const work of later) await work();
        if (!more) break;
      }
      return resumed;
    },

    /** The bus handler of the coordinator: replies, each applied once (inbox). */
    replyHandler(database: Database, consumer: string): BusHandler {
      return inboxHandler(database, consumer, (tx, message, afterCommit) => handleReply(tx, message.payload as SagaReply, afterCommit));
    },
  };
}

export type SagaRunner = ReturnType<typeof createSagaRunner>;

export interface ParticipantStep {
  try(tx: Tx, tenantId: string, command: SagaCommandPayload): Promise<StepOutcome>;
  cancel(tx: Tx, tenantId: string, command: SagaCommandPayload): Promise<void>;
  confirm?(tx: Tx, tenantId: string, command: SagaCommandPayload): Promise<void>;
}

/**
 * The bus handler of a service taking part in sagas: each command runs behind the barrier, in one
 * tenant transaction with its inbox row and its reply (through the outbox).
 */
export function sagaParticipant(deps: { database: Database; barrier: Barrier; outbox: Outbox; consumer: string; steps: Record<string, ParticipantStep> }): BusHandler {
  const { database, barrier, outbox, consumer, steps } = deps;
  return inboxHandler(database, consumer, async (tx, message) => {
    const command = message.payload as SagaCommandPayload;
    const step = steps[command.step];
    if (!step) throw new Error(`${consumer} has no step ${command.step}`);
    const key = { tenantId: message.tenantId, sagaId: command.sagaId, step: command.step };
    const result = await barrier.run(tx, key, command.op, async (): Promise<StepOutcome> => {
      if (command.op === "try") return step.try(tx, message.tenantId, command);
      if (command.op === "cancel") await step.cancel(tx, message.tenantId, command);
      else await step.confirm?.(tx, message.tenantId, command);
      return { ok: true };
    });
    if (command.op === "confirm") return; // confirms are sent without waiting for an answer
    const outcome: StepOutcome =
      result.kind === "skipped" ? (command.op === "try" ? { ok: false, reason: "CANCELLED" } : { ok: true }) : (result.outcome as StepOutcome);
    const reply: SagaReply = { sagaId: command.sagaId, step: command.step, op: command.op, outcome };
    await outbox.enqueue(tx, { tenantId: message.tenantId, topic: SAGA_REPLY_TOPIC, payload: reply });
  });
}
