import { and, asc, eq, inArray, lte, sql } from "drizzle-orm";
import type { Logger } from "pino";
import { type Database, rows, transaction, type Tx } from "../db/client.ts";
import type { Barrier, BarrierOp } from "./barrier.ts";
import type { BusMessage } from "./bus.ts";
import type { Clock } from "./clock.ts";
import type { AfterCommit } from "./inbox.ts";
import type { Outbox } from "./outbox.ts";
import type { Outcome } from "./outcome.ts";
import { DEFAULT_RETRY_DELAYS_MS } from "./relay.ts";
import { sagas } from "./schema.ts";

/** Every step operation answers success (with a result later steps may use) or a typed refusal. */
export type StepOutcome = { ok: true; result?: unknown } | { ok: false; reason: string };

export interface SagaStep<C> {
  id: string;
  /** Where its commands go: the topic its owner consumes. */
  topic: string;
  /** Steps whose results its command uses: it starts once they are done, and is compensated before them. */
  needs: readonly string[];
  /** The try command's payload, or undefined when this saga does not need the step. */
  command(context: C, results: Readonly<Record<string, unknown>>): Record<string, unknown> | undefined;
  /** The payload of its cancel and confirm commands: what identifies the effect to undo or confirm. */
  reference(context: C): Record<string, unknown>;
  /**
   * How long the owner may take to answer once the try reached the broker, before the saga gives up
   * and compensates. Undefined: as long as it takes (a step that cannot be refused, only delayed).
   */
  deadlineMs: number | undefined;
}

export interface SagaView<C> {
  id: string;
  tenantId: string;
  context: C;
  results: Record<string, unknown>;
}

export interface SagaDefinition<C> {
  type: string;
  /** In an order where every step comes after the steps it needs. */
  steps: readonly SagaStep<C>[];
  /**
   * In the transaction that saw the last step succeed. A refusal (e.g. the order left PENDING some
   * other way meanwhile) compensates every step, as if a step had refused.
   */
  onCompleted(tx: Tx, saga: SagaView<C>, afterCommit: AfterCommit): Promise<Outcome<void, string>>;
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
/** The outcome of a try still running when another step refused: its answer no longer matters, its effect is cancelled. */
const ABANDONED = "ABANDONED";

type StepState = "waiting" | "trying" | "done" | "refused" | "skipped" | "to-cancel" | "cancelling" | "cancelled";

/** Where one step of a saga stands, kept in the saga's row. */
export interface StepProgress {
  state: StepState;
  result?: unknown;
  /** Sends of the current operation (try or cancel). */
  attempts: number;
  /** When to look at the step again if no answer came (ISO time). */
  due?: string;
  /** The outbox message of the latest send. */
  messageId?: string;
  /** When the current operation's first command reached the broker: its deadline counts from here. */
  publishedAt?: string;
  /** Every operation of the step so far, for operators (the order timeline): when sent, when and how answered. */
  ops?: StepOperation[];
}

/** One operation (try or cancel) of a saga step, as the order timeline shows it. */
export interface StepOperation {
  op: "try" | "cancel";
  /** When its first command was written to the outbox (ISO time). */
  sentAt: string;
  /** When its answer was applied, or when the saga gave up on it. */
  settledAt?: string;
  /** `ok`, the refusal's reason, STEP_TIMEOUT, or ABANDONED (another step refused while it ran). */
  outcome?: string;
}

/** A settled step operation, as told to metrics: outcome is one of ok, refused, timeout, abandoned. */
export interface StepSettled {
  saga: string;
  step: string;
  op: "try" | "cancel";
  outcome: "ok" | "refused" | "timeout" | "abandoned";
  seconds: number;
}

type SagaRow = typeof sagas.$inferSelect;
type Progress = Record<string, StepProgress>;

const SETTLED: ReadonlySet<StepState> = new Set(["done", "skipped"]);
const NOTHING_TO_UNDO: ReadonlySet<StepState> = new Set(["cancelled", "refused", "skipped", "waiting"]);
const AWAITING_ANSWER: ReadonlySet<StepState> = new Set(["trying", "cancelling"]);
/** Resends keep doubling past the configured delays, up to this. */
const MAX_RESEND_DELAY_MS = 5 * 60_000;
/** A saga with nothing to look at: far enough to never be due, near enough to stay a valid timestamp. */
const NEVER = new Date("9999-01-01T00:00:00Z");

/**
 * Runs sagas of reservations: state in the database, every command and reply through the outbox.
 * Steps whose needs are met are sent at once, so independent steps run in parallel. A refusal
 * compensates every step that ran or may have run, each after the steps that needed it (reverse
 * order). A step that does not answer is sent again with stored, growing delays; past its deadline,
 * counted from when its command reached the broker, the saga compensates (the barrier turns a cancel
 * of a try that never ran into a no-op). An outage is not a failure: while a command is still in the
 * outbox no deadline runs, and compensations are sent until they are answered. Nothing here is
 * dead-lettered: a saga that takes long shows as stuck to operators and keeps going.
 */
export function createSagaRunner(deps: {
  outbox: Outbox;
  clock: Clock;
  log: Logger;
  retryDelaysMs?: number[];
  /** Told, once its transaction committed, each time a step's operation settles (metrics). */
  onStepSettled?: (settled: StepSettled) => void;
}) {
  const { outbox, clock, log } = deps;
  const delays = deps.retryDelaysMs ?? DEFAULT_RETRY_DELAYS_MS;
  const definitions = new Map<string, SagaDefinition<unknown>>();

  const definitionOf = (type: string) => {
    const definition = definitions.get(type);
    if (!definition) throw new Error(`no saga definition ${type}`);
    return definition;
  };

  /** The delay before looking at a step again after `attempts` sends. */
  const resendDelayMs = (attempts: number) => {
    const listed = delays[Math.min(attempts, delays.length) - 1] ?? 1_000;
    const beyond = Math.max(0, attempts - delays.length);
    return Math.round(Math.min(MAX_RESEND_DELAY_MS, listed * 2 ** beyond) * (0.8 + 0.4 * Math.random()));
  };
  const later = (ms: number) => new Date(clock.now().getTime() + ms).toISOString();

  const resultsOf = (progress: Progress) =>
    Object.fromEntries(Object.entries(progress).flatMap(([id, p]) => (p.state === "done" ? [[id, p.result ?? null]] : [])));
  const view = <C>(row: SagaRow): SagaView<C> => ({ id: row.id, tenantId: row.tenantId, context: row.context as C, results: resultsOf(row.steps) });

  async function send(tx: Tx, row: SagaRow, step: SagaStep<unknown>, op: "try" | "cancel"): Promise<string> {
    const body = op === "try" ? step.command(row.context, resultsOf(row.steps)) : step.reference(row.context);
    if (!body) throw new Error(`step ${step.id} has no ${op} command`);
    const payload: SagaCommandPayload = { ...body, sagaId: row.id, step: step.id, op };
    return outbox.enqueue(tx, { tenantId: row.tenantId, topic: step.topic, payload });
  }

  async function begin(tx: Tx, row: SagaRow, step: SagaStep<unknown>, op: "try" | "cancel"): Promise<StepProgress> {
    const ops = [...(row.steps[step.id]?.ops ?? []), { op, sentAt: clock.now().toISOString() }];
    return { state: op === "try" ? "trying" : "cancelling", attempts: 1, messageId: await send(tx, row, step, op), due: later(resendDelayMs(1)), ops };
  }

  /** Closes the step's open operation with its outcome; metrics hear of it once the transaction commits. */
  function settle(row: SagaRow, stepId: string, outcome: string, afterCommit: AfterCommit): void {
    const current = row.steps[stepId]?.ops?.at(-1);
    if (!current || current.settledAt) return;
    const now = clock.now();
    Object.assign(current, { settledAt: now.toISOString(), outcome });
    if (!deps.onStepSettled) return;
    const settled: StepSettled = {
      saga: row.type,
      step: stepId,
      op: current.op,
      outcome: outcome === "ok" ? "ok" : outcome === STEP_TIMEOUT ? "timeout" : outcome === ABANDONED ? "abandoned" : "refused",
      seconds: Math.max(0, (now.getTime() - Date.parse(current.sentAt)) / 1000),
    };
    const tell = deps.onStepSettled;
    afterCommit(async () => tell(settled));
  }

  function abort(row: SagaRow, reason: string, afterCommit: AfterCommit): void {
    row.status = "compensating";
    row.abortReason ??= reason;
    for (const [id, p] of Object.entries(row.steps)) {
      if (p.state === "waiting") p.state = "skipped";
      else if (p.state === "trying" || p.state === "done") {
        if (p.state === "trying") settle(row, id, ABANDONED, afterCommit);
        Object.assign(p, { state: "to-cancel", attempts: 0, due: undefined, publishedAt: undefined });
      }
    }
  }

  /** Sends what can be sent now and finishes the saga when nothing is left; mutates `row`, the caller saves it. */
  async function advance(tx: Tx, row: SagaRow, afterCommit: AfterCommit): Promise<void> {
    const definition = definitionOf(row.type);
    const progress = row.steps;
    if (row.status === "running") {
      for (const step of definition.steps) {
        const p = progress[step.id] as StepProgress;
        if (p.state !== "waiting" || !step.needs.every((n) => SETTLED.has((progress[n] as StepProgress).state))) continue;
        progress[step.id] = step.command(row.context, resultsOf(progress)) ? await begin(tx, row, step, "try") : { state: "skipped", attempts: 0 };
      }
      if (definition.steps.every((s) => SETTLED.has((progress[s.id] as StepProgress).state))) {
        row.status = "completed";
        const completed = await definition.onCompleted(tx, view(row), afterCommit);
        if (!completed.ok) abort(row, completed.reason, afterCommit);
      }
    }
    if (row.status === "compensating") {
      for (const step of [...definition.steps].reverse()) {
        if ((progress[step.id] as StepProgress).state !== "to-cancel") continue;
        const dependents = definition.steps.filter((s) => s.needs.includes(step.id));
        if (dependents.every((d) => NOTHING_TO_UNDO.has((progress[d.id] as StepProgress).state))) progress[step.id] = await begin(tx, row, step, "cancel");
      }
      if (Object.values(progress).every((p) => NOTHING_TO_UNDO.has(p.state))) {
        row.status = "compensated";
        await definition.onCompensated(tx, view(row), row.abortReason ?? "ABORTED", afterCommit);
      }
    }
    const dues = Object.values(progress).flatMap((p) => (AWAITING_ANSWER.has(p.state) && p.due ? [Date.parse(p.due)] : []));
    row.nextAttemptAt = dues.length > 0 ? new Date(Math.min(...dues)) : NEVER;
    row.updatedAt = clock.now();
  }

  /** Writes what a saga's progress changes; its id, tenant, type, context and creation time never change. */
  async function save(tx: Tx, row: SagaRow): Promise<void> {
    const { status, steps, nextAttemptAt, abortReason, updatedAt } = row;
    await tx.update(sagas).set({ status, steps, nextAttemptAt, abortReason, updatedAt }).where(eq(sagas.id, row.id));
  }

  /** Applies a participant's reply, in the transaction of the reply's inbox row. */
  async function handleReply(tx: Tx, reply: SagaReply, afterCommit: AfterCommit): Promise<void> {
    const [row] = await tx.select().from(sagas).where(eq(sagas.id, reply.sagaId)).for("update");
    if (!row || row.status === "completed" || row.status === "compensated") return;
    const p = row.steps[reply.step];
    if (reply.op === "try" && p?.state === "trying") {
      settle(row, reply.step, reply.outcome.ok ? "ok" : reply.outcome.reason, afterCommit);
      if (reply.outcome.ok) Object.assign(p, { state: "done", result: reply.outcome.result ?? null, due: undefined });
      else {
        Object.assign(p, { state: "refused", due: undefined });
        abort(row, reply.outcome.reason, afterCommit);
      }
    } else if (reply.op === "cancel" && p?.state === "cancelling") {
      settle(row, reply.step, "ok", afterCommit);
      Object.assign(p, { state: "cancelled", due: undefined });
    } else {
      return; // a late or repeated answer: the barrier answered it, the saga moved on
    }
    await advance(tx, row, afterCommit);
    await save(tx, row);
  }

  /** Whether the broker took the message: false while it is still in the outbox; its publication time if known. */
  async function publication(tx: Tx, messageId: string | undefined): Promise<{ published: boolean; at?: Date }> {
    if (!messageId) return { published: true };
    const [row] = await rows<{ status: string; published_at: Date | string | null }>(
      tx,
      sql`select status, published_at from outbox_messages where id = ${messageId}`,
    );
    if (!row) return { published: true }; // purged long after it was sent
    if (row.status === "pending") return { published: false };
    return { published: true, ...(row.published_at ? { at: new Date(row.published_at) } : {}) };
  }

  /** Looks at a saga whose steps are due: resends what went unanswered, gives up what passed its deadline. */
  async function resume(tx: Tx, row: SagaRow, afterCommit: AfterCommit): Promise<void> {
    const definition = definitionOf(row.type);
    const now = clock.now();
    for (const step of definition.steps) {
      const p = row.steps[step.id] as StepProgress;
      if (!AWAITING_ANSWER.has(p.state) || !p.due || Date.parse(p.due) > now.getTime()) continue;
      const sent = await publication(tx, p.messageId);
      if (!sent.published) {
        // Still in the outbox (the broker is away): nothing was lost, no deadline runs, nothing to resend.
        p.due = later(delays[delays.length - 1] ?? 1_000);
        continue;
      }
      p.publishedAt ??= (sent.at ?? now).toISOString();
      if (p.state === "trying" && step.deadlineMs !== undefined && now.getTime() - Date.parse(p.publishedAt) >= step.deadlineMs) {
        log.warn({ sagaId: row.id, step: step.id, attempts: p.attempts }, "a saga step did not answer in time; the saga compensates");
        settle(row, step.id, STEP_TIMEOUT, afterCommit);
        abort(row, STEP_TIMEOUT, afterCommit);
        break;
      }
      Object.assign(p, { attempts: p.attempts + 1, messageId: await send(tx, row, step, p.state === "trying" ? "try" : "cancel") });
      p.due = later(resendDelayMs(p.attempts));
    }
    await advance(tx, row, afterCommit);
    await save(tx, row);
  }

  return {
    handleReply,

    register<C>(definition: SagaDefinition<C>): void {
      const seen = new Set<string>();
      for (const step of definition.steps) {
        const missing = step.needs.find((n) => !seen.has(n));
        if (missing) throw new Error(`saga ${definition.type}: step ${step.id} needs ${missing}, which must come before it`);
        seen.add(step.id);
      }
      definitions.set(definition.type, definition as SagaDefinition<unknown>);
    },

    /** Starts a saga in the caller's transaction: its first commands leave when that commits. */
    async start<C>(tx: Tx, type: string, saga: { id: string; tenantId: string; context: C }, afterCommit: AfterCommit = () => {}): Promise<void> {
      const definition = definitionOf(type);
      const now = clock.now();
      const row: SagaRow = {
        id: saga.id,
        tenantId: saga.tenantId,
        type,
        status: "running",
        context: saga.context,
        steps: Object.fromEntries(definition.steps.map((s) => [s.id, { state: "waiting", attempts: 0 } satisfies StepProgress])),
        nextAttemptAt: NEVER,
        abortReason: null,
        createdAt: now,
        updatedAt: now,
      };
      await advance(tx, row, afterCommit);
      await tx.insert(sagas).values(row);
    },

    /**
     * Looks at every saga with a step due (one short transaction each, claimed with SKIP LOCKED so
     * many replicas can run it).
     */
    async resumeDue(database: Database, batch = 100): Promise<number> {
      let resumed = 0;
      for (; resumed < batch; resumed++) {
        const work: (() => Promise<void>)[] = [];
        const more = await transaction(database.db, async (tx) => {
          const [row] = await tx
            .select()
            .from(sagas)
            .where(and(inArray(sagas.status, ["running", "compensating"]), lte(sagas.nextAttemptAt, clock.now())))
            .orderBy(asc(sagas.nextAttemptAt))
            .limit(1)
            .for("update", { skipLocked: true });
          if (!row) return false;
          await resume(tx, row, (w) => work.push(w));
          return true;
        });
        for (const w of work) await w();
        if (!more) break;
      }
      return resumed;
    },

    /** The coordinator's effect for a reply message (applied once, through the caller's inbox). */
    replyEffect: (tx: Tx, message: BusMessage, afterCommit: AfterCommit) => handleReply(tx, message.payload as SagaReply, afterCommit),
  };
}

export type SagaRunner = ReturnType<typeof createSagaRunner>;

export interface ParticipantStep {
  try(tx: Tx, tenantId: string, command: SagaCommandPayload): Promise<StepOutcome>;
  cancel(tx: Tx, tenantId: string, command: SagaCommandPayload): Promise<void>;
  confirm?(tx: Tx, tenantId: string, command: SagaCommandPayload): Promise<void>;
}

/**
 * The effect of a saga command at the service that owns the step: the operation runs behind the
 * barrier in the caller's tenant transaction (with its inbox row), and its reply leaves through the
 * outbox. Confirms are sent without waiting for an answer.
 */
export function participantEffect(deps: { barrier: Barrier; outbox: Outbox; steps: Record<string, ParticipantStep> }) {
  const { barrier, outbox, steps } = deps;
  return async (tx: Tx, message: BusMessage): Promise<void> => {
    const command = message.payload as SagaCommandPayload;
    const step = steps[command.step];
    if (!step) throw new Error(`no step ${command.step} here`);
    const key = { tenantId: message.tenantId, sagaId: command.sagaId, step: command.step };
    const result = await barrier.run(tx, key, command.op, async (): Promise<StepOutcome> => {
      if (command.op === "try") return step.try(tx, message.tenantId, command);
      if (command.op === "cancel") await step.cancel(tx, message.tenantId, command);
      else await step.confirm?.(tx, message.tenantId, command);
      return { ok: true };
    });
    if (command.op === "confirm") return;
    const outcome: StepOutcome =
      result.kind === "skipped" ? (command.op === "try" ? { ok: false, reason: "CANCELLED" } : { ok: true }) : (result.outcome as StepOutcome);
    const reply: SagaReply = { sagaId: command.sagaId, step: command.step, op: command.op, outcome };
    await outbox.enqueue(tx, { tenantId: message.tenantId, topic: SAGA_REPLY_TOPIC, payload: reply });
  };
}
