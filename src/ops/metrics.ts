import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import type { Backlog } from "../kit/backlog.ts";

/** Reads the current backlog from the database when /metrics is scraped. */
export type BacklogProbe = () => Promise<Backlog>;

/** Every metric Orderly exports, in one place (style.md rule 12). One registry per app instance. */
export function createMetrics(probe?: BacklogProbe) {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: "orderly_process_" });
  return {
    registry,
    httpRequests: new Counter({
      name: "orderly_http_requests_total",
      help: "HTTP requests answered, by route and status class",
      labelNames: ["method", "route", "status"] as const,
      registers: [registry],
    }),
    httpDuration: new Histogram({
      name: "orderly_http_request_duration_seconds",
      help: "HTTP request duration",
      labelNames: ["method", "route"] as const,
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers: [registry],
    }),
    placements: new Counter({
      name: "orderly_order_placements_total",
      help: "Order placements by outcome (placed, pending, refused reason, invalid)",
      labelNames: ["outcome"] as const,
      registers: [registry],
    }),
    backlog: probe
      ? new Gauge({
          name: "orderly_backlog_items",
          help: "Work waiting: open dead letters, outbox messages not yet sent, sagas not finished",
          labelNames: ["kind"] as const,
          registers: [registry],
          async collect() {
            const now = await probe();
            this.set({ kind: "dead_letters_open" }, now.deadLettersOpen);
            this.set({ kind: "outbox_pending" }, now.outboxPending);
            this.set({ kind: "sagas_active" }, now.sagasActive);
          },
        })
      : undefined,
    ...cacheMetrics(registry),
    transitions: new Counter({
      name: "orderly_order_transitions_total",
      help: "Committed order state moves, by target status",
      labelNames: ["to"] as const,
      registers: [registry],
    }),
  };
}

export type Metrics = ReturnType<typeof createMetrics>;

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
