import { and, desc, eq, sql } from "drizzle-orm";
import type { Db, Queryable } from "../db/client.ts";
import type { Clock } from "./clock.ts";
import type { IdGenerator } from "./ids.ts";
import { OUTBOX_CHANNEL } from "./outbox.ts";
import { deadLetterActions, deadLetters, outboxMessages } from "./schema.ts";

export type DeadLetter = typeof deadLetters.$inferSelect;
export type DeadLetterAction = "retry" | "skip" | "resolve";

/** Dead letters: work that failed past its retry limit, kept with its reason; every operator action audited. */
export function createDeadLetters(deps: { clock: Clock; newId: IdGenerator }) {
  const { clock, newId } = deps;

  async function act(db: Db, id: string, action: DeadLetterAction, actor: string, note: string | null): Promise<DeadLetter | { error: string }> {
    return db.transaction(async (tx) => {
      const [letter] = await tx.select().from(deadLetters).where(eq(deadLetters.id, id)).for("update");
      if (!letter) return { error: `no dead letter ${id}` };
      if (letter.status !== "open") return { error: `dead letter ${id} is already ${letter.status}` };
      const now = clock.now();
      if (action === "retry") {
        // The message goes out again under its own id: consumers that handled it skip it (inbox).
        await tx
          .update(outboxMessages)
          .set({ status: "pending", attempts: 0, nextAttemptAt: now, claimedUntil: null })
          .where(eq(outboxMessages.id, letter.reference));
        await tx.execute(sql`select pg_notify(${OUTBOX_CHANNEL}, '')`);
      }
      const status = ({ retry: "retried", skip: "skipped", resolve: "resolved" } as const)[action];
      const [updated] = await tx
        .update(deadLetters)
        .set({ status, note: note ?? letter.note, updatedAt: now })
        .where(eq(deadLetters.id, id))
        .returning();
      await tx.insert(deadLetterActions).values({ deadLetterId: id, action, actor, note, at: now });
      return updated as DeadLetter;
    });
  }

  return {
    async record(q: Queryable, letter: { tenantId: string; source: DeadLetter["source"]; reference: string; consumer?: string; reason: string }): Promise<string> {
      const id = newId("dlq");
      const now = clock.now();
      await q.insert(deadLetters).values({ id, ...letter, consumer: letter.consumer ?? null, status: "open", createdAt: now, updatedAt: now });
      return id;
    },

    list(db: Db, filter: { status?: DeadLetter["status"]; limit?: number } = {}): Promise<DeadLetter[]> {
      return db
        .select()
        .from(deadLetters)
        .where(and(filter.status ? eq(deadLetters.status, filter.status) : undefined))
        .orderBy(desc(deadLetters.createdAt))
        .limit(filter.limit ?? 100);
    },

    actions(db: Db, id: string) {
      return db.select().from(deadLetterActions).where(eq(deadLetterActions.deadLetterId, id)).orderBy(deadLetterActions.id);
    },

    /** Sends the message out again (its outbox row back to pending). */
    retry: (db: Db, id: string, actor: string) => act(db, id, "retry", actor, null),
    /** Gives up on it on purpose. */
    skip: (db: Db, id: string, actor: string) => act(db, id, "skip", actor, null),
    /** Marks it handled outside Orderly, with a note saying how. */
    resolve: (db: Db, id: string, actor: string, note: string) => act(db, id, "resolve", actor, note),
  };
}

export type DeadLetters = ReturnType<typeof createDeadLetters>;
