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
// NOTIFY wakes a waiter when its order settles. Waiters also look every POLL_MS while the listening
// connection is down, and every LIVE_POLL_MS while it is up: a NOTIFY may still not come (a
// half-open connection not yet noticed, a pooler that does not pass notifications on).
const POLL_MS = 1_000;
const LIVE_POLL_MS = 2_000;
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
  /** Requests waiting in this process for their order to settle; woken with the settled order when this process settled it. */
  const waiters = new Map<string, Set<(settled?: OrderView) => void>>();
  let unlisten: (() => Promise<void>) | undefined;

  /** Locks the saga's order and, if it is still PENDING, moves it; the move's after-hooks run after commit. */
  async function settleOrder(tx: Tx, saga: SagaView<PlacementContext>, afterCommit: AfterCommit, move: (order: OrderRow, moves: TransitionEvent[]) => Promise<boolean>) {
    const order = await orders.lockOrder(tx, systemViewer(saga.tenantId), saga.context.orderId);
    if (order?.status !== "PENDING") return false;
    const moves: TransitionEvent[] = [];
    if (!(await move(order, moves))) return false;
    await tx.execute(sql`select pg_notify(${SETTLED_CHANNEL}, ${saga.context.orderId})`);
    // A request of this process waits for the order: it is handed the settled order once this commits,
    // rather than reading it again in a transaction of its own (replicas still hear the NOTIFY).
    if (waiters.has(saga.context.orderId)) {
      const settled = await orders.getOrder(tx, systemViewer(saga.tenantId), saga.context.orderId);
      if (settled) {
        afterCommit(async () => {
          for (const wake of [...(waiters.get(settled.id) ?? [])]) wake(settled);
        });
      }
    }
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

  /**
   * Listens for the settlement of one order: a NOTIFY for it from now on resolves `woken`. Registered
   * inside the placing transaction, before it commits, so no settlement (which can only follow that
   * commit) is missed, and the request need not read its just-placed order again before it waits.
   */
  function listenFor(orderId: string): { woken: Promise<OrderView | undefined>; release(): void } {
    let wake: (settled?: OrderView) => void = () => {};
    const woken = new Promise<OrderView | undefined>((resolve) => (wake = resolve));
    const set = waiters.get(orderId) ?? new Set<(settled?: OrderView) => void>();
    set.add(wake);
    waiters.set(orderId, set);
    return {
      woken,
      release() {
        set.delete(wake);
        if (set.size === 0 && waiters.get(orderId) === set) waiters.delete(orderId);
      },
    };
  }

  /**
   * The order once it left PENDING, or undefined if it is still pending after `ms`. With `listening`
   * (registered before the order's placement committed), the first read waits for a wake-up or the poll.
   */
  async function waitForSettlement(tenantId: string, orderId: string, ms: number, listening?: ReturnType<typeof listenFor>): Promise<OrderView | undefined> {
    const deadline = Date.now() + ms;
    let current = listening;
    let read = listening === undefined;
    for (;;) {
      // Listen before reading, so a settlement between the read and the wait is not missed.
      const listener = current ?? listenFor(orderId);
      current = undefined;
      let timer: NodeJS.Timeout | undefined;
      try {
        if (read) {
          const order = await database.tenant(tenantId, (tx) => orders.getOrder(tx, systemViewer(tenantId), orderId));
          if (order && order.status !== "PENDING") return order;
        }
        read = true;
        const left = deadline - Date.now();
        if (left <= 0) return undefined;
        // Under load, waiters polling every second read each order about three times for nothing (pg_stat_statements).
        const poll = Math.min(left, database.notifications() === "live" ? LIVE_POLL_MS : POLL_MS);
        const settled = await Promise.race([listener.woken, new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), poll)))]);
        if (settled) return settled;
      } finally {
        clearTimeout(timer);
        listener.release();
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
        for (const wake of woken) wake(undefined);
      });
    },

    async stop() {
      await unlisten?.();
    },

    async place(input, options) {
      let listening: ReturnType<typeof listenFor> | undefined;
      let first: PlacementResult;
      try {
        first = await orders.withMoves(database, input.tenantId, async (tx, moves): Promise<PlacementResult> => {
          const priced = priceItems(await orders.catalogue(tx, input.tenantId, input.items.map((i) => i.sku)), input.items);
          if ("kind" in priced) return priced;
          const context = placementContext(input, priced, newId("ord"), clock.now());
          if (!options.respondAsync) listening = listenFor(context.orderId);
          const written = await orders.insertOrder(tx, moves, newOrder(input.tenantId, context, deps.currency));
          if (!written.ok) return { kind: "refused", reason: "TRANSITION_VETOED", detail: written.detail ?? written.reason };
          await runner.start(tx, PLACEMENT.type, { id: context.orderId, tenantId: input.tenantId, context });
          const result = { kind: "pending" as const, order: written.value };
          await options.record?.(tx, result);
          return result;
        });
      } catch (error) {
        listening?.release();
        throw error;
      }
      if (first.kind !== "pending" || options.respondAsync) {
        listening?.release();
        return first;
      }
      const settled = await waitForSettlement(input.tenantId, first.order.id, options.waitMs, listening);
      return settled ? outcomeOf(settled) : first;
    },
  };
}

export type SagaPlacement = ReturnType<typeof createSagaPlacement>;
