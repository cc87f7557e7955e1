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
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
