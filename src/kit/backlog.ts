import { sql } from "drizzle-orm";
import { type Queryable, rows } from "../db/client.ts";

export interface Backlog {
  deadLettersOpen: number;
  outboxPending: number;
  /** Sagas running or compensating. */
  sagasActive: number;
}

/** Work the tx kit still has in hand, across tenants: for metrics, and to tell when a system is quiet. */
export async function backlogOf(q: Queryable): Promise<Backlog> {
  const [row] = await rows<{ dead: number; outbox: number; sagas: number }>(
    q,
    sql`select (select count(*) from dead_letters where status = 'open')::int as dead,
               (select count(*) from outbox_messages where status = 'pending')::int as outbox,
               (select count(*) from sagas where status in ('running', 'compensating'))::int as sagas`,
  );
  return { deadLettersOpen: row?.dead ?? 0, outboxPending: row?.outbox ?? 0, sagasActive: row?.sagas ?? 0 };
}
