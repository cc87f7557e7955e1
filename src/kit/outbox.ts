import { sql } from "drizzle-orm";
import type { Tx } from "../db/client.ts";
import type { Clock } from "./clock.ts";
import type { IdGenerator } from "./ids.ts";

export const OUTBOX_CHANNEL = "orderly_outbox";

/** Writes messages in the caller's transaction: they exist exactly when the change they announce does. */
export function createOutbox(deps: { clock: Clock; newId: IdGenerator }) {
  return {
    /** Queues one message and wakes every relay when the transaction commits (NOTIFY is transactional). */
    async enqueue(tx: Tx, message: { tenantId: string; topic: string; payload: unknown }): Promise<string> {
      const id = deps.newId("msg");
      const now = deps.clock.now().toISOString();
      await tx.execute(sql`
        with m as (
          insert into outbox_messages (id, tenant_id, topic, payload, status, next_attempt_at, created_at)
          values (${id}, ${message.tenantId}, ${message.topic}, ${JSON.stringify(message.payload)}::jsonb, 'pending', ${now}::timestamptz, ${now}::timestamptz)
          returning id
        )
        select id, pg_notify(${OUTBOX_CHANNEL}, '') from m`);
      return id;
    },
  };
}

export type Outbox = ReturnType<typeof createOutbox>;
