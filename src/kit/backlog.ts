import { sql } from "drizzle-orm";
import { type Queryable, rows } from "../db/client.ts";

/** A saga not settled this long after it started counts as stuck (api-contract.md §6). */
export const STUCK_AFTER_MS = 30_000;

export interface Backlog {
  deadLettersOpen: number;
  outboxPending: number;
  /** Age of the oldest pending outbox message, 0 when none. */
  outboxOldestAgeSeconds: number;
  /** Sagas running or compensating. */
  sagasActive: number;
  /** Active sagas that started more than STUCK_AFTER_MS ago. */
  sagasStuck: number;
}

/**
 * Work the tx kit still has in hand, across tenants or of one tenant: for the backlog gauges
 * (refreshed by a background job, never at scrape time), the console's overview, and to tell when a
 * system is quiet. One round trip; each count reads a partial index of open work, so it costs what
 * the backlog is, not what the tables hold.
 */
export async function backlogOf(q: Queryable, now: Date = new Date(), tenantId?: string): Promise<Backlog> {
  const stuckBefore = new Date(now.getTime() - STUCK_AFTER_MS).toISOString();
  const ofTenant = tenantId === undefined ? sql`` : sql` and tenant_id = ${tenantId}`;
  const [row] = await rows<{ dead: number; outbox: number; oldest: string | Date | null; sagas: number; stuck: number }>(
    q,
    sql`select (select count(*) from dead_letters where status = 'open'${ofTenant})::int as dead,
               (select count(*) from outbox_messages where status = 'pending'${ofTenant})::int as outbox,
               (select min(created_at) from outbox_messages where status = 'pending'${ofTenant}) as oldest,
               (select count(*) from sagas where status in ('running', 'compensating')${ofTenant})::int as sagas,
               (select count(*) from sagas where status in ('running', 'compensating') and created_at < ${stuckBefore}::timestamptz${ofTenant})::int as stuck`,
  );
  const oldest = row?.oldest ? new Date(row.oldest).getTime() : undefined;
  return {
    deadLettersOpen: row?.dead ?? 0,
    outboxPending: row?.outbox ?? 0,
    outboxOldestAgeSeconds: oldest === undefined ? 0 : Math.max(0, (now.getTime() - oldest) / 1000),
    sagasActive: row?.sagas ?? 0,
    sagasStuck: row?.stuck ?? 0,
  };
}
