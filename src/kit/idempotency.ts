import { createHash, randomUUID } from "node:crypto";
import { and, eq, lt } from "drizzle-orm";
import type { Database, Db, Tx } from "../db/client.ts";
import type { Clock } from "./clock.ts";
import { idempotencyKeys } from "./schema.ts";

export interface StoredResponse {
  status: number;
  body: unknown;
  headers: Record<string, string>;
}

export interface IdempotencyClaim {
  tenantId: string;
  userId: string;
  key: string;
  token: string;
}

export type ClaimResult =
  | { kind: "claimed"; claim: IdempotencyClaim }
  | { kind: "replay"; response: StoredResponse }
  | { kind: "in_use" }
  | { kind: "reused" };

/** Thrown inside a business transaction whose key was taken over meanwhile: rolls the effect back. */
export class IdempotencyClaimLost extends Error {
  constructor() {
    super("the idempotency key was claimed by another request");
    this.name = "IdempotencyClaimLost";
  }
}

/** JSON with object keys sorted, so the same body always has the same fingerprint. */
function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (value && typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>).filter(([, v]) => v !== undefined);
    return `{${entries
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([k, v]) => `${JSON.stringify(k)}:${canonical(v)}`)
      .join(",")}}`;
  }
  return JSON.stringify(value) ?? "null";
}

export function fingerprintOf(method: string, path: string, body: unknown): string {
  return createHash("sha256").update(`${method} ${path}\n${canonical(body)}`).digest("hex");
}

/**
 * Idempotency keys (Stripe's semantics): the first request claims the key with a unique insert;
 * its answer is stored with the key; a repeat with the same body gets that answer again, another
 * body is refused, and a repeat while the first still runs is told so. A claim older than the lease
 * (its request died) can be taken over; the old holder then fails to store its answer and rolls back.
 */
export function createIdempotency(options: { clock: Clock; leaseMs?: number }) {
  const { clock } = options;
  const leaseMs = options.leaseMs ?? 60_000;
  const keyOf = (c: { tenantId: string; userId: string; key: string }) =>
    and(eq(idempotencyKeys.tenantId, c.tenantId), eq(idempotencyKeys.userId, c.userId), eq(idempotencyKeys.key, c.key));

  /** Stores the answer under this claim; `provisional` allows replacing an answer stored earlier by the same claim. */
  async function store(q: Db | Tx, claim: IdempotencyClaim, response: StoredResponse, replace: boolean): Promise<boolean> {
    const updated = await q
      .update(idempotencyKeys)
      .set({ status: "done", responseStatus: response.status, responseBody: response.body, responseHeaders: response.headers })
      .where(and(keyOf(claim), eq(idempotencyKeys.claimToken, claim.token), replace ? undefined : eq(idempotencyKeys.status, "in_progress")))
      .returning({ key: idempotencyKeys.key });
    return updated.length === 1;
  }

  return {
    async claim(database: Database, args: { tenantId: string; userId: string; key: string; fingerprint: string }): Promise<ClaimResult> {
      const now = clock.now();
      const token = randomUUID();
      return database.tenant(args.tenantId, async (tx) => {
        const inserted = await tx
          .insert(idempotencyKeys)
          .values({ ...args, status: "in_progress", claimToken: token, createdAt: now, claimedAt: now })
          .onConflictDoNothing()
          .returning({ key: idempotencyKeys.key });
        if (inserted.length === 1) return { kind: "claimed", claim: { ...args, token } };
        const [row] = await tx.select().from(idempotencyKeys).where(keyOf(args)).for("update");
        if (!row) return { kind: "in_use" }; // purged between the two statements: the client may retry
        if (row.fingerprint !== args.fingerprint) return { kind: "reused" };
        if (row.status === "done") {
          return { kind: "replay", response: { status: row.responseStatus ?? 200, body: row.responseBody, headers: row.responseHeaders ?? {} } };
        }
        if (row.claimedAt.getTime() > now.getTime() - leaseMs) return { kind: "in_use" };
        await tx.update(idempotencyKeys).set({ claimToken: token, claimedAt: now }).where(keyOf(args));
        return { kind: "claimed", claim: { ...args, token } };
      });
    },

    /** Stores the answer in the caller's transaction, with the effect; throws if the claim was lost. */
    async complete(tx: Tx, claim: IdempotencyClaim, response: StoredResponse): Promise<void> {
      if (!(await store(tx, claim, response, false))) throw new IdempotencyClaimLost();
    },

    /**
     * Stores the answer as it was sent, replacing one this claim stored with its effect (the saga
     * strategy records 202 with the order, then may answer 201 or 409 after waiting). False if the
     * claim was lost.
     */
    async completeAlone(database: Database, claim: IdempotencyClaim, response: StoredResponse): Promise<boolean> {
      return database.tenant(claim.tenantId, (tx) => store(tx, claim, response, true));
    },

    /** Gives the key up (the request failed unexpectedly), so a retry runs afresh. */
    async release(database: Database, claim: IdempotencyClaim): Promise<void> {
      await database.tenant(claim.tenantId, (tx) =>
        tx.delete(idempotencyKeys).where(and(keyOf(claim), eq(idempotencyKeys.claimToken, claim.token), eq(idempotencyKeys.status, "in_progress"))),
      );
    },

    /** Deletes keys created before `before` (the contract keeps them at least 24 h). Across tenants. */
    async purge(db: Db, before: Date): Promise<number> {
      const deleted = await db.delete(idempotencyKeys).where(lt(idempotencyKeys.createdAt, before)).returning({ key: idempotencyKeys.key });
      return deleted.length;
    },

  };
}

export type Idempotency = ReturnType<typeof createIdempotency>;
