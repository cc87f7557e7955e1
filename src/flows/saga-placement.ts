import { sql } from "drizzle-orm";
import type { Database, Tx } from "../db/client.ts";
import type { Clock } from "../kit/clock.ts";
import type { IdGenerator } from "../kit/ids.ts";
import type { AfterCommit } from "../kit/inbox.ts";
import type { Outbox } from "../kit/outbox.ts";
import type { SagaDefinition, SagaRunner, SagaView } from "../kit/saga.ts";
import type { PricedLine } from "../modules/coupons/pricing.ts";
import type { TransitionEvent } from "../modules/orders/hooks.ts";
import { type Orders, type OrderView, systemViewer } from "../modules/orders/orders.ts";
import { CANCEL_REASONS, type CancelReason, type PaymentMethod } from "../modules/orders/schema.ts";
import type { Address } from "../modules/shipping/schema.ts";
import type { ShipmentDocument } from "../modules/shipping/shipping.ts";
import { type PlaceOptions, type PlaceOrderInput, type PlacementRefusal, type PlacementResult, pendingOrder, priceItems } from "./place-order.ts";
import { PAYMENT_TOPICS } from "./payment-callback.ts";
import { STEP } from "./saga-participants.ts";

export const PLACE_ORDER_SAGA = "place-order";
const SETTLED_CHANNEL = "orderly_order_settled";
// NOTIFY wakes a waiter when its order settles; this poll only covers a lost notification.
const POLL_MS = 1_000;

interface PlacementContext {
  orderId: string;
  userId: string;
  lines: PricedLine[];
  subtotal: number;
  couponCode: string | null;
  paymentMethod: PaymentMethod;
  address: Address;
  createdAt: string;
}

/**
 * Placement, saga strategy (split deployment): the order is recorded PENDING with its saga in one
 * transaction; then stock is reserved, the coupon redeemed, the wallet debited and the shipment
 * document created, each by its own service in its own transaction, and any refusal compensates the
 * steps before it in reverse. The request waits for the outcome up to its budget, even when another
 * replica of the orders service applies the last reply (it NOTIFYs when an order settles).
 */
export function createSagaPlacement(deps: {
  database: Database;
  orders: Orders;
  runner: SagaRunner;
  outbox: Outbox;
  clock: Clock;
  newId: IdGenerator;
  currency: string;
  paymentTimeoutMs: number;
}) {
  const { database, orders, runner, outbox, clock, newId } = deps;
  const waiters = new Map<string, Set<() => void>>();
  let unlisten: (() => Promise<void>) | undefined;

  async function settleOrder(
    tx: Tx,
    saga: SagaView<PlacementContext>,
    afterCommit: AfterCommit,
    move: (order: NonNullable<Awaited<ReturnType<Orders["lockOrder"]>>>, moves: TransitionEvent[]) => Promise<void>,
  ) {
    const order = await orders.lockOrder(tx, systemViewer(saga.tenantId), saga.context.orderId);
    if (order?.status !== "PENDING") return;
    const moves: TransitionEvent[] = [];
    await move(order, moves);
    await tx.execute(sql`select pg_notify(${SETTLED_CHANNEL}, ${saga.context.orderId})`);
    afterCommit(() => orders.runAfterHooks(moves));
  }

  const definition: SagaDefinition<PlacementContext> = {
    type: PLACE_ORDER_SAGA,
    steps: [
      {
        id: STEP.reserveStock,
        run: (c) => ({ topic: `inventory.${STEP.reserveStock}`, payload: { orderId: c.orderId, lines: c.lines.map((l) => ({ sku: l.sku, quantity: l.quantity })) } }),
        compensate: (c) => ({ topic: `inventory.${STEP.reserveStock}`, payload: { orderId: c.orderId } }),
      },
      {
        id: STEP.redeemCoupon,
        run: (c) =>
          c.couponCode ? { topic: `coupons.${STEP.redeemCoupon}`, payload: { orderId: c.orderId, code: c.couponCode, userId: c.userId, subtotal: c.subtotal } } : undefined,
        compensate: (c) => ({ topic: `coupons.${STEP.redeemCoupon}`, payload: { orderId: c.orderId } }),
      },
      {
        id: STEP.debitWallet,
        run: (c, results) =>
          c.paymentMethod === "balance"
            ? { topic: `payments.${STEP.debitWallet}`, payload: { orderId: c.orderId, userId: c.userId, amount: c.subtotal - discountOf(results) } }
            : undefined,
        compensate: (c) => ({ topic: `payments.${STEP.debitWallet}`, payload: { orderId: c.orderId } }),
      },
      {
        id: STEP.createShipment,
        run: (c) => (c.paymentMethod === "balance" ? { topic: `shipping.${STEP.createShipment}`, payload: { orderId: c.orderId, address: c.address } } : undefined),
        compensate: (c) => ({ topic: `shipping.${STEP.createShipment}`, payload: { orderId: c.orderId } }),
      },
    ],

    onCompleted: (tx, saga, afterCommit) =>
      settleOrder(tx, saga, afterCommit, async (order, moves) => {
        const c = saga.context;
        const discount = discountOf(saga.results);
        const paid = c.paymentMethod === "balance";
        const shipment = saga.results[STEP.createShipment] as ShipmentDocument | undefined;
        const moved = await orders.transition(tx, moves, {
          order,
          to: paid ? "PAID" : "CREATED",
          reason: "placement",
          patch: paid
            ? { discount, total: c.subtotal - discount, paymentStatus: "captured", shipmentWaybill: shipment?.waybill ?? null, shipmentStatus: shipment?.status ?? null }
            : { discount, total: c.subtotal - discount, paymentStatus: "pending", paymentDueAt: new Date(Date.parse(c.createdAt) + deps.paymentTimeoutMs) },
        });
        if (!moved.ok) throw new Error(`settling order ${c.orderId} failed: ${moved.reason}`);
        if (paid) {
          // TCC confirm: the reservation becomes a sale. At least once through the outbox, once through the barrier.
          await outbox.enqueue(tx, {
            tenantId: saga.tenantId,
            topic: `inventory.${STEP.reserveStock}`,
            payload: { sagaId: saga.id, step: STEP.reserveStock, op: "confirm", orderId: c.orderId },
          });
        } else {
          // The payments service answers the provider's callback from this.
          const payload = { orderId: c.orderId, amount: c.subtotal - discount, currency: deps.currency };
          await outbox.enqueue(tx, { tenantId: saga.tenantId, topic: PAYMENT_TOPICS.expected, payload });
        }
      }),

    onCompensated: (tx, saga, reason, afterCommit) =>
      settleOrder(tx, saga, afterCommit, async (order, moves) => {
        const cancelReason = (CANCEL_REASONS as readonly string[]).includes(reason) ? (reason as CancelReason) : null;
        await orders.transition(tx, moves, { order, to: "CANCELLED", reason, patch: { cancelReason, paymentStatus: "voided" } });
      }),
  };
  runner.register(definition);

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

  return {
    async start(): Promise<void> {
      unlisten = await database.listen(SETTLED_CHANNEL, (orderId) => {
        for (const wake of [...(waiters.get(orderId) ?? [])]) wake();
      });
    },

    async stop(): Promise<void> {
      await unlisten?.();
    },

    async place(input: PlaceOrderInput, options: PlaceOptions): Promise<PlacementResult> {
      const first = await orders.withMoves(database, input.tenantId, async (tx, moves): Promise<PlacementResult> => {
        const priced = priceItems(await orders.catalogue(tx, input.tenantId, input.items.map((i) => i.sku)), input.items);
        if ("kind" in priced) return priced;
        const orderId = newId("ord");
        const createdAt = clock.now();
        const draft = { id: orderId, ...input, ...priced, couponCode: input.couponCode ?? null, createdAt };
        const written = await orders.insertOrder(tx, moves, pendingOrder(draft, deps.currency));
        if (!written.ok) return { kind: "refused", reason: "TRANSITION_VETOED", detail: written.detail ?? written.reason };
        const context: PlacementContext = {
          orderId,
          userId: input.userId,
          lines: priced.lines,
          subtotal: priced.subtotal,
          couponCode: draft.couponCode,
          paymentMethod: input.paymentMethod,
          address: input.shippingAddress,
          createdAt: createdAt.toISOString(),
        };
        await runner.start(tx, PLACE_ORDER_SAGA, { id: orderId, tenantId: input.tenantId, context });
        const result = { kind: "pending" as const, order: (await orders.getOrder(tx, systemViewer(input.tenantId), orderId)) as OrderView };
        await options.record?.(tx, result);
        return result;
      });
      if (first.kind !== "pending" || options.respondAsync) return first;
      const settled = await waitForSettlement(input.tenantId, first.order.id, options.waitMs);
      if (!settled) return first;
      return settled.status === "CANCELLED"
        ? { kind: "refused", reason: (settled.cancelReason as PlacementRefusal | null) ?? "PLACEMENT_FAILED", detail: `the order was cancelled: ${settled.history.at(-1)?.reason}`, orderId: settled.id }
        : { kind: "placed", order: settled };
    },
  };
}

export type SagaPlacement = ReturnType<typeof createSagaPlacement>;

const discountOf = (results: Record<string, unknown>) => (results[STEP.redeemCoupon] as { discount: number } | undefined)?.discount ?? 0;
