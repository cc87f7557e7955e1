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

const announceCommitted = () => {
  for (const listener of committedListeners) listener();
};

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
      const now = deps.clock.now().toISOString();
      await tx.execute(sql`
        insert into outbox_messages (id, tenant_id, topic, payload, consumer, redrive_of, status, next_attempt_at, created_at)
        values (${id}, ${message.tenantId}, ${message.topic}, ${JSON.stringify(message.payload)}::jsonb, ${message.consumer ?? null}, ${message.redriveOf ?? null},
                'pending', ${now}::timestamptz, ${now}::timestamptz)`);
      if (options.notify) await tx.execute(sql`select pg_notify(${OUTBOX_CHANNEL}, '')`);
      afterCommit(tx, announceCommitted);
      return id;
    },
  };
}

export type Outbox = ReturnType<typeof createOutbox>;
