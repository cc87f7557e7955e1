import { type SQL, sql } from "drizzle-orm";
import type { Logger } from "pino";
import { anyOf, type Database, rows, transaction } from "../db/client.ts";
import { type Bus, type BusMessage, MessageRejected } from "./bus.ts";
import type { Clock } from "./clock.ts";
import type { DeadLetters } from "./dead-letters.ts";
import { OUTBOX_CHANNEL, onOutboxCommitted } from "./outbox.ts";
import { currentTraceparent, inSpan } from "./trace-context.ts";

export const DEFAULT_RETRY_DELAYS_MS = [1_000, 2_000, 4_000, 8_000, 16_000];
/** The longest a message waits between two tries while the bus cannot be reached. */
export const DEFAULT_MAX_OUTAGE_BACKOFF_MS = 30_000;
const COALESCE_MS = 5;

const jitter = (ms: number, random: () => number) => Math.round(ms * (0.8 + 0.4 * random()));

/** The delay before attempt `attempt + 1`, with ±20 % jitter so retries of many rows spread out. */
export function backoffMs(delays: number[], attempt: number, random = Math.random): number {
  const base = delays[Math.min(attempt, delays.length) - 1] ?? delays[delays.length - 1] ?? 1_000;
  return jitter(base, random);
}

/**
 * The delay after a publish that met an outage: about as long as the message has waited so far, so
 * successive waits double, from the first retry delay up to `capMs` (±20 % jitter). No count is
 * kept: an outage is not the message's fault and never uses up its retry budget.
 */
export function outageBackoffMs(waitedMs: number, delays: number[], capMs: number, random = Math.random): number {
  const first = delays[0] ?? 1_000;
  return jitter(Math.min(capMs, Math.max(first, waitedMs)), random);
}

export interface RelayOptions {
  database: Database;
  bus: Bus;
  clock: Clock;
  log: Logger;
  deadLetters: DeadLetters;
  /** Delays between tries of a message the bus rejected; past the last it is dead-lettered. */
  retryDelaysMs?: number[];
  /** Cap of the growing wait between tries while the bus cannot be reached (default 30 s). */
  maxOutageBackoffMs?: number;
  batch?: number;
  pollMs?: number;
  /** How long a relay may hold claimed rows before another relay takes them over (it died). */
  claimMs?: number;
  /** Told, for each message the bus took, how long after its commit that was (metrics). */
  onPublished?: (lagSeconds: number) => void;
}

interface ClaimedRow {
  id: string;
  tenant_id: string;
  topic: string;
  payload: unknown;
  consumer: string | null;
  redrive_of: string | null;
  /** The trace context of the work that wrote the row (null when it was not traced). */
  traceparent: string | null;
  attempts: number;
  created_at: string | Date;
}

/**
 * The message a row carries: a re-drive goes to its one consumer under the id of the message it
 * sends again. `traceparent`: the publish's span, which the consumer's continues.
 */
function messageOf(row: ClaimedRow, traceparent: string | undefined): BusMessage {
  const message: BusMessage = { id: row.redrive_of ?? row.id, tenantId: row.tenant_id, topic: row.topic, payload: row.payload };
  if (row.consumer !== null) message.consumer = row.consumer;
  if (row.redrive_of !== null) message.redriveId = row.id;
  if (traceparent !== undefined) message.traceparent = traceparent;
  return message;
}

/**
 * Claims up to `batch` due rows, due first, for `claimMs`: by an index scan of outbox_due that
 * stops after the batch (kit migration 0007, outbox_claim).
 */
export function claimDue(now: Date, claimMs: number, batch: number): SQL {
  const until = new Date(now.getTime() + claimMs);
  // The columns by name: a prepared statement fails once what it returns changes (a later migration adding a column).
  return sql`
    select id, tenant_id, topic, payload, consumer, redrive_of, traceparent, attempts, created_at
    from outbox_claim(${now.toISOString()}::timestamptz, ${until.toISOString()}::timestamptz, ${batch}::integer)`;
}

/** Marks the rows the bus took as published, found by their primary key (anyOf). */
export function markPublished(ids: readonly string[], at: Date): SQL {
  return sql`
    update outbox_messages set status = 'published', published_at = ${at.toISOString()}::timestamptz, claimed_until = null, last_error = null
    where id = ${anyOf(ids)}`;
}

const reasonOf = (error: unknown) => (error instanceof Error ? error.message : String(error));

/**
 * Publishes outbox rows: woken by NOTIFY right after a commit, polling as a fallback. Rows are claimed
 * with FOR UPDATE SKIP LOCKED, so any number of relays share the work.
 *
 * Two kinds of failure. A message a healthy bus rejected (MessageRejected: a broker nack, no queue
 * for it, a local handler's failure) is retried with stored backoff and dead-lettered past the last
 * delay. A bus that cannot be reached (not connected, connection lost, timeout) is an outage: the
 * message is retried for as long as it lasts, with capped backoff, and never dead-lettered
 * (api-contract.md §5.6). While its bus is down a relay claims nothing, leaving the rows to relays
 * that can publish them, and once the bus is back every waiting row is due at once.
 */
export function createRelay(options: RelayOptions) {
  const { database, bus, clock, log, deadLetters } = options;
  const delays = options.retryDelaysMs ?? DEFAULT_RETRY_DELAYS_MS;
  const maxOutageBackoffMs = options.maxOutageBackoffMs ?? DEFAULT_MAX_OUTAGE_BACKOFF_MS;
  const batch = options.batch ?? 100;
  const pollMs = options.pollMs ?? 1_000;
  const claimMs = options.claimMs ?? 10_000;
  const { db } = database;

  let running = false;
  let wake: (() => void) | undefined;
  /** A notification came in during a pass: rows committed meanwhile may have been missed by it. */
  let notified = false;
  const onNotify = () => {
    notified = true;
    wake?.();
  };
  let loop: Promise<void> | undefined;
  let unlisten: (() => Promise<void>) | undefined;

  /** Whether the last pass found the bus unreachable (to log an outage once, not every pass). */
  let busDown = false;

  async function relayOnce(): Promise<number> {
    try {
      await bus.ping();
    } catch (error) {
      if (!busDown) log.warn({ err: error }, "the bus cannot be reached; outbox messages wait for it");
      busDown = true;
      return 0;
    }
    if (busDown) log.info("the bus is reachable again; sending what waited");
    busDown = false;
    const claimed = await rows<ClaimedRow>(db, claimDue(clock.now(), claimMs, batch));
    if (claimed.length === 0) return 0;
    // Each publish is a PRODUCER span in the trace of the work that wrote the row; the message carries it on.
    const results = await Promise.allSettled(
      claimed.map((row) =>
        inSpan(`${row.topic} publish`, { kind: "producer", traceparent: row.traceparent, attributes: { "messaging.destination.name": row.topic, "messaging.message.id": row.id } }, () =>
          bus.publish(messageOf(row, currentTraceparent())),
        ),
      ),
    );
    const published = claimed.filter((_, i) => results[i]?.status === "fulfilled").map((row) => row.id);
    if (published.length > 0) {
      const publishedAt = clock.now();
      await db.execute(markPublished(published, publishedAt));
      if (options.onPublished) {
        for (const [i, row] of claimed.entries()) {
          if (results[i]?.status === "fulfilled") options.onPublished(Math.max(0, (publishedAt.getTime() - new Date(row.created_at).getTime()) / 1000));
        }
      }
    }
    let unreachable = 0;
    for (const [i, result] of results.entries()) {
      if (result.status === "fulfilled") continue;
      const row = claimed[i] as ClaimedRow;
      const reason = reasonOf(result.reason);
      const failedAt = clock.now();
      if (!(result.reason instanceof MessageRejected)) {
        unreachable++;
        const waited = failedAt.getTime() - new Date(row.created_at).getTime();
        const next = new Date(failedAt.getTime() + outageBackoffMs(waited, delays, maxOutageBackoffMs));
        await db.execute(sql`
          update outbox_messages set claimed_until = null, next_attempt_at = ${next.toISOString()}::timestamptz, last_error = ${reason}
          where id = ${row.id}`);
        continue;
      }
      const attempts = row.attempts + 1;
      if (attempts > delays.length) {
        await transaction(db, async (tx) => {
          await tx.execute(sql`update outbox_messages set status = 'dead', attempts = ${attempts}, claimed_until = null, last_error = ${reason} where id = ${row.id}`);
          await deadLetters.record(tx, { tenantId: row.tenant_id, source: "outbox", reference: row.id, topic: row.topic, payload: row.payload, reason });
        });
        log.error({ messageId: row.id, topic: row.topic, reason }, "outbox message dead-lettered");
      } else {
        const next = new Date(failedAt.getTime() + backoffMs(delays, attempts));
        await db.execute(sql`
          update outbox_messages set attempts = ${attempts}, claimed_until = null, next_attempt_at = ${next.toISOString()}::timestamptz, last_error = ${reason}
          where id = ${row.id}`);
      }
    }
    if (unreachable > 0) log.warn({ messages: unreachable, reason: reasonOf(results.find((r) => r.status === "rejected")?.reason) }, "the bus could not be reached; messages wait for it");
    return claimed.length;
  }

  /** The bus (re)connected: whatever waited for it is due now, not after its backoff. */
  async function sendWaiting(): Promise<void> {
    const now = clock.now().toISOString();
    // Due as when first written: claims go due first, so these, the oldest, leave before what was written since.
    await db.execute(sql`update outbox_messages set next_attempt_at = created_at where status = 'pending' and next_attempt_at > ${now}::timestamptz`);
    onNotify();
  }
  let stopWatchingBus: (() => void) | undefined;

  return {
    relayOnce,

    /** Wakes the loop now (after a local commit; NOTIFY does the same across processes). */
    wake: onNotify,

    async start(): Promise<void> {
      if (running) return;
      running = true;
      const stopListening = await database.listen(OUTBOX_CHANNEL, onNotify);
      const stopHearingCommits = onOutboxCommitted(onNotify);
      unlisten = async () => {
        stopHearingCommits();
        await stopListening();
      };
      // A row in backoff for a rejection is due early too: one more try, counted as usual, right after a reconnect.
      stopWatchingBus = bus.onReady?.(() => {
        sendWaiting().catch((error: unknown) => log.warn({ err: error }, "could not make waiting outbox messages due"));
      });
      loop = (async () => {
        while (running) {
          let handled = 0;
          notified = false;
          try {
            handled = await relayOnce();
          } catch (error) {
            log.error({ err: error }, "outbox relay pass failed");
          }
          if (handled === batch) continue; // more may be waiting
          if (notified) {
            // Rows committed during the pass: go again after a moment, so a burst of commits (and of
            // notifications to every relay) is claimed in one pass rather than one query each.
            await new Promise((resolve) => setTimeout(resolve, COALESCE_MS));
            continue;
          }
          await new Promise<void>((resolve) => {
            const timer = setTimeout(resolve, pollMs);
            wake = () => {
              clearTimeout(timer);
              setTimeout(resolve, COALESCE_MS);
            };
          });
          wake = undefined;
        }
      })();
    },

    async stop(): Promise<void> {
      running = false;
      stopWatchingBus?.();
      wake?.();
      await loop;
      await unlisten?.();
    },
  };
}

export type Relay = ReturnType<typeof createRelay>;
