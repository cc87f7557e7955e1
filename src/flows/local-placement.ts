import pLimit from "p-limit";
import type { Logger } from "pino";
import type { Database, Tx } from "../db/client.ts";
import type { Clock } from "../kit/clock.ts";
import type { IdGenerator } from "../kit/ids.ts";
import { outboxCommitted } from "../kit/outbox.ts";
import { type Discount, discountFor, type PricedLine } from "../modules/coupons/pricing.ts";
import type { TransitionEvent } from "../modules/orders/hooks.ts";
import { type OrderRow, type Orders, systemViewer } from "../modules/orders/orders.ts";
import { createKeyWriters } from "../kit/key-writers.ts";
import { currentTraceparent } from "../kit/trace-context.ts";
import { type BatchOutcome, type ComposedArgs, type ComposedOutcome, composedRunner } from "./composed.ts";
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

/** How long a background settlement waits on a row lock before it is left to the recovery sweep. */
const SETTLEMENT_LOCK_TIMEOUT_MS = 10_000;

/**
 * Placements of one SKU under way in this process from which that SKU is hot: its orders then go
 * through its writer, which places many in one transaction (see hotWriters).
 */
const HOT_AFTER = 4;

/**
 * Placements of one tenant under way in this process from which its orders with no hot SKU go
 * through the tenant's writer: under load, many orders per commit pay for one flush, one round trip.
 */
const BUSY_AFTER = 8;

/**
 * How long an order that joined a batch (not its first) may wait for a row lock: past it, it leaves
 * the batch and is placed on its own. A batch holds the rows of the orders before it, so a long wait
 * there could close a cycle with another transaction (a deadlock, found only after a second).
 */
const JOINED_LOCK_WAIT_MS = 50;

/**
 * Orders one hot batch takes at most. Each is a subtransaction, and PostgreSQL keeps the ids of 64
 * per transaction in shared memory before other sessions must look them up on disk.
 */
const MAX_HOT_BATCH = 32;

/** A batch's orders from the `from`-th on wait on a row lock only briefly (see JOINED_LOCK_WAIT_MS). */
const briefFrom = (from: number, batch: ComposedArgs[]): ComposedArgs[] =>
  batch.map((args, i) => (i < from ? args : { ...args, lockTimeoutMs: Math.min(args.lockTimeoutMs, JOINED_LOCK_WAIT_MS) }));

/** Such an order that met a row lock left the batch with nothing of it done: it is run on its own. */
const leftAloneFrom = (from: number, outcomes: BatchOutcome[]): BatchOutcome[] =>
  outcomes.map((outcome, i) => (i >= from && outcome.kind === "lock-timeout" ? { kind: "alone" } : outcome));

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
  /** Settlements under way in memory past which a request that records one more waits for room (see roomInBacklog). */
  maxSettlementBacklog: number;
  log: Logger;
  /** Told the size of every batch a writer placed or settled (see writers, settlers): a hot SKU's, a busy tenant's, a tenant's settlements. */
  onBatch?(writer: "sku" | "tenant" | "settle", orders: number): void;
}

type RecordOrder = (tx: Tx, orderNumber: string) => Promise<void>;

type PendingOrder = OrderRow & { lines: PricedLine[] };

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

  const settleComposed = composedRunner(database, PLACEMENT, "settle");

  /** Placements under way in this process, by tenant and by tenant and SKU: how a busy tenant and a hot SKU are recognised. */
  const placing = new Map<string, number>();
  const skuKey = (tenantId: string, sku: string) => `${tenantId}\u0000${sku}`;
  const pendingKey = (tenantId: string) => `${tenantId}\u0001pending`;

  /**
   * Writers that place many orders per transaction: one per hot SKU, and one per busy tenant for its
   * other orders. PostgreSQL frees a row lock only once the commit is flushed, so one row takes at
   * most one order per flush when every order is its own transaction. A writer places what queued
   * while its last batch ran in ONE transaction, each order still all or nothing (its own
   * subtransaction): the hot row is locked once and freed by one flush for up to MAX_HOT_BATCH
   * orders. One writer per key, because two writers batching the same rows would deadlock; the
   * orders that join a batch wait on a lock briefly and leave it rather than wait long holding rows.
   */
  const writers = createKeyWriters<{ args: ComposedArgs; record: RecordOrder | undefined }, BatchOutcome>({
    maxBatch: MAX_HOT_BATCH,
    async write(key, items) {
      const { tenantId } = items[0]!.args;
      deps.onBatch?.(key.startsWith(skuKey(tenantId, "")) ? "sku" : "tenant", items.length);
      // The first order may wait its own time on a lock: the rows it waits for are the batch's only ones yet.
      const batch = briefFrom(1, items.map((i) => i.args));
      await composed.ready();
      const outcomes = !items.some((i) => i.record)
        ? await composed.runBatch(tenantId, batch)
        : // Answers to store: in the batch's transaction, so each commits with its order.
          await database.tenant(tenantId, async (tx) => {
            const ran = await composed.runBatch(tenantId, batch, tx);
            for (const [i, outcome] of ran.entries()) {
              if (outcome.kind === "recorded") await items[i]!.record?.(tx, outcome.orderNumber);
            }
            return ran;
          });
      return leftAloneFrom(1, outcomes);
    },
  });

  // Background settlements use at most half the pool (every read, batch and statement of theirs runs
  // in `settling`), so requests (the 202s among them) always find connections; what waits, waits in
  // memory, and the recovery sweep settles what a crash loses.
  const poolMax = database.poolStats()?.max ?? 1;
  const settling = pLimit(Math.max(1, Math.floor(poolMax / 2)));

  /**
   * One writer per tenant for the settlements of its PENDING orders: what queued while its last
   * batch ran settles in ONE transaction (each order its own subtransaction), so a backlog of
   * accepted orders drains at a batch's commit per many orders, as busy placements do. No order of
   * a batch waits long on a row lock, the first neither: one that meets a lock leaves the batch and
   * waits on its own, so a row held elsewhere never holds up the tenant's other settlements.
   */
  const settlers = createKeyWriters<ComposedArgs, BatchOutcome>({
    maxBatch: MAX_HOT_BATCH,
    async write(tenantId, items) {
      deps.onBatch?.("settle", items.length);
      await settleComposed.ready();
      return leftAloneFrom(0, await settling(() => settleComposed.runBatch(tenantId, briefFrom(0, items))));
    },
  });

  /** The writer an order goes through: its hottest SKU's if one is hot, else its tenant's if busy. */
  function writerOf(tenantId: string, lines: { sku: string }[]): string | undefined {
    let hottest: { key: string; count: number } | undefined;
    for (const { sku } of lines) {
      const key = skuKey(tenantId, sku);
      const count = writers.busy(key) ? Number.POSITIVE_INFINITY : (placing.get(key) ?? 0);
      if (count >= HOT_AFTER && (!hottest || count > hottest.count)) hottest = { key, count };
    }
    if (hottest) return hottest.key;
    return writers.busy(tenantId) || (placing.get(tenantId) ?? 0) >= BUSY_AFTER ? tenantId : undefined;
  }

  /** Counts an order's tenant and SKUs as being placed until `work` ends. */
  async function countedPlacing<T>(tenantId: string, lines: { sku: string }[], work: () => Promise<T>): Promise<T> {
    const keys = [tenantId, ...lines.map((l) => skuKey(tenantId, l.sku))];
    for (const key of keys) placing.set(key, (placing.get(key) ?? 0) + 1);
    try {
      return await work();
    } finally {
      for (const key of keys) {
        const left = (placing.get(key) ?? 1) - 1;
        if (left === 0) placing.delete(key);
        else placing.set(key, left);
      }
    }
  }

  /** A composed statement committed: this process's relays are woken and its moves' after-hooks run. */
  async function committed(events: TransitionEvent[]): Promise<void> {
    outboxCommitted();
    await orders.runAfterHooks(events);
  }

  /**
   * Each step's input for the composed statement, and the results known before it runs (the new
   * shipment document's waybill, made in TypeScript): what the settlement is computed from.
   */
  function stepCalls(context: PlacementContext): { calls: Record<string, object>; results: Record<string, unknown> } {
    const confirm = context.paymentMethod === "balance";
    const calls: Record<string, object> = {};
    const results: Record<string, unknown> = {};
    for (const { step, command } of PLACEMENT.steps) {
      const payload = command(context, results);
      if (payload === undefined) continue;
      calls[step.id] = step.call(deps.steps, payload, { confirm }).input;
    }
    const shipment = calls[createShipment.id] as { waybill: string } | undefined;
    if (shipment) results[createShipment.id] = { waybill: shipment.waybill, status: "pending" };
    return { calls, results };
  }

  /**
   * Finishes a PENDING order in one statement, the composed placement settling it: its steps and its
   * move to PAID or CREATED at the version read, or nothing. A refusal cancels it with the refusal as
   * its reason. Prices are the order's own (it was priced when recorded); the coupon's rule is read
   * again and checked by the redemption.
   */
  async function settlePending(tenantId: string, orderId: string, recorded?: PendingOrder): Promise<void> {
    for (let attempt = 1; attempt <= MAX_PRICING_ATTEMPTS; attempt++) {
      // The order as this process just recorded it, or as read (the settlement checks its version).
      const order = attempt === 1 && recorded ? recorded : await settling(() => orders.orderWithLines(database.db, tenantId, orderId));
      if (order?.status !== "PENDING") return; // settled already
      const couponCode = order.couponCode;
      const rule = couponCode ? await settling(() => deps.couponRule(tenantId, couponCode)) : undefined;
      if (couponCode && !rule) return cancelPending(tenantId, orderId, "COUPON_UNAVAILABLE");
      const context: PlacementContext = { ...pendingContext(order), priced: rule && { rule, discount: discountFor(order.subtotal, rule) } };
      const { calls, results } = stepCalls(context);
      const prepared = await orders.prepareSettlement(order, settlementOf(context, results, deps.paymentTimeoutMs));
      if (!prepared.ok) return cancelPending(tenantId, orderId, "TRANSITION_VETOED");
      // The request's trace, when it settles in the background after answering 202.
      const ran = await settleThroughWriter({ tenantId, lockTimeoutMs: SETTLEMENT_LOCK_TIMEOUT_MS, prices: [], calls, order: prepared.value.record, traceparent: currentTraceparent() });
      switch (ran.kind) {
        case "recorded":
          await committed(prepared.value.events);
          return;
        case "lock-timeout":
          throw new Error(`settling order ${orderId} waited on a row lock longer than ${SETTLEMENT_LOCK_TIMEOUT_MS} ms`);
        case "refused":
          if (ran.reason === "ORDER_NOT_PENDING") continue; // moved meanwhile: look again
          if (ran.reason === "COUPON_CHANGED") {
            await deps.forget?.(tenantId, [], order.couponCode ?? undefined);
            continue;
          }
          return cancelPending(tenantId, orderId, ran.reason);
      }
    }
    throw new Error(`order ${orderId} changed under ${MAX_PRICING_ATTEMPTS} settlements`);
  }

  /** A PENDING order that could not be placed: CANCELLED, with the refusal as its reason. */
  async function cancelPending(tenantId: string, orderId: string, reason: string): Promise<void> {
    await settling(() => orders.withMoves(database, tenantId, async (tx, moves) => {
      const order = await orders.lockOrder(tx, systemViewer(tenantId), orderId);
      if (order?.status !== "PENDING") return;
      await orders.move(tx, moves, { order, by: "placement", ...refusedMove(reason) });
    }));
  }

  const pendingContext = (order: PendingOrder): PlacementContext => ({
    orderId: order.id,
    userId: order.userId,
    lines: order.lines,
    subtotal: order.subtotal,
    couponCode: order.couponCode,
    paymentMethod: order.paymentMethod,
    address: order.shippingAddress,
    createdAt: order.createdAt.toISOString(),
  });

  /** A settlement through its tenant's settler; one the batch could not take runs on its own. */
  async function settleThroughWriter(args: ComposedArgs): Promise<ComposedOutcome> {
    const batched = await settlers.submit(args.tenantId, args).catch((error: unknown): BatchOutcome => {
      log.warn({ err: error }, "a batch of settlements failed; its orders are settled one by one");
      return { kind: "alone" };
    });
    if (batched.kind !== "alone") return batched;
    await settleComposed.ready();
    return settling(() => settleComposed.run(args));
  }

  function settleInBackground(tenantId: string, recorded: PendingOrder): Promise<void> {
    const orderId = recorded.id;
    const run = settlePending(tenantId, orderId, recorded)
      .catch((error) => log.error({ err: error, orderId }, "settling a pending order failed; the recovery sweep will retry"))
      .finally(() => {
        inFlight.delete(run);
        roomFreed();
      });
    inFlight.add(run);
    return run;
  }

  /** Requests waiting for room in the settlement backlog, first come first served. */
  const waitingForRoom: { done: boolean; release(): void }[] = [];

  /** A settlement ended: the longest-waiting request that still waits goes on. */
  function roomFreed(): void {
    for (let waiter = waitingForRoom.shift(); waiter; waiter = waitingForRoom.shift()) {
      if (waiter.done) continue; // its wait budget ran out
      waiter.release();
      return;
    }
  }

  /**
   * Backpressure: past maxSettlementBacklog settlements under way, a request that recorded one more
   * waits until one ends, so accepting runs at the rate settling does and an order stays PENDING
   * seconds, not minutes; the answer never waits longer than the request asked to.
   */
  function roomInBacklog(waitMs: number): Promise<void> {
    return new Promise((resolve) => {
      const waiter = {
        done: false,
        release() {
          if (waiter.done) return;
          waiter.done = true;
          clearTimeout(budget);
          resolve();
        },
      };
      const budget = setTimeout(() => waiter.release(), waitMs);
      waitingForRoom.push(waiter);
    });
  }

  /**
   * Records the order PENDING (nothing taken yet) and settles it in the background. The record is
   * the composed statement with no step to run, through the tenant's writer of PENDING records (it
   * takes no row another order holds, so it never waits behind a placement's lock): under load many
   * records, with their answers to store, commit together.
   */
  async function placeLater(tenantId: string, context: PlacementContext, options: PlaceOptions): Promise<PlacementResult> {
    const prepared = await orders.prepareOrder(newOrder(tenantId, context, deps.currency));
    if (!prepared.ok) return { kind: "refused", reason: "TRANSITION_VETOED", detail: prepared.detail ?? prepared.reason };
    const args: ComposedArgs = { tenantId, lockTimeoutMs: options.waitMs, prices: [], calls: {}, order: prepared.value.record, traceparent: currentTraceparent() };
    const record: RecordOrder | undefined = options.record && ((tx, orderNumber) => options.record!(tx, { kind: "pending", order: prepared.value.view(orderNumber) }));
    const ran = await runThrough(pendingKey(tenantId), tenantId, args, record);
    if (ran.kind !== "recorded") throw new Error(`recording pending order ${context.orderId} failed: ${ran.kind}`);
    await committed(prepared.value.events);
    settleInBackground(tenantId, { ...prepared.value.row(ran.orderNumber), lines: context.lines });
    if (inFlight.size > deps.maxSettlementBacklog) await roomInBacklog(options.waitMs);
    return { kind: "pending", order: prepared.value.view(ran.orderNumber) };
  }

  /** Runs the composed statement on its own, or with `record` in one transaction with it (rolled back unless it recorded the order). */
  async function runComposed(tenantId: string, args: ComposedArgs, record?: RecordOrder): Promise<ComposedOutcome> {
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
   * The statement of placeAtOnce: through a writer (its hot SKU's or its busy tenant's) or on its
   * own. An order a writer could not place (its batch failed, it deadlocked with another
   * transaction, or it met a row lock after joining the batch) is placed on its own: nothing of it remained.
   */
  async function runPlacement(tenantId: string, args: ComposedArgs, lines: { sku: string }[], record: RecordOrder | undefined): Promise<ComposedOutcome> {
    const writer = writerOf(tenantId, lines);
    return writer ? runThrough(writer, tenantId, args, record) : runComposed(tenantId, args, record);
  }

  /** Through a writer, or on its own if the writer could not place it. */
  async function runThrough(writer: string, tenantId: string, args: ComposedArgs, record: RecordOrder | undefined): Promise<ComposedOutcome> {
    const batched = await writers.submit(writer, { args, record }).catch((error: unknown): BatchOutcome => {
      log.warn({ err: error }, "a batch of orders failed; its orders are placed one by one");
      return { kind: "alone" };
    });
    return batched.kind === "alone" ? runComposed(tenantId, args, record) : batched;
  }

  /**
   * Places a priced order in one statement (composed from the flow's steps), or, with an answer to
   * store (idempotency key), in one transaction with that answer. "repriced": a price or the coupon
   * changed since they were read, nothing was taken. A row lock held past `waitMs` makes it PENDING.
   */
  async function placeAtOnce(tenantId: string, context: PlacementContext, options: PlaceOptions): Promise<PlacementResult | "repriced"> {
    const { calls, results } = stepCalls(context);
    const prepared = await orders.prepareOrder(newOrder(tenantId, context, deps.currency, settlementOf(context, results, deps.paymentTimeoutMs)));
    if (!prepared.ok) return { kind: "refused", reason: "TRANSITION_VETOED", detail: prepared.detail ?? prepared.reason };
    const args: ComposedArgs = {
      tenantId,
      lockTimeoutMs: options.waitMs,
      prices: context.lines.map(({ sku, unitPrice }) => ({ sku, unitPrice })),
      calls,
      order: prepared.value.record,
      traceparent: currentTraceparent(),
    };
    const record: RecordOrder | undefined = options.record && ((tx, orderNumber) => options.record!(tx, { kind: "placed", order: prepared.value.view(orderNumber) }));
    const ran = await runPlacement(tenantId, args, context.lines, record);
    switch (ran.kind) {
      case "recorded":
        await committed(prepared.value.events);
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
        const placed = await countedPlacing(input.tenantId, context.lines, () => placeAtOnce(input.tenantId, context, options));
        if (placed !== "repriced") return placed;
        // A price or the coupon changed since it was read: read them again (a cache forgets them).
        await deps.forget?.(input.tenantId, input.items.map((i) => i.sku), input.couponCode);
        if (attempt === MAX_PRICING_ATTEMPTS) throw new Error(`the prices of order ${context.orderId} kept changing during ${attempt} placements`);
      }
    },

    /** Settles orders left PENDING by a crash or a failed background run. Safe on many replicas. */
    async recoverPending(olderThanMs = 10_000, batch = 50): Promise<number> {
      const stale = await orders.stalePending(database.db, new Date(clock.now().getTime() - olderThanMs), batch);
      // One order that cannot be settled now (a lock held past the timeout) does not hold up the others.
      for (const order of stale) {
        await settlePending(order.tenantId, order.id).catch((error: unknown) =>
          log.error({ err: error, orderId: order.id }, "settling a pending order failed; the next sweep retries it"),
        );
      }
      return stale.length;
    },

    /** Waits for background settlements (graceful shutdown, tests). */
    async drain(): Promise<void> {
      while (inFlight.size > 0) await Promise.allSettled([...inFlight]);
    },
  };
}

export type LocalPlacement = ReturnType<typeof createLocalPlacement>;
