import type { FastifyInstance, FastifyRequest } from "fastify";
import type { Database, Tx } from "../db/client.ts";
import { isDatabaseUnavailable } from "../db/errors.ts";
import { AppError } from "../kit/errors.ts";
import { fingerprintOf, type Idempotency, type IdempotencyClaim, type StoredResponse } from "../kit/idempotency.ts";

declare module "fastify" {
  interface FastifyRequest {
    /** The claimed key, and the status of the answer stored with the effect (if one was). */
    idempotency: { claim: IdempotencyClaim; recordedStatus?: number } | undefined;
  }
  interface FastifyContextConfig {
    /** The route honours `Idempotency-Key`. */
    idempotent?: boolean;
  }
}

const KEY = /^[\x21-\x7e]{1,255}$/;
/** Headers of an answer that a replay must carry too. */
const KEPT_HEADERS = ["location", "etag", "content-type", "preference-applied"];

export function keptHeaders(headers: Record<string, unknown>): Record<string, string> {
  return Object.fromEntries(KEPT_HEADERS.filter((h) => headers[h] !== undefined).map((h) => [h, String(headers[h])]));
}

/**
 * `Idempotency-Key` on routes with `config: { idempotent: true }`. The key is claimed after
 * authentication and validation (so a malformed request is never stored); a route stores its
 * answer with its effect through `answerOf(request)`, so a crash cannot separate them; the answer
 * actually sent then replaces it (the same, or the outcome the request waited for); a 5xx before
 * any answer was stored gives the key up so a retry runs afresh.
 */
export function registerIdempotency(app: FastifyInstance, deps: { idempotency: Idempotency; database: Database }): void {
  const { idempotency, database } = deps;
  app.decorateRequest("idempotency", undefined);

  app.addHook("preHandler", async (request, reply) => {
    if (!request.routeOptions.config.idempotent) return;
    const key = request.headers["idempotency-key"];
    if (key === undefined) return;
    if (typeof key !== "string" || !KEY.test(key)) {
      throw new AppError("VALIDATION_FAILED", "the Idempotency-Key header is not valid", {
        errors: [{ path: "headers.idempotency-key", message: "must be 1 to 255 printable characters" }],
      });
    }
    const { tenantId, userId } = request.identity!;
    const fingerprint = fingerprintOf(request.method, request.url.split("?")[0] as string, request.body ?? null);
    const claimed = await idempotency.claim(database, { tenantId, userId, key, fingerprint });
    switch (claimed.kind) {
      case "claimed":
        request.idempotency = { claim: claimed.claim };
        return;
      case "replay":
        return reply.code(claimed.response.status).headers({ ...claimed.response.headers, "idempotent-replayed": "true" }).send(claimed.response.body);
      case "in_use":
        throw new AppError("IDEMPOTENCY_KEY_IN_USE", "a request with this Idempotency-Key is still being processed; retry later");
      case "reused":
        throw new AppError("IDEMPOTENCY_KEY_REUSED", "this Idempotency-Key was used with a different request");
    }
  });

  app.addHook("onSend", async (request, reply, payload) => {
    const state = request.idempotency;
    if (!state) return payload;
    request.idempotency = undefined; // once per request
    // Stored with the effect already, and the same answer goes out: nothing to write again.
    if (state.recordedStatus === reply.statusCode) return payload;
    try {
      if (reply.statusCode >= 500) {
        await idempotency.release(database, state.claim);
      } else {
        const body = typeof payload === "string" && payload !== "" ? (JSON.parse(payload) as unknown) : null;
        await idempotency.completeAlone(database, state.claim, { status: reply.statusCode, body, headers: keptHeaders(reply.getHeaders()) });
      }
    } catch (error) {
      // The answer still goes out; the claim expires after its lease and a retry runs afresh.
      // An outage is already logged as such (problem.ts): a warning here, not a second stack.
      if (isDatabaseUnavailable(error)) request.log.warn("storing the idempotent answer failed: the database cannot be reached");
      else request.log.error({ err: error }, "storing the idempotent answer failed");
    }
    return payload;
  });
}

/** How a route stores its answer in the same transaction as its effect (no-op without a key). */
export function answerOf(request: FastifyRequest, idempotency: Idempotency) {
  const state = request.idempotency;
  return {
    /** Whether the request carries a key, so there is an answer to store (a route may then skip a transaction it needs only for that). */
    stores: state !== undefined,
    async record(tx: Tx, response: StoredResponse): Promise<void> {
      if (!state) return;
      await idempotency.complete(tx, state.claim, response);
      state.recordedStatus = response.status;
    },
  };
}
