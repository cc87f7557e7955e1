import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { createWebhookSignatures, SIGNATURE_HEADER } from "../../src/auth/webhooks.ts";
import { systemClock } from "../../src/kit/clock.ts";
import { IDEMPOTENCY_HEADER, type RefundRequest } from "../../src/modules/payments/refunds.ts";

/**
 * How the simulator answers the next request for a new refund:
 * - `refund`: makes the refund and answers 201 succeeded;
 * - `unavailable`: answers 503 and makes nothing;
 * - `refuse`: answers 422 and makes nothing;
 * - `pending`: makes the refund but answers "pending" (done on the next request with its key);
 * - `drop`: makes the refund, then closes the connection without an answer (an answer lost);
 * - `hold`: makes the refund, then answers only when `release()` is called (a slow provider, or
 *   one whose caller dies meanwhile).
 */
export type Behaviour = "refund" | "unavailable" | "refuse" | "pending" | "drop" | "hold";

export interface Refund {
  id: string;
  key: string;
  request: RefundRequest;
  /** Answered `pending` until asked again. */
  settled: boolean;
}

/**
 * A payment provider's refund endpoint, as the real ones behave (Stripe's idempotency keys): a
 * request must be signed; a key seen before is answered about the same refund, made once (a
 * different body under a known key is 422). It never deduplicates by transaction, so a client
 * that sent two keys for one payment would be paid twice here, and the tests would see it.
 */
export async function startPaymentProvider(secret: string): Promise<{
  url: string;
  /** Refunds made, by idempotency key. */
  refunds: Map<string, Refund>;
  /** Every request that reached it, in order. */
  requests: { key: string | undefined; signed: boolean; body: string }[];
  /** How new refunds are answered from now on (a list: one per request, the last one kept). */
  behave(...next: Behaviour[]): void;
  /** Answers the requests held by `hold`. */
  release(): void;
  /** Resolves, with its idempotency key, when a request arrives that is answered with `behaviour`. */
  arrival(behaviour: Behaviour): Promise<string>;
  /** Money refunded per provider transaction. */
  refundedOf(externalTxnId: string): number;
  close(): Promise<void>;
}> {
  const signatures = createWebhookSignatures(secret, systemClock);
  const refunds = new Map<string, Refund>();
  const requests: { key: string | undefined; signed: boolean; body: string }[] = [];
  let plan: Behaviour[] = ["refund"];
  let held: (() => void)[] = [];
  let waiting: { behaviour: Behaviour; resolve(key: string): void }[] = [];
  let counter = 0;

  const answer = (res: ServerResponse, status: number, body: unknown) => res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body));

  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    let body = "";
    req.on("data", (chunk) => (body += chunk));
    req.on("end", () => {
      const key = req.headers[IDEMPOTENCY_HEADER] as string | undefined;
      const signed = signatures.verify(req.headers[SIGNATURE_HEADER] as string | undefined, body);
      requests.push({ key, signed, body });
      if (!signed) return answer(res, 401, { error: "bad signature" });
      if (!key) return answer(res, 400, { error: "Idempotency-Key is required" });
      const request = JSON.parse(body) as RefundRequest;
      const known = refunds.get(key);
      if (known) {
        if (JSON.stringify(known.request) !== JSON.stringify(request)) return answer(res, 422, { error: "this key was used with another request" });
        known.settled = true;
        return answer(res, 200, { id: known.id, status: "succeeded" });
      }
      const behaviour = plan.length > 1 ? (plan.shift() as Behaviour) : (plan[0] as Behaviour);
      for (const w of waiting.filter((w) => w.behaviour === behaviour)) w.resolve(key);
      waiting = waiting.filter((w) => w.behaviour !== behaviour);
      if (behaviour === "unavailable") return answer(res, 503, { error: "try later" });
      if (behaviour === "refuse") return answer(res, 422, { error: "the transaction cannot be refunded" });
      const refund: Refund = { id: `re_${++counter}`, key, request, settled: behaviour !== "pending" };
      refunds.set(key, refund);
      if (behaviour === "pending") return answer(res, 202, { id: refund.id, status: "pending" });
      if (behaviour === "drop") return res.destroy();
      if (behaviour === "hold") return held.push(() => answer(res, 201, { id: refund.id, status: "succeeded" }));
      return answer(res, 201, { id: refund.id, status: "succeeded" });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}/v1/refunds`,
    refunds,
    requests,
    behave(...next) {
      plan = next;
    },
    release() {
      for (const send of held) send();
      held = [];
    },
    arrival: (behaviour) => new Promise((resolve) => waiting.push({ behaviour, resolve })),
    refundedOf: (externalTxnId) => [...refunds.values()].filter((r) => r.request.externalTxnId === externalTxnId).reduce((sum, r) => sum + r.request.amount, 0),
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
