import { sql } from "drizzle-orm";
import { afterCommit, type Tx } from "../db/client.ts";
import type { Clock } from "./clock.ts";
import type { IdGenerator } from "./ids.ts";

export const OUTBOX_CHANNEL = "orderly_outbox";

const committedListeners = new Set<() => void>();

/** Calls `listener` whenever a transaction of this process that queued messages commits. Returns the unsubscribe. */
export function onOutboxCommitted(listener: () => void): () => void {
  committedListeners.add(listener);
  return () => committedListeners.delete(listener);
}

/** Wakes this process's relays: called once a transaction that queued messages has committed. */
export function outboxCommitted(): void {
  for (const listener of committedListeners) listener();
}

/** A message as outbox_enqueue takes it inside a composed statement (src/flows/composed.ts). */
export interface OutboxDraft {
  id: string;
  topic: string;
  payload: unknown;
}

/** Writes messages in the caller's transaction: they exist exactly when the change they announce does. */
export function createOutbox(deps: { clock: Clock; newId: IdGenerator }) {
  return {
    /**
     * Queues one message. Once the transaction commits, the relays of this process are woken at once;
     * relays of other processes find it on their next poll, or at once with `notify` (a NOTIFY, for
     * writers that run no relay, such as the CLI: NOTIFY serialises commits, so never on the hot path).
     * With `consumer` and `redriveOf`: a re-drive of message `redriveOf` to that one consumer only.
     */
    async enqueue(
      tx: Tx,
      message: { tenantId: string; topic: string; payload: unknown; consumer?: string; redriveOf?: string },
      options: { notify?: boolean } = {},
    ): Promise<string> {
      const id = deps.newId("msg");
      await tx.execute(sql`
        select outbox_enqueue(${id}, ${message.tenantId}, ${message.topic}, ${JSON.stringify(message.payload)}::jsonb,
                              ${message.consumer ?? null}, ${message.redriveOf ?? null}, ${deps.clock.now().toISOString()}::timestamptz)`);
      if (options.notify) await tx.execute(sql`select pg_notify(${OUTBOX_CHANNEL}, '')`);
      afterCommit(tx, outboxCommitted);
      return id;
    },

    /** A message for a statement that enqueues it itself (outbox_enqueue); whoever commits it calls outboxCommitted(). */
    draft: (topic: string, payload: unknown): OutboxDraft => ({ id: deps.newId("msg"), topic, payload }),
  };
}

export type Outbox = ReturnType<typeof createOutbox>;
