import { ADDRESS } from "./harness.ts";
import type { Deployment } from "./split.ts";

export interface LoadReport {
  /** How many answers of each status (0: no answer at all, e.g. the service was down). */
  statuses: Map<number, number>;
  /** Answers that break the contract: a 5xx other than 503 with Retry-After, or a 503 without it. */
  broken: { status: number; body: unknown }[];
  /** Orders placed (201 or 202) with an external payment, to be paid or left to time out. */
  external: { id: string; total: number }[];
  placed: number;
}

/**
 * Places orders from `clients` concurrent buyers against the orders service until stop(): a mix of
 * wallet and external payments, coupons, a hot SKU and ordinary ones. Every answer is recorded;
 * refusals (409) and unreachable services are expected under faults, contract breaches are not.
 */
export function startLoad(d: Deployment, options: { tenant: string; buyers: string[]; clients?: number; pauseMs?: number }) {
  const report: LoadReport = { statuses: new Map(), broken: [], external: [], placed: 0 };
  let running = true;
  let n = 0;
  const body = (i: number) => ({
    items: i % 3 ? [{ sku: "HOT", quantity: 1 }] : [{ sku: `S${i % 5}`, quantity: 1 + (i % 2) }, { sku: "HOT", quantity: 1 }],
    payment: { method: i % 4 === 0 ? "external" : "balance" },
    ...(i % 5 === 0 ? { couponCode: "FAULT" } : {}),
    shippingAddress: ADDRESS,
  });
  const client = async () => {
    while (running) {
      const i = n++;
      const token = options.buyers[i % options.buyers.length] as string;
      let status = 0;
      try {
        const response = await fetch(d.url("orders", "/orders"), {
          method: "POST",
          headers: { authorization: `Bearer ${token}`, "content-type": "application/json", prefer: "wait=2" },
          body: JSON.stringify(body(i)),
          signal: AbortSignal.timeout(15_000),
        });
        status = response.status;
        const answer = (await response.json().catch(() => null)) as { id?: string; total?: number; payment?: { method: string } } | null;
        if (status >= 500 && !(status === 503 && response.headers.get("retry-after"))) report.broken.push({ status, body: answer });
        if ((status === 201 || status === 202) && answer?.id) {
          report.placed++;
          if (answer.payment?.method === "external") report.external.push({ id: answer.id, total: answer.total as number });
        }
      } catch {
        status = 0; // refused or reset: the orders service is down
      }
      report.statuses.set(status, (report.statuses.get(status) ?? 0) + 1);
      await new Promise((r) => setTimeout(r, status === 0 ? 200 : (options.pauseMs ?? 20)));
    }
  };
  const clients = Array.from({ length: options.clients ?? 8 }, () => client());
  return {
    report,
    async stop(): Promise<LoadReport> {
      running = false;
      await Promise.all(clients);
      return report;
    },
  };
}
