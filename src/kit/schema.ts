import { sql } from "drizzle-orm";
import { bigserial, index, integer, jsonb, pgTable, primaryKey, text, timestamp } from "drizzle-orm/pg-core";
import type { StepProgress } from "./saga.ts";

/**
 * Idempotency keys of POST requests (Stripe's semantics), scoped to (tenant, user, key). The first
 * answer is stored with the key, in the same transaction as the effect whenever there is one.
 */
export const idempotencyKeys = pgTable(
  "idempotency_keys",
  {
    tenantId: text("tenant_id").notNull(),
    userId: text("user_id").notNull(),
    key: text("key").notNull(),
    fingerprint: text("fingerprint").notNull(),
    status: text("status", { enum: ["in_progress", "done"] }).notNull(),
    claimToken: text("claim_token").notNull(),
    responseStatus: integer("response_status"),
    responseBody: jsonb("response_body"),
    responseHeaders: jsonb("response_headers").$type<Record<string, string>>(),
    createdAt: timestamp("created_at", { withTimezone: true }).notNull(),
    claimedAt: timestamp("claimed_at", { withTimezone: true }).notNull(),
  },
  (t) => [primaryKey({ columns: [t.tenantId, t.userId, t.key] }), index("idempotency_keys_age").on(t.createdAt)],
);

/**
 * Transactional outbox: a message is a row written in the same transaction as the change it
 * announces; the relay publishes it and marks it. Delivery is at least once.
 */
export const outboxMessages = pgTable(
  "outbox_messages",
  {
    id: text("id").primaryKey(),
    tenantId: text("tenant_id").notNull(),
    topic: text("topic").notNull(),
    payload: jsonb("payload").notNull(),
    status: text("status", { enum: ["pending", "published", "dead"] }).notNull(),
    /** Set when the message is for one consumer only (a dead letter re-driven to the consumer that failed it). */
    consumer: text("consumer"),
    /** The id of the message this row sends again, when it is a re-drive: consumers know it by that id (inbox). */
    redriveOf: text("redrive_of"),
    /** W3C trace context of the change that wrote the message, carried to its consumers. */
    traceparent: text("traceparent"),
    attempts: integer("attempts").notNull().default(0),
    nextAttemptAt: timestamp("next_attempt_at", { withTimezone: true }).notNull(),
    claimedUntil: timestamp("claimed_until", { withTimezone: true }),
    lastError: text("last_error"),
    createdAt: timestamp("created_at", { withTimezone: true }).notNull(),
    publishedAt: timestamp("published_at", { withTimezone: true }),
  },
  (t) => [
    index("outbox_due").on(t.nextAttemptAt).where(sql`${t.status} = 'pending'`),
    index("outbox_published").on(t.publishedAt).where(sql`${t.status} = 'published'`),
  ],
);

/** Inbox: one row per (consumer, message) handled, written with the handler's effect. */
export const inboxMessages = pgTable(
  "inbox_messages",
  {
    consumer: text("consumer").notNull(),
    messageId: text("message_id").notNull(),
    tenantId: text("tenant_id").notNull(),
    processedAt: timestamp("processed_at", { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [primaryKey({ columns: [t.consumer, t.messageId] }), index("inbox_age").on(t.processedAt)],
);

/**
 * Saga barrier (after dtm): one row per (saga, step, operation). The unique key alone gives
 * idempotent try/confirm/cancel, null compensation (a cancel before its try leaves a tombstone try
 * row) and no hanging (a try arriving after its cancel finds that row and does nothing).
 */
export const sagaBarriers = pgTable(
  "saga_barriers",
  {
    tenantId: text("tenant_id").notNull(),
    sagaId: text("saga_id").notNull(),
    step: text("step").notNull(),
    op: text("op", { enum: ["try", "confirm", "cancel"] }).notNull(),
    /** What the operation answered, so a duplicate gets the same answer; `tombstone` for a try never run. */
    outcome: jsonb("outcome"),
    createdAt: timestamp("created_at", { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [primaryKey({ columns: [t.sagaId, t.step, t.op] }), index("saga_barriers_age").on(t.createdAt)],
);

/** Work that failed past its retry limit, kept with its reason for an operator to retry, skip or resolve. */
export const deadLetters = pgTable(
  "dead_letters",
  {
    id: text("id").primaryKey(),
    tenantId: text("tenant_id").notNull(),
    source: text("source", { enum: ["outbox", "consumer", "saga"] }).notNull(),
    /** The outbox message id (for a consumer: the message it failed on; for a saga: the saga id). */
    reference: text("reference").notNull(),
    consumer: text("consumer"),
    /** The message itself (consumer letters), so it can be re-driven from here whichever database produced it. */
    topic: text("topic"),
    payload: jsonb("payload"),
    reason: text("reason").notNull(),
    status: text("status", { enum: ["open", "retried", "skipped", "resolved"] }).notNull(),
    note: text("note"),
    createdAt: timestamp("created_at", { withTimezone: true }).notNull(),
    updatedAt: timestamp("updated_at", { withTimezone: true }).notNull(),
  },
  (t) => [
    index("dead_letters_open").on(t.createdAt).where(sql`${t.status} = 'open'`),
    index("dead_letters_closed").on(t.updatedAt).where(sql`${t.status} <> 'open'`),
  ],
);

/** Every operator action on a dead letter. */
export const deadLetterActions = pgTable("dead_letter_actions", {
  id: bigserial("id", { mode: "number" }).primaryKey(),
  deadLetterId: text("dead_letter_id").notNull(),
  action: text("action", { enum: ["retry", "skip", "resolve"] }).notNull(),
  actor: text("actor").notNull(),
  note: text("note"),
  at: timestamp("at", { withTimezone: true }).notNull(),
});

/** A saga's state: where each of its steps stands, and when to look at it again. */
export const sagas = pgTable(
  "sagas",
  {
    id: text("id").primaryKey(),
    tenantId: text("tenant_id").notNull(),
    type: text("type").notNull(),
    status: text("status", { enum: ["running", "compensating", "completed", "compensated"] }).notNull(),
    context: jsonb("context").notNull(),
    /** Each step's progress by step id: its state, its result once done, its sends and their due times. */
    steps: jsonb("steps").$type<Record<string, StepProgress>>().notNull(),
    /** The earliest due time of a step awaiting an answer: what the resume job looks at. */
    nextAttemptAt: timestamp("next_attempt_at", { withTimezone: true }).notNull(),
    abortReason: text("abort_reason"),
    createdAt: timestamp("created_at", { withTimezone: true }).notNull(),
    updatedAt: timestamp("updated_at", { withTimezone: true }).notNull(),
  },
  (t) => [
    index("sagas_due").on(t.nextAttemptAt).where(sql`${t.status} in ('running', 'compensating')`),
    index("sagas_finished").on(t.updatedAt).where(sql`${t.status} in ('completed', 'compensated')`),
  ],
);

/**
 * Reconciliation runs (src/ops/reconciliation.ts): what the checks of contract §5 found, per scope
 * (the services a process runs), for operators. A kit table, so every service's database keeps its own.
 */
export const reconciliationRuns = pgTable(
  "reconciliation_runs",
  {
    id: text("id").primaryKey(),
    scope: text("scope").notNull(),
    checks: jsonb("checks").$type<string[]>().notNull(),
    startedAt: timestamp("started_at", { withTimezone: true }).notNull(),
    finishedAt: timestamp("finished_at", { withTimezone: true }).notNull(),
    findings: jsonb("findings").notNull(),
  },
  (t) => [index("reconciliation_runs_latest").on(t.scope, t.startedAt.desc())],
);
