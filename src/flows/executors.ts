import { z } from "zod";
import type { ServiceName } from "../config.ts";
import type { Tx } from "../db/client.ts";
import { ok, type Outcome } from "../kit/outcome.ts";
import type { Outbox } from "../kit/outbox.ts";
import type { ParticipantStep, SagaDefinition } from "../kit/saga.ts";
import { type AnyCommand, type AnyStep, COMMANDS, type Command, commandTopic, type OrderContext, STEPS, type StepModules, stepTopic } from "./steps.ts";

export type Results = Readonly<Record<string, unknown>>;

/** One step of a flow: which step, what it needs, and its command for an order (undefined: not needed). */
export interface FlowStep<C> {
  step: AnyStep;
  /** The step locks rows every order contends for (stock): the local executor runs it last and briefly. */
  hot?: boolean;
  /** Steps whose results the command reads. */
  needs?: readonly string[];
  command(context: C, results: Results): object | undefined;
}

/**
 * A flow defined once, run by either executor: the local one (every step in one transaction, in
 * list order) or the saga one (steps as commands to their owners, each once its needs are done).
 */
export interface Flow<C extends OrderContext> {
  type: string;
  /** In an order that puts every step after the steps it needs; the local executor runs them in this order. */
  steps: readonly FlowStep<C>[];
  /** Whether the saga gives up on an owner that does not answer (and compensates), or waits for it. */
  givesUp: boolean;
}

/**
 * The local executor as TypeScript: runs the flow's steps in the caller's transaction, in list order,
 * the hot ones last. A refusal is returned; the caller rolls the transaction back, so nothing a step
 * did remains. (The placement runs as one composed statement instead: src/flows/composed.ts.)
 */
export async function runSteps<C extends OrderContext>(
  m: StepModules,
  flow: Flow<C>,
  tx: Tx,
  tenantId: string,
  context: C,
  options: { confirm: boolean },
): Promise<Outcome<Results, string>> {
  const results: Record<string, unknown> = {};
  const run = async (steps: readonly FlowStep<C>[]): Promise<Outcome<void, string>> => {
    for (const { step, command } of steps) {
      const payload = command(context, results);
      if (payload === undefined) continue;
      const outcome = await step.try(m, tx, tenantId, payload, { confirm: options.confirm });
      if (!outcome.ok) return outcome;
      results[step.id] = outcome.value;
    }
    return ok(undefined);
  };
  const first = await run(flow.steps.filter((s) => !s.hot));
  if (!first.ok) return first;
  const hot = await run(flow.steps.filter((s) => s.hot));
  return hot.ok ? ok(results) : hot;
}

/** The saga executor's half at the coordinator: the flow as a saga definition for the runner. */
export function sagaOf<C extends OrderContext>(
  flow: Flow<C>,
  deadlineMs: number,
  finish: Pick<SagaDefinition<C>, "onCompleted" | "onCompensated">,
): SagaDefinition<C> {
  return {
    type: flow.type,
    steps: flow.steps.map(({ step, needs, command }) => ({
      id: step.id,
      topic: stepTopic(step),
      needs: needs ?? [],
      command: (context: C, results: Results) => command(context, results) as Record<string, unknown> | undefined,
      reference: (context: C) => ({ orderId: context.orderId }),
      deadlineMs: flow.givesUp ? deadlineMs : undefined,
    })),
    ...finish,
  };
}

const Reference = z.object({ orderId: z.string().min(1).max(64) });

/** The saga executor's half at an owner: its steps as the participant runs them, payloads validated first. */
export function participantSteps(m: StepModules, owner: ServiceName): Record<string, ParticipantStep> {
  return Object.fromEntries(
    STEPS.filter((step) => step.owner === owner).map((step) => [
      step.id,
      {
        async try(tx, tenantId, command) {
          const outcome = await step.try(m, tx, tenantId, step.payload.parse(command), { confirm: false });
          return outcome.ok ? { ok: true, result: outcome.value ?? null } : { ok: false, reason: outcome.reason };
        },
        cancel: (tx, tenantId, command) => step.cancel(m, tx, tenantId, Reference.parse(command).orderId),
        ...(step.confirm ? { confirm: (tx: Tx, tenantId: string, command: unknown) => step.confirm!(m, tx, tenantId, Reference.parse(command).orderId) } : {}),
      } satisfies ParticipantStep,
    ]),
  );
}

/** An owner's plain commands (not saga steps), by topic. */
export function commandRoutes(m: StepModules, owner: ServiceName) {
  return COMMANDS.filter((c) => c.owner === owner).map((command: AnyCommand) => ({
    topic: commandTopic(command),
    effect: (tx: Tx, message: { tenantId: string; payload: unknown }) => command.run(m, tx, message.tenantId, command.payload.parse(message.payload)),
  }));
}

/**
 * What the coordinator asks of other services outside a running saga (cancelling a CREATED order's
 * holds, confirming a paid order's reservation, updating its shipment): in the all-in-one, done at
 * once in the caller's transaction; in the split deployment, sent as commands through the outbox.
 * The barrier key of a step's cancel and confirm is the order's placement (saga id = order id).
 */
export interface Effects {
  cancel(tx: Tx, tenantId: string, orderId: string, steps: readonly AnyStep[]): Promise<void>;
  confirm(tx: Tx, tenantId: string, orderId: string, step: AnyStep): Promise<void>;
  send<P>(tx: Tx, tenantId: string, command: Command<P>, payload: P): Promise<void>;
}

export function localEffects(m: StepModules): Effects {
  return {
    async cancel(tx, tenantId, orderId, steps) {
      for (const step of steps) await step.cancel(m, tx, tenantId, orderId);
    },
    confirm: async (tx, tenantId, orderId, step) => step.confirm?.(m, tx, tenantId, orderId),
    send: (tx, tenantId, command, payload) => command.run(m, tx, tenantId, command.payload.parse(payload)),
  };
}

export function messageEffects(outbox: Outbox): Effects {
  const stepCommand = (tx: Tx, tenantId: string, orderId: string, step: AnyStep, op: "cancel" | "confirm") =>
    outbox.enqueue(tx, { tenantId, topic: stepTopic(step), payload: { sagaId: orderId, step: step.id, op, orderId } });
  return {
    async cancel(tx, tenantId, orderId, steps) {
      for (const step of steps) await stepCommand(tx, tenantId, orderId, step, "cancel");
    },
    async confirm(tx, tenantId, orderId, step) {
      if (step.confirm) await stepCommand(tx, tenantId, orderId, step, "confirm");
    },
    async send(tx, tenantId, command, payload) {
      await outbox.enqueue(tx, { tenantId, topic: commandTopic(command), payload });
    },
  };
}
