import type { FastifyPluginAsyncZod } from "fastify-type-provider-zod";
import { z } from "zod";
import type { Database } from "../../db/client.ts";
import { backlogOf } from "../../kit/backlog.ts";
import type { Clock } from "../../kit/clock.ts";
import { encodeCursor, page } from "../../kit/cursor.ts";
import type { DeadLetter, DeadLetterOutcome, DeadLetters } from "../../kit/dead-letters.ts";
import { AppError } from "../../kit/errors.ts";
import { ofTenant, type Reconciliation } from "../../ops/reconciliation.ts";
import type { Operations } from "../../ops/timeline.ts";
import { requireAdmin } from "../context.ts";
import { ListQuery, Order, problems } from "../schemas.ts";
import type { ReadinessCheck } from "./ops.ts";
import { cursorOf } from "./products.ts";

const Timestamp = z.string().describe("ISO 8601 UTC");

const TimelineEvent = z
  .object({
    at: Timestamp,
    kind: z.enum(["state", "saga", "saga-step", "message", "message-handled", "payment", "notification", "dead-letter", "dead-letter-action"]),
    title: z.string(),
    durationMs: z.number().nullable(),
    traceId: z.string().nullable(),
    ref: z.string().nullable().describe("the saga, message, payment or dead letter it is about"),
    details: z.record(z.string(), z.unknown()),
  })
  .meta({ id: "TimelineEvent" });
const Timeline = z.object({ order: Order, events: z.array(TimelineEvent) }).meta({ id: "Timeline" });

const StepOperation = z.object({ op: z.enum(["try", "cancel"]), sentAt: Timestamp, settledAt: Timestamp.optional(), outcome: z.string().optional() });
const Saga = z
  .object({
    id: z.string(),
    type: z.string(),
    status: z.enum(["running", "compensating", "completed", "compensated"]),
    stuck: z.boolean(),
    orderId: z.string().nullable(),
    abortReason: z.string().nullable(),
    steps: z.array(z.object({ step: z.string(), state: z.string(), attempts: z.number().int(), ops: z.array(StepOperation) })),
    createdAt: Timestamp,
    updatedAt: Timestamp,
  })
  .meta({ id: "Saga" });
const SagaQuery = ListQuery.extend({ state: z.enum(["running", "compensating", "stuck"]).default("running") });

const DEAD_LETTER_STATUSES = ["open", "retried", "skipped", "resolved"] as const;
const DeadLetterAction = z.object({ action: z.enum(["retry", "skip", "resolve"]), actor: z.string(), note: z.string().nullable(), at: Timestamp });
const DeadLetterSchema = z
  .object({
    id: z.string(),
    tenantId: z.string(),
    source: z.enum(["outbox", "consumer", "saga"]),
    reference: z.string().describe("the message (outbox, consumer) or saga it is about"),
    consumer: z.string().nullable(),
    topic: z.string().nullable(),
    payload: z.unknown().describe("the message, when the letter keeps a copy"),
    reason: z.string(),
    status: z.enum(DEAD_LETTER_STATUSES),
    note: z.string().nullable(),
    createdAt: Timestamp,
    updatedAt: Timestamp,
  })
  .meta({ id: "DeadLetter" });
const DeadLetterDetail = DeadLetterSchema.extend({ actions: z.array(DeadLetterAction) }).meta({ id: "DeadLetterDetail" });
const DeadLetterQuery = ListQuery.extend({ status: z.enum([...DEAD_LETTER_STATUSES, "all"]).default("open") });
const IdParams = z.strictObject({ id: z.string().min(1).max(64) });
const ResolveBody = z.strictObject({ note: z.string().trim().min(1).max(2000).describe("how it was handled outside Orderly") });

const Status = z
  .object({
    operator: z.object({ tenantId: z.string(), userId: z.string() }).describe("who the token signed in, as the server reads it"),
    checks: z.record(z.string(), z.enum(["ok", "unavailable"])).describe("what /readyz checks, as the answering process sees it"),
    backlog: z.object({
      outboxPending: z.number().int(),
      outboxOldestAgeSeconds: z.number(),
      sagasActive: z.number().int(),
      sagasStuck: z.number().int(),
      deadLettersOpen: z.number().int(),
    }),
    at: Timestamp,
  })
  .meta({ id: "OperationsStatus" });

const Finding = z.object({
  tenantId: z.string(),
  check: z.string(),
  subject: z.string(),
  detail: z.string(),
  repaired: z.boolean().describe("put right by the run (one right answer); false: left for an operator"),
});
const Run = z
  .object({
    id: z.string(),
    scope: z.string().describe("the services whose tables it checked"),
    checks: z.array(z.string()),
    startedAt: Timestamp,
    finishedAt: Timestamp,
    findings: z.array(Finding).describe("what the checks found for the caller's tenant; empty when all holds"),
  })
  .meta({ id: "ReconciliationRun" });

const letterView = (l: DeadLetter) => ({ ...l, payload: l.payload ?? null, createdAt: l.createdAt.toISOString(), updatedAt: l.updatedAt.toISOString() });

/** The refusal of a dead-letter action as a problem: it names why, never pretends (api-contract.md §6). */
function refusalOf(outcome: Extract<DeadLetterOutcome, { ok: false }>): AppError {
  const detail = outcome.detail ?? outcome.reason;
  switch (outcome.reason) {
    case "NOT_FOUND":
      return new AppError("DEAD_LETTER_NOT_FOUND", detail);
    case "NOT_OPEN":
      return new AppError("DEAD_LETTER_NOT_OPEN", detail);
    case "NOTHING_TO_REDRIVE":
      return new AppError("NOTHING_TO_REDRIVE", detail);
  }
}

/**
 * The operators' API (api-contract.md §6), admins only, each on their own tenant: an order's
 * timeline, sagas by state, dead letters with audited retry / skip / resolve, and health and
 * backlog at a glance.
 */
export function adminRoutes(deps: {
  database: Database;
  operations: Operations;
  deadLetters: DeadLetters;
  reconciliation: Reconciliation;
  clock: Clock;
  checks: readonly ReadinessCheck[];
}): FastifyPluginAsyncZod {
  const { database, operations, deadLetters, reconciliation, clock, checks } = deps;
  return async (app) => {
    app.addHook("onRequest", requireAdmin);

    app.get(
      "/admin/status",
      {
        schema: {
          tags: ["operations"],
          operationId: "getOperationsStatus",
          summary: "Health and backlog at a glance (admin)",
          description:
            "The answering process's readiness checks, each ok or unavailable (never failing the request itself), and the caller's tenant's backlog: " +
            "outbox messages not yet published and the age of the oldest, sagas running or compensating and those stuck (not settled 30 s after they started), open dead letters.",
          response: { 200: Status, ...problems(401, 403) },
        },
      },
      async (request) => {
        const { tenantId, userId } = request.identity!;
        const results = await Promise.allSettled(checks.map((check) => check.ping()));
        const now = clock.now();
        const backlog = await backlogOf(database.db, now, tenantId);
        return {
          operator: { tenantId, userId },
          checks: Object.fromEntries(checks.map((check, i) => [check.name, results[i]?.status === "fulfilled" ? ("ok" as const) : ("unavailable" as const)])),
          backlog,
          at: now.toISOString(),
        };
      },
    );

    const reconciliationDescription =
      "The checks of contract §5 (stock balances and reservations, wallets, refunds waiting, coupon counters, orders PENDING too long, " +
      "and across services where one process holds every table they read) run every 10 minutes by one replica. " +
      "Each finding names its check, what it is about, what is wrong and whether the run repaired it (what has one right answer: coupon counters, a cancelled order's leftover reservation, redemption or shipment, a paid order's reservation not yet a sale); the rest is for an operator. In a split deployment each service checks its own tables, " +
      "and this lists the runs this database holds.";
    app.get(
      "/admin/reconciliation",
      {
        schema: {
          tags: ["operations"],
          operationId: "getReconciliation",
          summary: "The latest reconciliation runs and what they found (admin)",
          description: reconciliationDescription,
          response: { 200: z.object({ runs: z.array(Run) }), ...problems(401, 403) },
        },
      },
      async (request) => ({ runs: await reconciliation.latest(request.identity!.tenantId) }),
    );
    app.post(
      "/admin/reconciliation",
      {
        schema: {
          tags: ["operations"],
          operationId: "runReconciliation",
          summary: "Run the reconciliation now, in the answering process (admin)",
          description: reconciliationDescription,
          response: { 200: Run, ...problems(401, 403) },
        },
      },
      async (request) => {
        // Waits for a run on another replica to end, so it always runs and answers one.
        const run = (await reconciliation.run({ wait: true }))!;
        return { ...run, findings: ofTenant(run.findings, request.identity!.tenantId) };
      },
    );

    app.get(
      "/admin/orders/:id/timeline",
      {
        schema: {
          tags: ["operations"],
          operationId: "getOrderTimeline",
          summary: "One order's timeline (admin)",
          description:
            "The order, then everything that happened to it in time order: state moves, sagas and each step's try and cancel with durations, " +
            "outbox messages (with the trace id stored with them) and which consumers handled them, payments from callbacks, each attempt to deliver a webhook about it, dead letters and the actions taken on them. " +
            "In a split deployment whose services each have their own database, it shows what the orders service's database holds.",
          params: IdParams,
          response: { 200: Timeline, ...problems(400, 401, 403, 404) },
        },
      },
      async (request) => {
        const timeline = await operations.timeline(request.identity!.tenantId, request.params.id);
        if (!timeline) throw new AppError("ORDER_NOT_FOUND", `no order ${request.params.id}`);
        return timeline;
      },
    );

    app.get(
      "/admin/sagas",
      {
        schema: {
          tags: ["operations"],
          operationId: "listSagas",
          summary: "Sagas by state, newest first (admin)",
          description: "`state`: running (default), compensating, or stuck (running or compensating and started more than 30 s ago).",
          querystring: SagaQuery,
          response: { 200: z.object({ data: z.array(Saga), nextCursor: z.string().nullable() }), ...problems(400, 401, 403) },
        },
      },
      async (request) => {
        const { state, limit, cursor } = request.query;
        const found = await operations.listSagas(request.identity!.tenantId, { state, limit, after: cursorOf(cursor) });
        return page(found, limit, (s) => encodeCursor(new Date(s.createdAt), s.id));
      },
    );

    app.get(
      "/admin/dead-letters",
      {
        schema: {
          tags: ["operations"],
          operationId: "listDeadLetters",
          summary: "Dead letters by status, newest first (admin)",
          querystring: DeadLetterQuery,
          response: { 200: z.object({ data: z.array(DeadLetterSchema), nextCursor: z.string().nullable() }), ...problems(400, 401, 403) },
        },
      },
      async (request) => {
        const { status, limit, cursor } = request.query;
        const letters = await deadLetters.list(database.db, {
          tenantId: request.identity!.tenantId,
          status: status === "all" ? undefined : status,
          limit: limit + 1,
          after: cursorOf(cursor),
        });
        const found = page(letters, limit, (l) => encodeCursor(l.createdAt, l.id));
        return { data: found.data.map(letterView), nextCursor: found.nextCursor };
      },
    );

    const detail = async (tenantId: string, id: string) => {
      const letter = await deadLetters.get(database.db, id, tenantId);
      if (!letter) throw new AppError("DEAD_LETTER_NOT_FOUND", `no dead letter ${id}`);
      const actions = await deadLetters.actions(database.db, id);
      return { ...letterView(letter), actions: actions.map((a) => ({ action: a.action, actor: a.actor, note: a.note, at: a.at.toISOString() })) };
    };

    app.get(
      "/admin/dead-letters/:id",
      {
        schema: {
          tags: ["operations"],
          operationId: "getDeadLetter",
          summary: "One dead letter with its audit trail (admin)",
          params: IdParams,
          response: { 200: DeadLetterDetail, ...problems(400, 401, 403, 404) },
        },
      },
      async (request) => detail(request.identity!.tenantId, request.params.id),
    );

    const act = (operationId: string, summary: string, description: string, run: (id: string, actor: string, note: string | undefined) => Promise<DeadLetterOutcome>, body?: typeof ResolveBody) =>
      ({
        schema: {
          tags: ["operations"],
          operationId,
          summary,
          description,
          params: IdParams,
          ...(body ? { body } : {}),
          response: { 200: DeadLetterDetail, ...problems(400, 401, 403, 404, 409) },
        },
        handler: async (request: { identity?: { tenantId: string; userId: string }; params: { id: string }; body?: unknown }) => {
          const { tenantId, userId } = request.identity!;
          // Someone else's letter answers 404, exactly as a missing one (api-contract.md §3).
          if (!(await deadLetters.get(database.db, request.params.id, tenantId))) throw new AppError("DEAD_LETTER_NOT_FOUND", `no dead letter ${request.params.id}`);
          const outcome = await run(request.params.id, userId, (request.body as { note?: string } | undefined)?.note);
          if (!outcome.ok) throw refusalOf(outcome);
          return detail(tenantId, request.params.id);
        },
      }) as const;

    const retry = act(
      "retryDeadLetter",
      "Re-drive a dead letter (admin, audited)",
      "An outbox letter's message is sent again; a consumer letter's message goes again to that consumer only, under its original id (its inbox still de-duplicates). " +
        "409 NOTHING_TO_REDRIVE says why when it cannot be re-driven (a saga's letter: a saga resends its own commands; a message this database does not hold); " +
        "409 DEAD_LETTER_NOT_OPEN when already closed.",
      (id, actor) => deadLetters.retry(database.db, id, actor),
    );
    app.post("/admin/dead-letters/:id/retry", { schema: retry.schema }, retry.handler);

    const skip = act("skipDeadLetter", "Give up on a dead letter on purpose (admin, audited)", "409 DEAD_LETTER_NOT_OPEN when already closed.", (id, actor) => deadLetters.skip(database.db, id, actor));
    app.post("/admin/dead-letters/:id/skip", { schema: skip.schema }, skip.handler);

    const resolve = act(
      "resolveDeadLetter",
      "Mark a dead letter handled outside Orderly, with a note (admin, audited)",
      "409 DEAD_LETTER_NOT_OPEN when already closed.",
      (id, actor, note) => deadLetters.resolve(database.db, id, actor, note as string),
      ResolveBody,
    );
    app.post("/admin/dead-letters/:id/resolve", { schema: resolve.schema }, resolve.handler);
  };
}
