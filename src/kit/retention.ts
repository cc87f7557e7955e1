import { type SQL, sql } from "drizzle-orm";
import { type Db, rows } from "../db/client.ts";

const HOUR_MS = 3_600_000;

/** Default of ORDERLY_RETENTION_HOURS: a week. */
export const DEFAULT_RETENTION_HOURS = 168;
/** Closed dead letters, and the audit of what was done to them, are kept this long after closing. */
export const CLOSED_DEAD_LETTER_RETENTION_MS = 30 * 24 * HOUR_MS;

export interface RetentionOptions {
  /** Published outbox rows, inbox rows, saga barriers and finished sagas older than this are purged (dead outbox rows go with their closed letter). */
  retentionMs: number;
  closedDeadLettersMs?: number;
  /** Rows one statement deletes at most (short statements, short locks). */
  batch?: number;
  /** Statements per kind of row in one run; what is left goes on the next run. */
  maxBatches?: number;
}

export type PurgedCounts = Record<"outbox" | "inbox" | "barriers" | "sagas" | "deadLetters", number>;

/**
 * Deletes the tx kit's rows that have served their purpose, in batches of `batch` rows, each batch
 * one statement that picks its rows through the age indexes with FOR UPDATE SKIP LOCKED: replicas
 * running the purge at once share the rows instead of waiting on each other.
 *
 * Why inbox rows and barriers must outlast any redelivery: they are what makes a message's effect
 * happen once. A message redelivered after its inbox row is gone is applied again (a second
 * shipment, a second refund); a saga's cancel that arrives after its try's barrier row is gone finds
 * no try, records a tombstone and releases nothing, leaving the reservation in place. A message can
 * come back long after it was handled: the broker redelivers what was unacknowledged when it went
 * down, a relay resends a row whose confirm was lost in an outage, an operator retries an outbox
 * dead letter. So the retention must be longer than the longest outage the deployment should
 * survive and than the time operators take to act on dead letters (default: a week).
 */
export async function purgeExpired(db: Db, now: Date, options: RetentionOptions): Promise<PurgedCounts> {
  const batch = options.batch ?? 1_000;
  const maxBatches = options.maxBatches ?? 20;
  const cutoff = new Date(now.getTime() - options.retentionMs).toISOString();
  const closedCutoff = new Date(now.getTime() - (options.closedDeadLettersMs ?? CLOSED_DEAD_LETTER_RETENTION_MS)).toISOString();

  /** The rows of `table` matching `where`, one batch; the WHERE clauses match the partial indexes of migration kit/0002. */
  const victims = (table: string, where: SQL) =>
    sql`select ctid from ${sql.identifier(table)} where ${where} limit ${batch} for update skip locked`;
  const deleteBatch = (table: string, where: SQL) =>
    sql`with gone as (delete from ${sql.identifier(table)} where ctid in (${victims(table, where)}) returning 1) select count(*)::int as n from gone`;

  const statements: Record<keyof PurgedCounts, SQL> = {
    outbox: deleteBatch("outbox_messages", sql`status = 'published' and published_at < ${cutoff}::timestamptz`),
    inbox: deleteBatch("inbox_messages", sql`processed_at < ${cutoff}::timestamptz`),
    barriers: deleteBatch("saga_barriers", sql`created_at < ${cutoff}::timestamptz`),
    sagas: deleteBatch("sagas", sql`status in ('completed', 'compensated') and updated_at < ${cutoff}::timestamptz`),
    // A closed letter goes with its audit trail (dead_letter_actions has no index of its own: the
    // actions of a batch are found by a scan, fine for a table that grows by operator actions only),
    // and an outbox letter with the dead row it was about, unless the row died again after a retry and
    // a newer letter about it is still open (a retried letter's row is pending again, not dead).
    deadLetters: sql`
      with gone as (
        delete from dead_letters where ctid in (${victims("dead_letters", sql`status <> 'open' and updated_at < ${closedCutoff}::timestamptz`)})
        returning id, source, reference
      ), audit as (
        delete from dead_letter_actions where dead_letter_id in (select id from gone)
      ), dead_rows as (
        delete from outbox_messages m where m.status = 'dead' and m.id in (select reference from gone where source = 'outbox')
          and not exists (select 1 from dead_letters d where d.source = 'outbox' and d.reference = m.id and d.status = 'open')
      )
      select count(*)::int as n from gone`,
  };

  const purged: PurgedCounts = { outbox: 0, inbox: 0, barriers: 0, sagas: 0, deadLetters: 0 };
  for (const kind of Object.keys(statements) as (keyof PurgedCounts)[]) {
    for (let i = 0; i < maxBatches; i++) {
      const [row] = await rows<{ n: number }>(db, statements[kind]);
      const n = row?.n ?? 0;
      purged[kind] += n;
      if (n < batch) break;
    }
  }
  return purged;
}
