import { sql } from "drizzle-orm";
import type { Tx } from "../db/client.ts";
import type { Clock } from "./clock.ts";
import type { IdGenerator } from "./ids.ts";

export const OUTBOX_CHANNEL = "orderly_outbox";

/** Writes messages in the caller's transaction: they exist exactly when the change they announce does. */
export function createOutbox(deps: { clock: Clock; newId: IdGenerator }) {
  return {
    /**
     * Queues one message and wakes every relay when the transaction commits (NOTIFY is transactional).
     * With `consumer` and `redriveOf`: a re-drive of message `redriveOf` to that one consumer only.
     */
    async enqueue(tx: Tx, message: { tenantId: string; topic: string; payload: unknown; consumer?: string; redriveOf?: string }): Promise<string> {
      const id = deps.newId("msg");
      const now = deps.clock.now().toISOString();
      await tx.execute(sql`
        with m as (
          insert into outbox_messages (id, tenant_id, topic, payload, consumer, redrive_of, status, next_attempt_at, created_at)
          values (${id}, ${message.tenantId}, ${message.topic}, ${JSON.stringify(message.payload)}::jsonb, ${message.consumer ?? null}, ${message.redriveOf ?? null},
                  'pending', ${now}::timestamptz, ${now}::timestamptz)
          returning id
        )
        select id, pg_notify(${OUTBOX_CHANNEL}, '') from m`);
      return id;
    },
  };
}

export type Outbox = ReturnType<typeof createOutbox>;
