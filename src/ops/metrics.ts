import type { BusHandler } from "../kit/bus.ts";
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import type { PoolStats } from "../db/client.ts";
import type { Backlog } from "../kit/backlog.ts";

/** Seconds buckets for work that takes milliseconds to a few seconds. */
const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
/** Saga steps and publish lags may wait for a broker that is away: up to minutes. */
const LONG_BUCKETS = [0.005, 0.025, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];

/**
 * Every metric Orderly exports, in one place (style.md rule 12; names in api-contract.md §6). One
 * registry per app instance. Node's default process metrics carry no prefix (`process_cpu_seconds_total`).
 * Nothing here queries the database at scrape time: the backlog gauges are set by a background job
 * (`refreshBacklog`, see ops/jobs.ts), the pool gauges read the pool's in-memory counters.
 */
export function createMetrics(sources: { poolStats?: () => PoolStats | undefined } = {}) {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  // Gauges whose `_total` name promtool rejects; each is the sum of its by-type twin (nodejs_active_handles{type}).
  for (const name of ["nodejs_active_handles_total", "nodejs_active_requests_total", "nodejs_active_resources_total"]) registry.removeSingleMetric(name);
  const gauge = (name: string, help: string) => new Gauge({ name, help, registers: [registry] });

  const backlog = {
    outboxPending: gauge("orderly_outbox_pending", "Outbox messages not yet published (refreshed in the background)"),
    outboxOldestAge: gauge("orderly_outbox_oldest_age_seconds", "Age of the oldest outbox message not yet published, 0 when none"),
    deadLettersOpen: gauge("orderly_dead_letters_open", "Dead letters waiting for an operator"),
    sagasActive: gauge("orderly_sagas_active", "Sagas running or compensating"),
    sagasStuck: gauge("orderly_sagas_stuck", "Sagas not settled 30 s after they started"),
    refreshedAt: gauge("orderly_backlog_refresh_timestamp_seconds", "When the backlog gauges were last refreshed (Unix time)"),
  };

  return {
    registry,
    httpDuration: new Histogram({
      name: "orderly_http_request_duration_seconds",
      help: "HTTP request duration, by method, route template and status class",
      labelNames: ["method", "route", "status_class"] as const,
      buckets: LATENCY_BUCKETS,
      registers: [registry],
    }),
    placements: new Counter({
      name: "orderly_order_placements_total",
      help: "Order placements by outcome (placed, pending, or the refusal's code)",
      labelNames: ["outcome"] as const,
      registers: [registry],
    }),
    ...cacheMetrics(registry),
    soldOutRefusals: new Counter({
      name: "orderly_sold_out_gate_refusals_total",
      help: "Orders refused OUT_OF_STOCK by the sold-out gate, without reaching the database",
      registers: [registry],
    }),
    soldOutGateErrors: new Counter({
      name: "orderly_sold_out_gate_errors_total",
      help: "Sold-out gate calls its store (Redis) could not answer, by what was being done (check: the request was admitted)",
      labelNames: ["during"] as const,
      registers: [registry],
    }),
    transitions: new Counter({
      name: "orderly_order_transitions_total",
      help: "Committed order state moves, by target status",
      labelNames: ["to"] as const,
      registers: [registry],
    }),
    sagaSteps: new Histogram({
      name: "orderly_saga_step_duration_seconds",
      help: "From a saga step's first command to its answer, by saga type, step, operation (try, cancel) and outcome",
      labelNames: ["saga", "step", "op", "outcome"] as const,
      buckets: LONG_BUCKETS,
      registers: [registry],
    }),
    placementBatches: new Histogram({
      name: "orderly_placement_batch_orders",
      help: "Orders per transaction placed or settled by a batching writer (many orders, one commit), by writer (sku: a hot SKU's, tenant: a busy tenant's, settle: the settlements of a tenant's PENDING orders)",
      labelNames: ["writer"] as const,
      buckets: [1, 2, 4, 8, 16, 32],
      registers: [registry],
    }),
    publishLag: new Histogram({
      name: "orderly_outbox_publish_lag_seconds",
      help: "From an outbox message's commit to the broker taking it",
      buckets: LONG_BUCKETS,
      registers: [registry],
    }),
    messagesHandled: new Histogram({
      name: "orderly_message_handling_duration_seconds",
      help: "A consumer's handling of one message, by consumer, topic and outcome (ok, error)",
      labelNames: ["consumer", "topic", "outcome"] as const,
      buckets: LATENCY_BUCKETS,
      registers: [registry],
    }),
    callbacks: new Counter({
      name: "orderly_payment_callbacks_total",
      help: "Payment provider callbacks by outcome (accepted, duplicate, bad_signature, invalid, not_found, amount_mismatch, not_payable)",
      labelNames: ["outcome"] as const,
      registers: [registry],
    }),
    webhookAttempts: new Counter({
      name: "orderly_webhook_attempts_total",
      help: "Attempts to deliver a webhook to a merchant, by what the delivery became (delivered, pending: to be tried again, given_up)",
      labelNames: ["outcome"] as const,
      registers: [registry],
    }),
    refundRequests: new Counter({
      name: "orderly_refund_requests_total",
      help: "Refund requests sent to the payment provider, by its answer (refunded, pending, refused, unavailable)",
      labelNames: ["outcome"] as const,
      registers: [registry],
    }),
    rateLimited: new Counter({
      name: "orderly_rate_limit_rejections_total",
      help: "Requests answered 429 by the rate limiter, by bucket scope (user, ip)",
      labelNames: ["scope"] as const,
      registers: [registry],
    }),
    pool: new Gauge({
      name: "orderly_db_pool_connections",
      help: "Connections of this process's PostgreSQL pool, by state (in_use, idle)",
      labelNames: ["state"] as const,
      registers: [registry],
      collect() {
        const stats = sources.poolStats?.();
        if (!stats) return;
        this.set({ state: "in_use" }, stats.total - stats.idle);
        this.set({ state: "idle" }, stats.idle);
      },
    }),
    poolWaiting: new Gauge({
      name: "orderly_db_pool_waiting_requests",
      help: "Requests queued for a connection of this process's PostgreSQL pool",
      registers: [registry],
      collect() {
        const stats = sources.poolStats?.();
        if (stats) this.set(stats.waiting);
      },
    }),
    poolMax: new Gauge({
      name: "orderly_db_pool_max_connections",
      help: "The most connections this process's PostgreSQL pool opens (ORDERLY_DB_POOL_MAX)",
      registers: [registry],
      collect() {
        const stats = sources.poolStats?.();
        if (stats) this.set(stats.max);
      },
    }),
    /** Sets the backlog gauges from a fresh count (the background job calls this, never a scrape). */
    setBacklog(now: Backlog, at: Date): void {
      backlog.outboxPending.set(now.outboxPending);
      backlog.outboxOldestAge.set(now.outboxOldestAgeSeconds);
      backlog.deadLettersOpen.set(now.deadLettersOpen);
      backlog.sagasActive.set(now.sagasActive);
      backlog.sagasStuck.set(now.sagasStuck);
      backlog.refreshedAt.set(at.getTime() / 1000);
    },
  };
}

export type Metrics = ReturnType<typeof createMetrics>;

/** A consumer's handler, timed: orderly_message_handling_duration_seconds by consumer, topic and outcome. */
export function timedHandler(metrics: Metrics, consumer: string, handler: BusHandler): BusHandler {
  return async (message) => {
    const end = metrics.messagesHandled.startTimer({ consumer, topic: message.topic });
    try {
      await handler(message);
      end({ outcome: "ok" });
    } catch (error) {
      end({ outcome: "error" });
      throw error;
    }
  };
}

/** The caches' counters (src/kit/cache.ts), and their hit ratio since start, for a glance without PromQL. */
function cacheMetrics(registry: Registry) {
  const requests = new Counter({
    name: "orderly_cache_requests_total",
    help: "Cache lookups per key, by cache, level (memory, redis) and result (hit, miss, error; bypass: the cache was not trusted, the database was read)",
    labelNames: ["cache", "level", "result"] as const,
    registers: [registry],
  });
  return {
    cache: {
      requests,
      loads: new Counter({
        name: "orderly_cache_loads_total",
        help: "Reads of the source of truth after a miss, by cache and result; concurrent misses of one key share one",
        labelNames: ["cache", "result"] as const,
        registers: [registry],
      }),
      invalidations: new Counter({
        name: "orderly_cache_invalidations_total",
        help: "Keys dropped because their data changed (told by NOTIFY), by cache",
        labelNames: ["cache"] as const,
        registers: [registry],
      }),
      hitRatio: new Gauge({
        name: "orderly_cache_hit_ratio",
        help: "Share of lookups answered from memory or Redis since the process started, by cache",
        labelNames: ["cache"] as const,
        registers: [registry],
        async collect() {
          const totals = new Map<string, { lookups: number; hits: number }>();
          for (const { labels, value } of (await requests.get()).values) {
            const cache = String(labels.cache);
            const total = totals.get(cache) ?? { lookups: 0, hits: 0 };
            if (labels.level === "memory") total.lookups += value;
            if (labels.result === "hit") total.hits += value;
            totals.set(cache, total);
          }
          this.reset();
          for (const [cache, { lookups, hits }] of totals) if (lookups > 0) this.set({ cache }, hits / lookups);
        },
      }),
    },
  };
}
