import type { Logger } from "pino";
import type { Database, Queryable, Tx } from "../db/client.ts";
import { sqlState } from "../db/errors.ts";
import type { Clock } from "../kit/clock.ts";
import type { IdGenerator } from "../kit/ids.ts";
import { ok } from "../kit/outcome.ts";
import type { TransitionEvent } from "../modules/orders/hooks.ts";
import { type OrderRow, type Orders, type OrderView, systemViewer } from "../modules/orders/orders.ts";
import { runSteps } from "./executors.ts";
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
import type { StepModules } from "./steps.ts";

/** Thrown inside the placement's transaction to roll every step back; never leaves this file. */
class Refused extends Error {
  constructor(
    readonly reason: Exclude<PlacementRefusal, "PLACEMENT_FAILED">,
    readonly detail: string,
  ) {
    super(reason);
  }
}

const LOCK_TIMEOUT = "55P03";

export interface LocalPlacementDeps {
  database: Database;
  orders: Orders;
  steps: StepModules;
  /** Names and prices of SKUs, from the inventory module in the same database. */
  catalogue(q: Queryable, tenantId: string, skus: string[]): Promise<Map<string, { name: string; price: number }>>;
  clock: Clock;
  newId: IdGenerator;
  currency: string;
  paymentTimeoutMs: number;
  log: Logger;
}

/**
 * Placement, local executor (all-in-one): the placement's steps as module operations on ONE
 * transaction, so stock, coupon, wallet and shipment document commit together or not at all.
 */
export function createLocalPlacement(deps: LocalPlacementDeps): Placement & {
  recoverPending(olderThanMs?: number, batch?: number): Promise<number>;
  drain(): Promise<void>;
} {
  const { database, orders, clock, newId, log } = deps;
  const inFlight = new Set<Promise<void>>();

  /** Runs the steps and records the placed order; the order row is written before the hot stock rows are locked. */
  async function settle(tx: Tx, moves: TransitionEvent[], tenantId: string, context: PlacementContext, pending?: OrderRow): Promise<void> {
    const ran = await runSteps(deps.steps, PLACEMENT, tx, tenantId, context, {
      confirm: context.paymentMethod === "balance",
      beforeHot: async (results) => {
        const settlement = settlementOf(context, results, deps.paymentTimeoutMs);
        const written = pending
          ? await orders.move(tx, moves, { order: pending, by: "placement", to: settlement.status, payment: settlement.paymentStatus, reason: "placement", patch: settlement.patch })
          : await orders.insertOrder(tx, moves, newOrder(tenantId, context, deps.currency, settlement));
        return written.ok ? ok(undefined) : { ok: false, reason: "TRANSITION_VETOED", detail: written.detail ?? written.reason };
      },
    });
    if (!ran.ok) throw new Refused(ran.reason as Refused["reason"], ran.detail ?? ran.reason);
  }

  /** Finishes a PENDING order: placed, or cancelled with the refusal as its reason. */
  async function settlePending(tenantId: string, orderId: string): Promise<void> {
    try {
      await orders.withMoves(database, tenantId, async (tx, moves) => {
        const order = await orders.lockOrder(tx, systemViewer(tenantId), orderId, { skipLocked: true });
        if (order?.status !== "PENDING") return; // settled already, or another worker holds it
        const context = await pendingContext(tx, order);
        await settle(tx, moves, tenantId, context, order);
      });
    } catch (error) {
      if (!(error instanceof Refused)) throw error;
      await orders.withMoves(database, tenantId, async (tx, moves) => {
        const order = await orders.lockOrder(tx, systemViewer(tenantId), orderId);
        if (order?.status !== "PENDING") return;
        await orders.move(tx, moves, { order, by: "placement", ...refusedMove(error.reason) });
      });
    }
  }

  async function pendingContext(tx: Tx, order: OrderRow): Promise<PlacementContext> {
    const lines = await orders.orderLines(tx, order.tenantId, order.id);
    return {
      orderId: order.id,
      userId: order.userId,
      lines,
      subtotal: order.subtotal,
      couponCode: order.couponCode,
      paymentMethod: order.paymentMethod,
      address: order.shippingAddress,
      createdAt: order.createdAt.toISOString(),
    };
  }

  function settleInBackground(tenantId: string, orderId: string): void {
    const run = settlePending(tenantId, orderId)
      .catch((error) => log.error({ err: error, orderId }, "settling a pending order failed; the recovery sweep will retry"))
      .finally(() => inFlight.delete(run));
    inFlight.add(run);
  }

  return {
    /**
     * Places an order in one tenant transaction: priced, then settled (PAID or CREATED), or with
     * `respondAsync` recorded PENDING and settled in the background. If the settlement waits on a row
     * lock longer than `waitMs`, it is rolled back and the order is recorded PENDING instead (202).
     * `record` runs inside the transaction with the result, so what it stores commits with the order.
     */
    async place(input, options) {
      let context: PlacementContext | undefined;
      const keep = async (tx: Tx, result: Extract<PlacementResult, { kind: "placed" | "pending" }>) => {
        await options.record?.(tx, result);
        return result;
      };
      const view = async (tx: Tx, orderId: string) => (await orders.getOrder(tx, systemViewer(input.tenantId), orderId)) as OrderView;
      const recordPending = async (tx: Tx, moves: TransitionEvent[], c: PlacementContext) => {
        const written = await orders.insertOrder(tx, moves, newOrder(input.tenantId, c, deps.currency));
        if (!written.ok) throw new Refused("TRANSITION_VETOED", written.detail ?? written.reason);
        return keep(tx, { kind: "pending", order: await view(tx, c.orderId) });
      };
      let result: PlacementResult;
      try {
        result = await orders.withMoves(
          database,
          input.tenantId,
          async (tx, moves) => {
            const priced = priceItems(await deps.catalogue(tx, input.tenantId, input.items.map((i) => i.sku)), input.items);
            if ("kind" in priced) return priced;
            context = placementContext(input, priced, newId("ord"), clock.now());
            if (options.respondAsync) return recordPending(tx, moves, context);
            await settle(tx, moves, input.tenantId, context);
            return keep(tx, { kind: "placed", order: await view(tx, context.orderId) });
          },
          { lockTimeoutMs: options.waitMs },
        );
      } catch (error) {
        if (error instanceof Refused) return { kind: "refused", reason: error.reason, detail: error.detail };
        if (sqlState(error) !== LOCK_TIMEOUT || !context) throw error;
        const late = context;
        result = await orders.withMoves(database, input.tenantId, (tx, moves) => recordPending(tx, moves, late));
      }
      if (result.kind === "pending") settleInBackground(result.order.tenantId, result.order.id);
      return result;
    },

    /** Settles orders left PENDING by a crash or a failed background run. Safe on many replicas. */
    async recoverPending(olderThanMs = 10_000, batch = 50): Promise<number> {
      const stale = await orders.stalePending(database.db, new Date(clock.now().getTime() - olderThanMs), batch);
      for (const order of stale) await settlePending(order.tenantId, order.id);
      return stale.length;
    },

    /** Waits for background settlements (graceful shutdown, tests). */
    async drain(): Promise<void> {
      while (inFlight.size > 0) await Promise.allSettled([...inFlight]);
    },
  };
}

export type LocalPlacement = ReturnType<typeof createLocalPlacement>;
