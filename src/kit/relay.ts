import { sql } from "drizzle-orm";
import type { Logger } from "pino";
import { type Database, rows } from "../db/client.ts";
import type { Bus, BusMessage } from "./bus.ts";
import type { Clock } from "./clock.ts";
import type { DeadLetters } from "./dead-letters.ts";
import { OUTBOX_CHANNEL } from "./outbox.ts";

export const DEFAULT_RETRY_DELAYS_MS = [1_000, 2_000, 4_000, 8_000, 16_000];
const COALESCE_MS = 5;

/** The delay before attempt `attempt + 1`, with ±20 % jitter so retries of many rows spread out. */
export function backoffMs(delays: number[], attempt: number, random = Math.random): number {
  const base = delays[Math.min(attempt, delays.length) - 1] ?? delays[delays.length - 1] ?? 1_000;
  return Math.round(base * (0.8 + 0.4 * random()));
}

export interface RelayOptions {
  database: Database;
  bus: Bus;
  clock: Clock;
  log: Logger;
  deadLetters: DeadLetters;
  retryDelaysMs?: number[];
  batch?: number;
  pollMs?: number;
  /** How long a relay may hold claimed rows before another relay takes them over (it died). */
  claimMs?: number;
}

/**
 * Publishes outbox rows: woken by NOTIFY right after a commit, polling as a fallback. Rows are claimed
 * with FOR UPDATE SKIP LOCKED, so any number of relays share the work. A failed publish is retried
 * with stored backoff; past the last delay the row is dead-lettered with its reason.
 */
export function createRelay(options: RelayOptions) {
  const { database, bus, clock, log, deadLetters } = options;
  const delays = options.retryDelaysMs ?? DEFAULT_RETRY_DELAYS_MS;
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

  async function relayOnce(): Promise<number> {
    const now = clock.now();
    const claimed = await rows<{ id: string; tenant_id: string; topic: string; payload: unknown; attempts: number }>(
      db,
      sql`
        update outbox_messages set claimed_until = ${new Date(now.getTime() + claimMs).toISOString()}::timestamptz, attempts = attempts + 1
        where id in (
          select id from outbox_messages
          where status = 'pending' and next_attempt_at <= ${now.toISOString()}::timestamptz
            and (claimed_until is null or claimed_until < ${now.toISOString()}::timestamptz)
          order by created_at limit ${batch}
          for update skip locked
        )
        returning id, tenant_id, topic, payload, attempts`,
    );
    if (claimed.length === 0) return 0;
    const results = await Promise.allSettled(
      claimed.map((row) => bus.publish({ id: row.id, tenantId: row.tenant_id, topic: row.topic, payload: row.payload } satisfies BusMessage)),
    );
    const published = claimed.filter((_, i) => results[i]?.status === "fulfilled").map((row) => row.id);
    if (published.length > 0) {
      await db.execute(sql`
        update outbox_messages set status = 'published', published_at = ${clock.now().toISOString()}::timestamptz, claimed_until = null, last_error = null
        where id in (select jsonb_array_elements_text(${JSON.stringify(published)}::jsonb))`);
    }
    for (const [i, result] of results.entries()) {
      if (result.status === "fulfilled") continue;
      const row = claimed[i] as (typeof claimed)[number];
      const reason = result.reason instanceof Error ? result.reason.message : String(result.reason);
      if (row.attempts > delays.length) {
        await db.transaction(async (tx) => {
          await tx.execute(sql`update outbox_messages set status = 'dead', claimed_until = null, last_error = ${reason} where id = ${row.id}`);
          await deadLetters.record(tx, { tenantId: row.tenant_id, source: "outbox", reference: row.id, reason });
        });
        log.error({ messageId: row.id, topic: row.topic, reason }, "outbox message dead-lettered");
      } else {
        const next = new Date(clock.now().getTime() + backoffMs(delays, row.attempts));
        await db.execute(sql`
          update outbox_messages set claimed_until = null, next_attempt_at = ${next.toISOString()}::timestamptz, last_error = ${reason}
          where id = ${row.id}`);
      }
    }
    return claimed.length;
  }

  return {
    relayOnce,

    /** Wakes the loop now (after a local commit; NOTIFY does the same across processes). */
    wake: onNotify,

    async start(): Promise<void> {
      if (running) return;
      running = true;
      unlisten = await database.listen(OUTBOX_CHANNEL, onNotify);
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
      wake?.();
      await loop;
      await unlisten?.();
    },
  };
}

export type Relay = ReturnType<typeof createRelay>;
