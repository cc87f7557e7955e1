import { and, eq } from "drizzle-orm";
import type { Tx } from "../db/client.ts";
import { sagaBarriers } from "./schema.ts";

export type BarrierOp = "try" | "confirm" | "cancel";

export interface BarrierKey {
  tenantId: string;
  sagaId: string;
  step: string;
}

/** What a saga step's operation did: `ran` now, a `duplicate` of an earlier run (its answer again), or `skipped`. */
export type BarrierResult<T> = { kind: "ran"; outcome: T } | { kind: "duplicate"; outcome: T } | { kind: "skipped"; why: "cancelled_before_try" | "nothing_to_cancel" };

const TOMBSTONE = { tombstone: true } as const;

/**
 * The saga barrier (after dtm), in the caller's transaction, so the barrier row commits exactly
 * when the step's effect does:
 * - a repeated try, confirm or cancel does nothing and answers what the first one answered;
 * - a cancel that arrives before its try records a tombstone try and does nothing (null compensation);
 * - a try that arrives after its cancel finds that tombstone and does nothing (no hanging reservation).
 */
export function createBarrier() {
  async function insert(tx: Tx, key: BarrierKey, op: BarrierOp, outcome: unknown): Promise<boolean> {
    const inserted = await tx.insert(sagaBarriers).values({ ...key, op, outcome }).onConflictDoNothing().returning({ op: sagaBarriers.op });
    return inserted.length === 1;
  }

  async function stored(tx: Tx, key: BarrierKey, op: BarrierOp): Promise<unknown> {
    const [row] = await tx
      .select({ outcome: sagaBarriers.outcome })
      .from(sagaBarriers)
      .where(and(eq(sagaBarriers.sagaId, key.sagaId), eq(sagaBarriers.step, key.step), eq(sagaBarriers.op, op)));
    return row?.outcome;
  }

  async function record(tx: Tx, key: BarrierKey, op: BarrierOp, outcome: unknown): Promise<void> {
    await tx
      .update(sagaBarriers)
      .set({ outcome })
      .where(and(eq(sagaBarriers.sagaId, key.sagaId), eq(sagaBarriers.step, key.step), eq(sagaBarriers.op, op)));
  }

  return {
    async run<T>(tx: Tx, key: BarrierKey, op: BarrierOp, body: () => Promise<T>): Promise<BarrierResult<T>> {
      if (op === "cancel" && (await insert(tx, key, "try", TOMBSTONE))) {
        await insert(tx, key, "cancel", null);
        return { kind: "skipped", why: "nothing_to_cancel" };
      }
      if (!(await insert(tx, key, op, null))) {
        const outcome = await stored(tx, key, op);
        if (op === "try" && (outcome as { tombstone?: boolean } | null)?.tombstone) return { kind: "skipped", why: "cancelled_before_try" };
        return { kind: "duplicate", outcome: outcome as T };
      }
      const outcome = await body();
      await record(tx, key, op, outcome ?? null);
      return { kind: "ran", outcome };
    },
  };
}

export type Barrier = ReturnType<typeof createBarrier>;
