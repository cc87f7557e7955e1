import pLimit from "p-limit";
import type { Logger } from "pino";
import type { Database, Tx } from "../db/client.ts";
import type { Clock } from "../kit/clock.ts";
import type { IdGenerator } from "../kit/ids.ts";
import { ok } from "../kit/outcome.ts";
import { outboxCommitted } from "../kit/outbox.ts";
import { type Discount, discountFor } from "../modules/coupons/pricing.ts";
import type { TransitionEvent } from "../modules/orders/hooks.ts";
import { type OrderRow, type Orders, systemViewer } from "../modules/orders/orders.ts";
import { type ComposedArgs, type ComposedOutcome, composedRunner } from "./composed.ts";
import { runSteps } from "./executors.ts";
import {
  newOrder,
  PLACEMENT,
  type PlaceOptions,
  type Placement,
  type PlacementContext,
  type PlacementRefusal,
  type PlacementResult,
  placementContext,
  priceItems,
  refusedMove,
  settlementOf,
} from "./placement.ts";
import { createShipment, type StepModules } from "./steps.ts";

/** Thrown inside the placement's transaction to roll every step back; never leaves this file. */
class Refused extends Error {
  constructor(
    readonly reason: Exclude<PlacementRefusal, "PLACEMENT_FAILED">,
    readonly detail: string,
  ) {
    super(reason);
  }
}

/** Settlements waiting in memory before a request that records one more waits for its own (a few seconds of work). */
const MAX_SETTLEMENT_BACKLOG = 1_000;

/** A placement whose prices keep changing under it is tried this often before it fails. */
const MAX_PRICING_ATTEMPTS = 3;

/** Carries a composed statement's refusal or lock timeout out of the transaction it rolls back. */
class RolledBack extends Error {
  constructor(readonly outcome: Exclude<ComposedOutcome, { kind: "recorded" }>) {
    super(outcome.kind);
  }
}

export interface LocalPlacementDeps {
  database: Database;
  orders: Orders;
  steps: StepModules;
  /** Names and prices of SKUs (a SKU missing is unknown); the statement checks them against the catalogue. */
  prices(tenantId: string, skus: string[]): Promise<Map<string, { name: string; price: number }>>;
  /** A coupon's discount rule (undefined: no such coupon); the redemption checks it is still the rule. */
  couponRule(tenantId: string, code: string): Promise<Discount | undefined>;
  /** Told when prices or a coupon read for an order had changed, so a cache forgets them. */
  forget?(tenantId: string, skus: string[], couponCode: string | undefined): Promise<void>;
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
  const composed = composedRunner(database, PLACEMENT);

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
        // Waits for a holder of the row (a refused cancel, another worker) rather than skipping it:
        // skipped, the order would stay PENDING until the recovery sweep.
        const order = await orders.lockOrder(tx, systemViewer(tenantId), orderId);
        if (order?.status !== "PENDING") return; // settled already
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

  // Background settlements take at most half the pool, so requests (the 202s among them) always
  // find connections; the others wait in memory, and the recovery sweep settles what a crash loses.
  const poolMax = database.poolStats()?.max ?? 1;
  const settling = pLimit(Math.max(1, Math.floor(poolMax / 2)));

  function settleInBackground(tenantId: string, orderId: string): Promise<void> {
    const run = settling(() => settlePending(tenantId, orderId))
      .catch((error) => log.error({ err: error, orderId }, "settling a pending order failed; the recovery sweep will retry"))
      .finally(() => inFlight.delete(run));
    inFlight.add(run);
    return run;
  }

  /**
   * Records the order PENDING (nothing taken yet) and settles it in the background. The record is
   * the composed statement with no step to run: one round trip, or with an answer to store, one
   * transaction with that answer.
   */
  async function placeLater(tenantId: string, context: PlacementContext, options: PlaceOptions): Promise<PlacementResult> {
    const prepared = await orders.prepareOrder(newOrder(tenantId, context, deps.currency));
    if (!prepared.ok) return { kind: "refused", reason: "TRANSITION_VETOED", detail: prepared.detail ?? prepared.reason };
    const args: ComposedArgs = { tenantId, lockTimeoutMs: options.waitMs, prices: [], calls: {}, order: prepared.value.record };
    const ran = await runComposed(tenantId, args, options.record && ((tx, orderNumber) => options.record!(tx, { kind: "pending", order: prepared.value.view(orderNumber) })));
    if (ran.kind !== "recorded") throw new Error(`recording pending order ${context.orderId} failed: ${ran.kind}`);
    outboxCommitted();
    await orders.runAfterHooks(prepared.value.events);
    const settled = settleInBackground(tenantId, context.orderId);
    // Backpressure: past MAX_SETTLEMENT_BACKLOG waiting settlements a request waits for its own, so
    // accepting never outruns settling for long and an order stays PENDING seconds, not minutes.
    if (settling.pendingCount > MAX_SETTLEMENT_BACKLOG) await settled;
    return { kind: "pending", order: prepared.value.view(ran.orderNumber) };
  }

  /** Runs the composed statement on its own, or with `record` in one transaction with it (rolled back unless it recorded the order). */
  async function runComposed(tenantId: string, args: ComposedArgs, record?: (tx: Tx, orderNumber: string) => Promise<void>): Promise<ComposedOutcome> {
    await composed.ready();
    if (!record) return composed.run(args);
    return database
      .tenant(tenantId, async (tx) => {
        const outcome = await composed.run(args, tx);
        if (outcome.kind !== "recorded") throw new RolledBack(outcome);
        await record(tx, outcome.orderNumber);
        return outcome;
      })
      .catch((error: unknown) => {
        if (error instanceof RolledBack) return error.outcome;
        throw error;
      });
  }

  /**
   * Places a priced order in one statement (composed from the flow's steps), or, with an answer to
   * store (idempotency key), in one transaction with that answer. "repriced": a price or the coupon
   * changed since they were read, nothing was taken. A row lock held past `waitMs` makes it PENDING.
   */
  async function placeAtOnce(tenantId: string, context: PlacementContext, options: PlaceOptions): Promise<PlacementResult | "repriced"> {
    const confirm = context.paymentMethod === "balance";
    const calls: Record<string, object> = {};
    const results: Record<string, unknown> = {};
    for (const { step, command } of PLACEMENT.steps) {
      const payload = command(context, results);
      if (payload === undefined) continue;
      calls[step.id] = step.call(deps.steps, payload, { confirm }).input;
    }
    // The new document's waybill is made before the statement (createDocumentCall): the order records it.
    const shipment = calls[createShipment.id] as { waybill: string } | undefined;
    if (shipment) results[createShipment.id] = { waybill: shipment.waybill, status: "pending" };
    const prepared = await orders.prepareOrder(newOrder(tenantId, context, deps.currency, settlementOf(context, results, deps.paymentTimeoutMs)));
    if (!prepared.ok) return { kind: "refused", reason: "TRANSITION_VETOED", detail: prepared.detail ?? prepared.reason };
    const args: ComposedArgs = {
      tenantId,
      lockTimeoutMs: options.waitMs,
      prices: context.lines.map(({ sku, unitPrice }) => ({ sku, unitPrice })),
      calls,
      order: prepared.value.record,
    };
    const ran = await runComposed(tenantId, args, options.record && ((tx, orderNumber) => options.record!(tx, { kind: "placed", order: prepared.value.view(orderNumber) })));
    switch (ran.kind) {
      case "recorded":
        outboxCommitted();
        await orders.runAfterHooks(prepared.value.events);
        return { kind: "placed", order: prepared.value.view(ran.orderNumber) };
      case "lock-timeout":
        return placeLater(tenantId, context, options);
      case "refused":
        if (ran.reason === "PRICE_CHANGED" || ran.reason === "COUPON_CHANGED") return "repriced";
        return { kind: "refused", reason: ran.reason as PlacementRefusal, detail: ran.detail };
    }
  }

  return {
    /**
     * Places an order: priced first (prices and coupon as read, perhaps from a cache), then in one
     * statement settled (PAID or CREATED) or refused with nothing taken; with `respondAsync`
     * recorded PENDING and settled in the background. If the statement waits on a row lock longer
     * than `waitMs`, it is rolled back and the order is recorded PENDING instead (202). `record` runs
     * in the order's transaction with the result, so what it stores commits with the order.
     */
    async place(input, options) {
      for (let attempt = 1; ; attempt++) {
        const catalogue = await deps.prices(input.tenantId, input.items.map((i) => i.sku));
        const priced = priceItems(catalogue, input.items);
        if ("kind" in priced) return priced;
        const rule = input.couponCode ? await deps.couponRule(input.tenantId, input.couponCode) : undefined;
        if (input.couponCode && !rule) return { kind: "refused", reason: "COUPON_UNAVAILABLE", detail: `no coupon ${input.couponCode}` };
        const context: PlacementContext = {
          ...placementContext(input, priced, newId("ord"), clock.now()),
          priced: rule && { rule, discount: discountFor(priced.subtotal, rule) },
        };
        if (options.respondAsync) return placeLater(input.tenantId, context, options);
        const placed = await placeAtOnce(input.tenantId, context, options);
        if (placed !== "repriced") return placed;
        // A price or the coupon changed since it was read: read them again (a cache forgets them).
        await deps.forget?.(input.tenantId, input.items.map((i) => i.sku), input.couponCode);
        if (attempt === MAX_PRICING_ATTEMPTS) throw new Error(`the prices of order ${context.orderId} kept changing during ${attempt} placements`);
      }
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
