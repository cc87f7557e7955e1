import { randomBytes } from "node:crypto";
import { lookup as dnsLookup, type LookupAddress } from "node:dns";
import { request as httpRequest, type RequestOptions } from "node:http";
import { request as httpsRequest } from "node:https";
import type { LookupFunction } from "node:net";
import { and, asc, eq, sql } from "drizzle-orm";
import ipaddr from "ipaddr.js";
import { createWebhookSignatures, SIGNATURE_HEADER } from "../../auth/webhooks.ts";
import { type Db, type Queryable, rows, type Tx } from "../../db/client.ts";
import type { BusMessage } from "../../kit/bus.ts";
import type { Cache } from "../../kit/cache.ts";
import type { Clock } from "../../kit/clock.ts";
import { newId } from "../../kit/ids.ts";
import { ORDER_STATUSES } from "../orders/schema.ts";
import { type DeliveryStatus, webhookAttempts, webhookDeliveries, webhookEndpoints } from "./schema.ts";

/** The events an endpoint may ask for: one per order status (`order.paid`, …), as the outbox names them. */
export const WEBHOOK_EVENTS = ORDER_STATUSES.map((s) => `order.${s.toLowerCase()}`);

/** A 2xx within this long is a delivery (api-contract.md §7). */
export const DELIVERY_TIMEOUT_MS = 10_000;

/**
 * Delays between attempts; after the last, its delay again until the delivery is `giveUpAfterMs` old
 * (24 h by default), then it is given up. Each delay gets ±20 % so endpoints that failed together
 * are not retried together.
 */
export const RETRY_DELAYS_MS = [10_000, 30_000, 60_000, 5 * 60_000, 15 * 60_000, 30 * 60_000, 3_600_000, 2 * 3_600_000, 4 * 3_600_000];
export const GIVE_UP_AFTER_MS = 24 * 3_600_000;

export interface Endpoint {
  id: string;
  url: string;
  events: string[];
  createdAt: Date;
  updatedAt: Date;
}

/** What one attempt came to: an HTTP status, or none with the reason (refused, timed out, not allowed). */
export interface AttemptResult {
  statusCode: number | null;
  error: string | null;
  durationMs: number;
}

export interface DueDelivery {
  id: string;
  tenantId: string;
  url: string;
  body: string;
  secret: string;
  attempts: number;
  createdAt: Date;
  /** The lease this sender holds: its record counts only while the delivery still carries it. */
  leaseUntil: Date;
}

/** Why a URL is not an endpoint Orderly will call; undefined when it is one. */
export type UrlRefusal = string | undefined;

/**
 * A public unicast address (not loopback, private, link-local, unique-local, CGNAT, multicast,
 * reserved or unspecified), the only kind production calls: no request into the cluster (SSRF).
 */
export function isPublicAddress(address: string): boolean {
  if (!ipaddr.isValid(address)) return false;
  let parsed = ipaddr.parse(address);
  if (parsed.kind() === "ipv6" && (parsed as ipaddr.IPv6).isIPv4MappedAddress()) parsed = (parsed as ipaddr.IPv6).toIPv4Address();
  return parsed.range() === "unicast";
}

/** The URL rules of api-contract.md §7: https only in production, http(s) elsewhere. Addresses are checked when called. */
export function urlRefusal(text: string, production: boolean): UrlRefusal {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return "is not a URL";
  }
  if (url.username || url.password) return "must not carry credentials";
  if (production && url.protocol !== "https:") return "must be https in production";
  if (url.protocol !== "https:" && url.protocol !== "http:") return "must be http or https";
  if (production && ipaddr.isValid(url.hostname.replace(/^\[|\]$/g, "")) && !isPublicAddress(url.hostname.replace(/^\[|\]$/g, ""))) return "must be a public address in production";
  return undefined;
}

/**
 * Resolves like Node does, but in production hands the connection only public addresses: checked at
 * the moment of connecting, so a name that resolves elsewhere later (DNS rebinding) is caught too.
 */
function publicOnlyLookup(production: boolean): LookupFunction {
  return (hostname, options, callback) => {
    dnsLookup(hostname, { ...options, all: true }, (error, addresses: LookupAddress[]) => {
      if (error) return callback(error, "", 4);
      const allowed = production ? addresses.filter((a) => isPublicAddress(a.address)) : addresses;
      const chosen = allowed[0];
      if (!chosen) return callback(Object.assign(new Error(`${hostname} resolves to no public address`), { code: "ENOTPUBLIC" }), "", 4);
      if ((options as { all?: boolean }).all) return (callback as unknown as (e: null, a: LookupAddress[]) => void)(null, allowed);
      callback(null, chosen.address, chosen.family);
    });
  };
}

/** POSTs one signed body, answering what came back within DELIVERY_TIMEOUT_MS. Never throws. */
export function post(url: string, body: string, headers: Record<string, string>, production: boolean, timeoutMs = DELIVERY_TIMEOUT_MS): Promise<AttemptResult> {
  const started = performance.now();
  const done = (statusCode: number | null, error: string | null): AttemptResult => ({ statusCode, error, durationMs: Math.round(performance.now() - started) });
  return new Promise((resolve) => {
    const target = new URL(url);
    const options: RequestOptions = {
      method: "POST",
      headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body), "user-agent": "Orderly-Webhooks/1", ...headers },
      lookup: publicOnlyLookup(production),
      // One deadline for the whole exchange, connection to the last byte.
      signal: AbortSignal.timeout(timeoutMs),
    };
    const request = (target.protocol === "https:" ? httpsRequest : httpRequest)(target, options, (response) => {
      response.resume();
      response.on("end", () => resolve(done(response.statusCode ?? null, null)));
      response.on("error", (error) => resolve(done(response.statusCode ?? null, error.message)));
    });
    request.on("error", (error: NodeJS.ErrnoException) =>
      resolve(done(null, error.name === "AbortError" || error.name === "TimeoutError" ? `no answer within ${timeoutMs / 1000} s` : error.code === "ENOTPUBLIC" ? error.message : `${error.code ?? error.name}: ${error.message}`)),
    );
    request.end(body);
  });
}

const endpointView = (row: typeof webhookEndpoints.$inferSelect): Endpoint => ({ id: row.id, url: row.url, events: row.events, createdAt: row.createdAt, updatedAt: row.updatedAt });

/**
 * Best-effort notifications to merchants (api-contract.md §7). Order events leave through the outbox
 * like every other message; the orders service's consumer fans each out into one delivery per
 * endpoint that asked for it, in the consumer's transaction (so at most once per event and endpoint),
 * with the body made then. Deliveries are sent by `deliverDue` from any number of replicas: each
 * claims due rows with SKIP LOCKED and leases them before calling out, so no transaction stays open
 * across an HTTP call.
 */
export function createNotifications(deps: {
  clock: Clock;
  production: boolean;
  /** The database read across tenants (the events each tenant's endpoints want, and the due deliveries). */
  db: Db;
  /** Each tenant's wanted events, cached across replicas (invalidated when an endpoint changes). */
  cache: Cache<string[]>;
  retryDelaysMs?: number[] | undefined;
  giveUpAfterMs?: number | undefined;
  timeoutMs?: number | undefined;
}) {
  const { clock, production, db, cache } = deps;
  const delays = deps.retryDelaysMs ?? RETRY_DELAYS_MS;
  const giveUpAfterMs = deps.giveUpAfterMs ?? GIVE_UP_AFTER_MS;
  const timeoutMs = deps.timeoutMs ?? DELIVERY_TIMEOUT_MS;
  // A claimed delivery is someone's for this long: an attempt's deadline and then some. Each run
  // claims only what it sends at once, so every claimed delivery is sent within its lease.
  const leaseMs = timeoutMs + 20_000;
  const SENT_AT_ONCE = 8;

  const delayAfter = (attempts: number) => {
    const base = delays[Math.min(attempts - 1, delays.length - 1)] ?? 60_000;
    return Math.round(base * (0.8 + Math.random() * 0.4));
  };

  /**
   * Up to `limit` due deliveries, leased to the caller until `leaseUntil` (across tenants: the
   * owner's connection). A due delivery whose endpoint is gone is given up here, so it can never sit
   * at the head of the queue.
   */
  async function claimDue(limit: number): Promise<DueDelivery[]> {
    const now = clock.now().toISOString();
    const leaseUntil = new Date(clock.now().getTime() + leaseMs);
    const found = await rows<Omit<DueDelivery, "leaseUntil">>(
      db,
      sql`with due as (
            select d.id from webhook_deliveries d
            where d.status = 'pending' and d.next_attempt_at <= ${now}::timestamptz
            order by d.next_attempt_at limit ${limit} for update skip locked),
          orphans as (
            update webhook_deliveries d set status = 'given_up', settled_at = ${now}::timestamptz, next_attempt_at = ${now}::timestamptz
            from due
            where d.id = due.id and not exists (select 1 from webhook_endpoints e where e.tenant_id = d.tenant_id and e.id = d.endpoint_id)
            returning d.id),
          claimed as (
            update webhook_deliveries d set next_attempt_at = ${leaseUntil.toISOString()}::timestamptz
            from due, webhook_endpoints e
            where d.id = due.id and e.tenant_id = d.tenant_id and e.id = d.endpoint_id
            returning d.id, d.tenant_id, d.body, d.attempts, d.created_at, e.url, e.secret)
          select id, tenant_id as "tenantId", url, body, secret, attempts, created_at as "createdAt" from claimed`,
    );
    return found.map((d) => ({ ...d, createdAt: new Date(d.createdAt), leaseUntil }));
  }

  /** Sends one claimed delivery, signed with its endpoint's secret; never throws. */
  async function send(delivery: DueDelivery): Promise<AttemptResult> {
    const refusal = urlRefusal(delivery.url, production);
    if (refusal) return { statusCode: null, error: `the URL ${refusal}`, durationMs: 0 };
    const signature = createWebhookSignatures(delivery.secret, clock).sign(delivery.body);
    const eventId = (JSON.parse(delivery.body) as { id: string }).id;
    return post(delivery.url, delivery.body, { [SIGNATURE_HEADER]: signature, "orderly-event-id": eventId }, production, timeoutMs);
  }

  /**
   * Records an attempt: delivered on a 2xx; otherwise tried again after the next delay, until an
   * attempt fails once the delivery is `giveUpAfterMs` old: then it is given up.
   */
  async function record(delivery: DueDelivery, result: AttemptResult): Promise<DeliveryStatus | undefined> {
    const now = clock.now();
    const attempts = delivery.attempts + 1;
    const delivered = result.statusCode !== null && result.statusCode >= 200 && result.statusCode < 300;
    const status: DeliveryStatus = delivered ? "delivered" : now.getTime() - delivery.createdAt.getTime() >= giveUpAfterMs ? "given_up" : "pending";
    const next = status === "pending" ? new Date(now.getTime() + delayAfter(attempts)) : now;
    return db.transaction(async (tx) => {
      // The attempt happened, whatever became of the delivery meanwhile: it is in the timeline either way.
      await tx.insert(webhookAttempts).values({ deliveryId: delivery.id, tenantId: delivery.tenantId, at: now, durationMs: result.durationMs, statusCode: result.statusCode, error: result.error });
      // Only while this sender's lease holds: a delivery given up (its endpoint deleted) or taken over stays as it is.
      const updated = await tx
        .update(webhookDeliveries)
        .set({ attempts, status, nextAttemptAt: next, settledAt: status === "pending" ? null : now })
        .where(and(eq(webhookDeliveries.id, delivery.id), eq(webhookDeliveries.status, "pending"), eq(webhookDeliveries.nextAttemptAt, delivery.leaseUntil)))
        .returning({ id: webhookDeliveries.id });
      return updated.length > 0 ? status : undefined;
    });
  }

  return {
    urlRefusal: (url: string) => urlRefusal(url, production),

    /** Whether any endpoint of the tenant wants this event (from the cache: no transaction for tenants without webhooks). */
    async wants(tenantId: string, type: string): Promise<boolean> {
      const events = await cache.get(tenantId, async () =>
        (await db.select({ events: webhookEndpoints.events }).from(webhookEndpoints).where(eq(webhookEndpoints.tenantId, tenantId))).flatMap((e) => e.events),
      );
      return events?.includes(type) ?? false;
    },

    /** Creates or replaces an endpoint; a secret is made when none is given (and answered once, here). */
    async putEndpoint(tx: Tx, tenantId: string, id: string, input: { url: string; events: string[]; secret?: string | undefined }) {
      const now = clock.now();
      const secret = input.secret ?? `whsec_${randomBytes(24).toString("base64url")}`;
      const [row] = await tx
        .insert(webhookEndpoints)
        .values({ tenantId, id, url: input.url, events: input.events, secret, createdAt: now, updatedAt: now })
        .onConflictDoUpdate({
          target: [webhookEndpoints.tenantId, webhookEndpoints.id],
          set: { url: input.url, events: input.events, ...(input.secret !== undefined ? { secret } : {}), updatedAt: now },
        })
        .returning({ createdAt: webhookEndpoints.createdAt, secret: webhookEndpoints.secret, updatedAt: webhookEndpoints.updatedAt });
      await cache.invalidateOnCommit(tx, [tenantId]);
      const created = row!.createdAt.getTime() === now.getTime();
      return { endpoint: { id, url: input.url, events: input.events, createdAt: row!.createdAt, updatedAt: row!.updatedAt }, created, secret: row!.secret };
    },

    async getEndpoint(q: Queryable, tenantId: string, id: string): Promise<Endpoint | undefined> {
      const [row] = await q.select().from(webhookEndpoints).where(and(eq(webhookEndpoints.tenantId, tenantId), eq(webhookEndpoints.id, id)));
      return row && endpointView(row);
    },

    async listEndpoints(q: Queryable, tenantId: string): Promise<Endpoint[]> {
      return (await q.select().from(webhookEndpoints).where(eq(webhookEndpoints.tenantId, tenantId)).orderBy(asc(webhookEndpoints.id))).map(endpointView);
    },

    /** Deletes an endpoint; what it still had to receive is given up, as the timeline shows. */
    async deleteEndpoint(tx: Tx, tenantId: string, id: string): Promise<boolean> {
      const deleted = await tx.delete(webhookEndpoints).where(and(eq(webhookEndpoints.tenantId, tenantId), eq(webhookEndpoints.id, id))).returning({ id: webhookEndpoints.id });
      if (deleted.length === 0) return false;
      await cache.invalidateOnCommit(tx, [tenantId]);
      const now = clock.now();
      await tx
        .update(webhookDeliveries)
        .set({ status: "given_up", settledAt: now, nextAttemptAt: now })
        .where(and(eq(webhookDeliveries.tenantId, tenantId), eq(webhookDeliveries.endpointId, id), eq(webhookDeliveries.status, "pending")));
      return true;
    },

    /**
     * An order event, handled by the orders service's consumer: one pending delivery per endpoint of
     * the tenant that asked for this event, with `{ id, type, tenantId, createdAt, data: { order } }`
     * as its body for good. The event id is the outbox message's id: a message delivered twice makes
     * no second delivery.
     */
    async fanOut(tx: Tx, message: BusMessage, order: unknown): Promise<number> {
      const endpoints = await tx
        .select()
        .from(webhookEndpoints)
        .where(and(eq(webhookEndpoints.tenantId, message.tenantId), sql`${webhookEndpoints.events} ? ${message.topic}`))
        // A delete of one of them waits for this transaction, then gives up what it made.
        .for("key share");
      if (endpoints.length === 0) return 0;
      const now = clock.now();
      const body = JSON.stringify({ id: message.id, type: message.topic, tenantId: message.tenantId, createdAt: now.toISOString(), data: { order } });
      const orderId = (order as { id: string }).id;
      const inserted = await tx
        .insert(webhookDeliveries)
        .values(
          endpoints.map((e) => ({
            id: newId("whd"),
            tenantId: message.tenantId,
            endpointId: e.id,
            eventId: message.id,
            eventType: message.topic,
            orderId,
            body,
            status: "pending" as DeliveryStatus,
            attempts: 0,
            nextAttemptAt: now,
            createdAt: now,
          })),
        )
        .onConflictDoNothing()
        .returning({ id: webhookDeliveries.id });
      return inserted.length;
    },

    /** Deletes deliveries settled before `before` with their attempts, up to 20 batches of 1,000 a run; how many. */
    async purgeSettled(before: Date): Promise<number> {
      let purged = 0;
      for (let batch = 0; batch < 20; batch++) {
        const [row] = await rows<{ n: number }>(
          db,
          sql`with gone as (
                delete from webhook_deliveries where id in (
                  select id from webhook_deliveries where status <> 'pending' and settled_at < ${before.toISOString()}::timestamptz limit 1000)
                returning id),
              attempts as (delete from webhook_attempts where delivery_id in (select id from gone))
              select count(*)::int as n from gone`,
        );
        purged += row?.n ?? 0;
        if ((row?.n ?? 0) < 1_000) break;
      }
      return purged;
    },

    /**
     * Sends what is due, 8 at a time (each run claims only what it sends at once, within the lease),
     * until nothing due is left: the background job's run. `counted` hears each recorded outcome.
     */
    async deliverDue(counted: (status: DeliveryStatus) => void = () => {}): Promise<number> {
      let attempted = 0;
      for (;;) {
        const due = await claimDue(SENT_AT_ONCE);
        const outcomes = await Promise.allSettled(due.map(async (delivery) => record(delivery, await send(delivery))));
        for (const outcome of outcomes) {
          if (outcome.status === "rejected") throw outcome.reason;
          if (outcome.value) counted(outcome.value);
        }
        attempted += due.length;
        if (due.length < SENT_AT_ONCE) return attempted;
      }
    },
  };
}

export type Notifications = ReturnType<typeof createNotifications>;
