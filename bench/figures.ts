// The shapes every phase reports in, shared by the load generators, the phases and the report.

export interface Percentiles {
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

/** One measured load, from Orderly over HTTP or from pgbench. */
export interface Throughput {
  /** Measured seconds (warm-up excluded). */
  seconds: number;
  /** Successful orders: 201 answers (202 for the asynchronous load), or pgbench transactions. */
  orders: number;
  ordersPerSecond: number;
  /** Successful orders in each second of the run. */
  perSecond: number[];
  /** Latency of the successful orders, in milliseconds. */
  latencyMs: Percentiles;
}

/** Orderly's side: besides the successful orders, every other answer, counted apart. */
export interface HttpLoad extends Throughput {
  /** Answers by HTTP status; "error" and "timeout" for requests that got none. */
  answers: Record<string, number>;
}

export function percentiles(values: number[]): Percentiles {
  const sorted = Float64Array.from(values).sort();
  const at = (p: number) => sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)] ?? 0;
  return { p50: at(0.5), p90: at(0.9), p99: at(0.99), max: sorted[sorted.length - 1] ?? 0 };
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export const fmt = (n: number, digits = 0) => n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });

/** Answers other than the counted ones (refusals, 202s, errors), shown beside a rate: "; also 409×3, 202×10". */
export function otherAnswers(load: HttpLoad, counted = "201"): string {
  const others = Object.entries(load.answers).filter(([status]) => status !== counted);
  return others.length === 0 ? "" : `; also ${others.map(([status, n]) => `${status}×${fmt(n)}`).join(", ")}`;
}
