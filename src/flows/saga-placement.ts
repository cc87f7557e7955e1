import { sql } from "drizzle-orm";
import type { Database, Tx } from "../db/client.ts";
import type { Clock } from "../kit/clock.ts";
import type { IdGenerator } from "../kit/ids.ts";
import type { AfterCommit } from "../kit/inbox.ts";
import { ok, refuse } from "../kit/outcome.ts";
import type { SagaRunner, SagaView } from "../kit/saga.ts";
import type { TransitionEvent } from "../modules/orders/hooks.ts";
import { type OrderRow, type Orders, type OrderView, systemViewer } from "../modules/orders/orders.ts";
import { type Effects, sagaOf } from "./executors.ts";
import {
  newOrder,
  PLACEMENT,
  type Placement,
  type PlacementContext,
  type PlacementRefusal,
  type PlacementResult,
  placementContext,
  priceItems,
  refusedMove,
  settlementOf,
} from "./placement.ts";
import { reserveStock } from "./steps.ts";

const SETTLED_CHANNEL = "orderly_order_settled";
// NOTIFY wakes a waiter when its order settles; this poll only covers a lost notification.
const POLL_MS = 1_000;
/** The refusals a waiting request is told as such; any other end of a placement is PLACEMENT_FAILED. */
const TOLD_REFUSALS: readonly PlacementRefusal[] = ["OUT_OF_STOCK", "INSUFFICIENT_FUNDS", "COUPON_UNAVAILABLE", "TRANSITION_VETOED"];

export interface SagaPlacementDeps {
  database: Database;
  orders: Orders;
  runner: SagaRunner;
  effects: Effects;
  clock: Clock;
  newId: IdGenerator;
  currency: string;
  paymentTimeoutMs: number;
  /** How long a step's owner may take to answer before the placement gives up and compensates. */
  stepDeadlineMs: number;
}

/**
 * Placement, saga executor (split deployment): the order is recorded PENDING with its saga in one
 * transaction; the placement's steps then run at their owners, each in its own transaction, and any
 * refusal compensates what ran. The request waits for the outcome up to its budget, even when another
 * replica of the orders service applies the last reply (it NOTIFYs when an order settles).
 */
export function createSagaPlacement(deps: SagaPlacementDeps): Placement & { start(): Promise<void>; stop(): Promise<void> } {
  const { database, orders, runner, effects, clock, newId } = deps;
  const waiters = new Map<string, Set<() => void>>();
  let unlisten: (() => Promise<void>) | undefined;

  /** Locks the saga's order and, if it is still PENDING, moves it; the move's after-hooks run after commit. */
  async function settleOrder(tx: Tx, saga: SagaView<PlacementContext>, afterCommit: AfterCommit, move: (order: OrderRow, moves: TransitionEvent[]) => Promise<boolean>) {
    const order = await orders.lockOrder(tx, systemViewer(saga.tenantId), saga.context.orderId);
    if (order?.status !== "PENDING") return false;
    const moves: TransitionEvent[] = [];
    if (!(await move(order, moves))) return false;
    await tx.execute(sql`select pg_notify(${SETTLED_CHANNEL}, ${saga.context.orderId})`);
    afterCommit(() => orders.runAfterHooks(moves));
    return true;
  }

  runner.register(
    sagaOf(PLACEMENT, deps.stepDeadlineMs, {
      async onCompleted(tx, saga, afterCommit) {
        const settlement = settlementOf(saga.context, saga.results, deps.paymentTimeoutMs);
        let refusal = "the order is no longer PENDING";
        const settled = await settleOrder(tx, saga, afterCommit, async (order, moves) => {
          const moved = await orders.move(tx, moves, { order, by: "placement", to: settlement.status, payment: settlement.paymentStatus, reason: "placement", patch: settlement.patch });
          if (!moved.ok) refusal = moved.reason;
          return moved.ok;
        });
        // An order that left PENDING some other way, or a vetoed move: every step is compensated.
        if (!settled) return refuse(refusal);
        if (settlement.status === "PAID") await effects.confirm(tx, saga.tenantId, saga.context.orderId, reserveStock);
        return ok(undefined);
      },

      async onCompensated(tx, saga, reason, afterCommit) {
        await settleOrder(tx, saga, afterCommit, async (order, moves) => (await orders.move(tx, moves, { order, by: "placement", ...refusedMove(reason) })).ok);
      },
    }),
  );

  /** The order once it left PENDING, or undefined if it is still pending after `ms`. */
  async function waitForSettlement(tenantId: string, orderId: string, ms: number): Promise<OrderView | undefined> {
    const deadline = Date.now() + ms;
    for (;;) {
      // Listen before reading, so a settlement between the read and the wait is not missed.
      let wake = () => {};
      const woken = new Promise<void>((resolve) => (wake = resolve));
      const set = waiters.get(orderId) ?? new Set<() => void>();
      set.add(wake);
      waiters.set(orderId, set);
      let timer: NodeJS.Timeout | undefined;
      try {
        const order = await database.tenant(tenantId, (tx) => orders.getOrder(tx, systemViewer(tenantId), orderId));
        if (order && order.status !== "PENDING") return order;
        const left = deadline - Date.now();
        if (left <= 0) return undefined;
        await Promise.race([woken, new Promise<void>((resolve) => (timer = setTimeout(resolve, Math.min(left, POLL_MS))))]);
      } finally {
        clearTimeout(timer);
        set.delete(wake);
        if (set.size === 0) waiters.delete(orderId);
      }
    }
  }

  /** What a request that waited is told about its settled order. */
  function outcomeOf(order: OrderView): PlacementResult {
    if (order.status !== "CANCELLED") return { kind: "placed", order };
    const told = TOLD_REFUSALS.find((r) => r === order.cancelReason);
    const why = order.history.at(-1)?.reason ?? "unknown";
    return told
      ? { kind: "refused", reason: told, detail: `the order was cancelled: ${why}`, orderId: order.id }
      : { kind: "refused", reason: "PLACEMENT_FAILED", detail: `the order could not be placed (${why}); nothing was taken`, orderId: order.id };
  }

  return {
    async start() {
      unlisten = await database.listen(SETTLED_CHANNEL, (orderId) => {
        // "" after LISTEN was re-established: settlements meanwhile went unheard, so every waiter looks.
        const woken = orderId === "" ? [...waiters.values()].flatMap((set) => [...set]) : [...(waiters.get(orderId) ?? [])];
        for (const wake of woken) wake();
      });
    },

    async stop() {
      await unlisten?.();
    },

    async place(input, options) {
      const first = await orders.withMoves(database, input.tenantId, async (tx, moves): Promise<PlacementResult> => {
        const priced = priceItems(await orders.catalogue(tx, input.tenantId, input.items.map((i) => i.sku)), input.items);
        if ("kind" in priced) return priced;
        const context = placementContext(input, priced, newId("ord"), clock.now());
        const written = await orders.insertOrder(tx, moves, newOrder(input.tenantId, context, deps.currency));
        if (!written.ok) return { kind: "refused", reason: "TRANSITION_VETOED", detail: written.detail ?? written.reason };
        await runner.start(tx, PLACEMENT.type, { id: context.orderId, tenantId: input.tenantId, context });
        const result = { kind: "pending" as const, order: (await orders.getOrder(tx, systemViewer(input.tenantId), context.orderId)) as OrderView };
        await options.record?.(tx, result);
        return result;
      });
      if (first.kind !== "pending" || options.respondAsync) return first;
      const settled = await waitForSettlement(input.tenantId, first.order.id, options.waitMs);
      return settled ? outcomeOf(settled) : first;
    },
  };
}

export type SagaPlacement = ReturnType<typeof createSagaPlacement>;
