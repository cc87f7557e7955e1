import { createHash } from "node:crypto";
import { and, desc, eq, sql } from "drizzle-orm";
import { type Db, type Queryable, transaction, type Tx } from "../db/client.ts";
import type { BusMessage } from "./bus.ts";
import type { Clock } from "./clock.ts";
import type { IdGenerator } from "./ids.ts";
import { createOutbox, OUTBOX_CHANNEL } from "./outbox.ts";
import { type Outcome, ok, refuse } from "./outcome.ts";
import { deadLetterActions, deadLetters, outboxMessages } from "./schema.ts";

export type DeadLetter = typeof deadLetters.$inferSelect;
export type DeadLetterAction = "retry" | "skip" | "resolve";
/** Why an action was refused: no such letter, already closed, or (retry) nothing this database can send again. */
export type DeadLetterRefusal = "NOT_FOUND" | "NOT_OPEN" | "NOTHING_TO_REDRIVE";
/** The letter after the action, or the refusal with a one-line `detail` for the operator. */
export type DeadLetterOutcome = Outcome<DeadLetter, DeadLetterRefusal>;

export interface NewDeadLetter {
  tenantId: string;
  source: DeadLetter["source"];
  reference: string;
  consumer?: string;
  /** The message itself, so it can be re-driven from this database whichever database produced it. */
  topic?: string;
  payload?: unknown;
  reason: string;
  /** Makes recording idempotent: a second record with the same key records nothing (a redelivered failure). */
  key?: string;
}

/** Dead letters: work that failed past its retry limit, kept with its reason; every operator action audited. */
export function createDeadLetters(deps: { clock: Clock; newId: IdGenerator }) {
  const { clock, newId } = deps;
  const outbox = createOutbox({ clock, newId });

  async function record(q: Queryable, letter: NewDeadLetter): Promise<string> {
    const { key, ...fields } = letter;
    const id = key === undefined ? newId("dlq") : `dlq_${createHash("sha256").update(key).digest("hex").slice(0, 26)}`;
    const now = clock.now();
    await q
      .insert(deadLetters)
      .values({ id, ...fields, consumer: fields.consumer ?? null, topic: fields.topic ?? null, payload: fields.payload ?? null, status: "open", createdAt: now, updatedAt: now })
      .onConflictDoNothing();
    return id;
  }

  /** Sends the letter's work again, or says why it cannot. */
  async function redrive(tx: Tx, letter: DeadLetter): Promise<DeadLetterOutcome | undefined> {
    const now = clock.now();
    switch (letter.source) {
      case "saga":
        return refuse("NOTHING_TO_REDRIVE", `dead letter ${letter.id} is a saga's: a saga resends its own commands; nothing to re-drive — resolve or skip it`);
      case "outbox": {
        // The message goes out again under its own id: consumers that handled it skip it (inbox).
        const found = await tx
          .update(outboxMessages)
          .set({ status: "pending", attempts: 0, nextAttemptAt: now, claimedUntil: null })
          .where(eq(outboxMessages.id, letter.reference))
          .returning({ id: outboxMessages.id });
        if (found.length === 0) {
          return refuse("NOTHING_TO_REDRIVE", `dead letter ${letter.id}: outbox message ${letter.reference} is not in this database; retry it against the database of the service that sent it`);
        }
        await tx.execute(sql`select pg_notify(${OUTBOX_CHANNEL}, '')`);
        return undefined;
      }
      case "consumer": {
        if (letter.consumer === null || letter.topic === null) {
          return refuse("NOTHING_TO_REDRIVE", `dead letter ${letter.id} keeps no copy of its message; nothing to re-drive — resolve or skip it`);
        }
        // To the consumer that failed only, under the original id: its inbox still de-duplicates.
        await outbox.enqueue(tx, { tenantId: letter.tenantId, topic: letter.topic, payload: letter.payload, consumer: letter.consumer, redriveOf: letter.reference }, { notify: true });
        return undefined;
      }
    }
  }

  async function act(db: Db, id: string, action: DeadLetterAction, actor: string, note: string | null): Promise<DeadLetterOutcome> {
    return transaction(db, async (tx) => {
      const [letter] = await tx.select().from(deadLetters).where(eq(deadLetters.id, id)).for("update");
      if (!letter) return refuse("NOT_FOUND", `no dead letter ${id}`);
      if (letter.status !== "open") return refuse("NOT_OPEN", `dead letter ${id} is already ${letter.status}`);
      if (action === "retry") {
        const refused = await redrive(tx, letter);
        if (refused) return refused;
      }
      const now = clock.now();
      const status = ({ retry: "retried", skip: "skipped", resolve: "resolved" } as const)[action];
      const [updated] = await tx
        .update(deadLetters)
        .set({ status, note: note ?? letter.note, updatedAt: now })
        .where(eq(deadLetters.id, id))
        .returning();
      await tx.insert(deadLetterActions).values({ deadLetterId: id, action, actor, note, at: now });
      return ok(updated as DeadLetter);
    });
  }

  return {
    record,

    /**
     * A message a consumer gave up on, with a copy of it, in the consumer's own database. Recording
     * the same failure again (the message redelivered before it was parked) records nothing.
     */
    recordConsumerFailure(q: Queryable, failure: { message: BusMessage; consumer: string; reason: string }): Promise<string> {
      const { message, consumer, reason } = failure;
      return record(q, {
        tenantId: message.tenantId,
        source: "consumer",
        reference: message.id,
        consumer,
        topic: message.topic,
        payload: message.payload,
        reason,
        key: ["consumer", consumer, message.id, message.redriveId ?? ""].join("\u0000"),
      });
    },

    /** Newest first; one tenant's when `tenantId` is given; after `after` (a page's last letter) when given. */
    list(
      db: Db,
      filter: { status?: DeadLetter["status"]; tenantId?: string; limit?: number; after?: { at: Date; key: string } } = {},
    ): Promise<DeadLetter[]> {
      const { after } = filter;
      return db
        .select()
        .from(deadLetters)
        .where(
          and(
            filter.status ? eq(deadLetters.status, filter.status) : undefined,
            filter.tenantId === undefined ? undefined : eq(deadLetters.tenantId, filter.tenantId),
            after ? sql`(${deadLetters.createdAt}, ${deadLetters.id}) < (${after.at.toISOString()}::timestamptz, ${after.key})` : undefined,
          ),
        )
        .orderBy(desc(deadLetters.createdAt), desc(deadLetters.id))
        .limit(filter.limit ?? 100);
    },

    /** One letter (one tenant's when `tenantId` is given), or undefined. */
    async get(db: Db, id: string, tenantId?: string): Promise<DeadLetter | undefined> {
      const [letter] = await db
        .select()
        .from(deadLetters)
        .where(and(eq(deadLetters.id, id), tenantId === undefined ? undefined : eq(deadLetters.tenantId, tenantId)));
      return letter;
    },

    actions(db: Db, id: string) {
      return db.select().from(deadLetterActions).where(eq(deadLetterActions.deadLetterId, id)).orderBy(deadLetterActions.id);
    },

    /**
     * Sends the work again: an outbox letter's row back to pending; a consumer letter's message to
     * that consumer only (a new outbox row in this database). Refuses a saga letter (a saga resends
     * its own commands) and a letter whose message this database does not hold. Never pretends.
     */
    retry: (db: Db, id: string, actor: string) => act(db, id, "retry", actor, null),
    /** Gives up on it on purpose. */
    skip: (db: Db, id: string, actor: string) => act(db, id, "skip", actor, null),
    /** Marks it handled outside Orderly, with a note saying how. */
    resolve: (db: Db, id: string, actor: string, note: string) => act(db, id, "resolve", actor, note),
  };
}

export type DeadLetters = ReturnType<typeof createDeadLetters>;
