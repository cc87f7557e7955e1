import type { Logger } from "pino";
import type { Database, Queryable, Tx } from "../db/client.ts";
import { sqlState } from "../db/errors.ts";
import type { Clock } from "../kit/clock.ts";
import type { IdGenerator } from "../kit/ids.ts";
import { type PricedLine, subtotalOf } from "../modules/coupons/pricing.ts";
import type { Coupons } from "../modules/coupons/coupons.ts";
import type { Inventory } from "../modules/inventory/inventory.ts";
import type { TransitionEvent } from "../modules/orders/hooks.ts";
import { type NewOrder, type OrderRow, type Orders, type OrderView, systemViewer } from "../modules/orders/orders.ts";
import type { PaymentMethod } from "../modules/orders/schema.ts";
import type { Wallets } from "../modules/payments/wallets.ts";
import type { Address } from "../modules/shipping/schema.ts";
import type { Shipping } from "../modules/shipping/shipping.ts";

export type PlacementRefusal = "OUT_OF_STOCK" | "INSUFFICIENT_FUNDS" | "COUPON_UNAVAILABLE" | "TRANSITION_VETOED" | "PLACEMENT_FAILED";

export interface PlaceOrderInput {
  tenantId: string;
  userId: string;
  items: { sku: string; quantity: number }[];
  couponCode?: string | undefined;
  paymentMethod: PaymentMethod;
  shippingAddress: Address;
}

export type PlacementResult =
  | { kind: "placed"; order: OrderView }
  | { kind: "pending"; order: OrderView }
  | { kind: "refused"; reason: PlacementRefusal; detail: string; orderId?: string }
  | { kind: "invalid"; code: "UNKNOWN_PRODUCT" | "AMOUNT_TOO_LARGE"; detail: string };

/** Called inside the placement's transaction with its result, e.g. to store the idempotent answer with it. */
export type RecordResult = (tx: Tx, result: Extract<PlacementResult, { kind: "placed" | "pending" }>) => Promise<void>;

export interface PlaceOptions {
  respondAsync: boolean;
  waitMs: number;
  record?: RecordResult;
}

/** Prices the requested items from a catalogue (name and price per SKU), lines sorted by SKU. */
export function priceItems(
  catalogue: Map<string, { name: string; price: number }>,
  items: { sku: string; quantity: number }[],
): { lines: PricedLine[]; subtotal: number } | Extract<PlacementResult, { kind: "invalid" }> {
  const unknown = items.map((i) => i.sku).filter((sku) => !catalogue.has(sku));
  if (unknown.length > 0) return { kind: "invalid", code: "UNKNOWN_PRODUCT", detail: `no product ${unknown.join(", ")}` };
  const lines = items
    .map((item) => {
      const { name, price: unitPrice } = catalogue.get(item.sku) as { name: string; price: number };
      return { sku: item.sku, name, quantity: item.quantity, unitPrice, lineTotal: unitPrice * item.quantity };
    })
    .sort((a, b) => (a.sku < b.sku ? -1 : 1));
  const subtotal = subtotalOf(lines);
  if (subtotal === undefined) return { kind: "invalid", code: "AMOUNT_TOO_LARGE", detail: "the order total is too large" };
  return { lines, subtotal };
}

/** A new order as recorded PENDING: nothing taken yet, the total not yet discounted. */
export function pendingOrder(
  draft: { id: string; tenantId: string; userId: string; lines: PricedLine[]; subtotal: number; couponCode: string | null; paymentMethod: PaymentMethod; shippingAddress: Address },
  currency: string,
): NewOrder {
  return {
    ...draft,
    status: "PENDING",
    discount: 0,
    total: draft.subtotal,
    currency,
    paymentStatus: "pending",
    paymentDueAt: null,
    shipment: null,
    path: [{ to: "PENDING", reason: "placed" }],
  };
}

/** What placement needs of an order, whether it is new or was recorded PENDING earlier. */
interface Draft {
  id: string;
  tenantId: string;
  userId: string;
  lines: PricedLine[];
  subtotal: number;
  couponCode: string | null;
  paymentMethod: PaymentMethod;
  shippingAddress: Address;
  createdAt: Date;
}

/** Thrown inside the placement transaction to roll every step back; never leaves this file. */
class Refused extends Error {
  constructor(
    readonly reason: Exclude<PlacementRefusal, "PLACEMENT_FAILED">,
    readonly detail: string,
  ) {
    super(reason);
  }
}

const LOCK_TIMEOUT = "55P03";
export const DEFAULT_WAIT_MS = 3_000;

export interface PlacementDeps {
  database: Database;
  inventory: Inventory;
  wallets: Wallets;
  coupons: Coupons;
  shipping: Shipping;
  orders: Orders;
  clock: Clock;
  newId: IdGenerator;
  currency: string;
  paymentTimeoutMs: number;
  log: Logger;
}

/**
 * Placement, local strategy: every step is a module operation on ONE transaction, so stock, coupon,
 * wallet and shipment document commit together or not at all. The hot stock rows are locked last,
 * by the final statement, so they are held only until the commit.
 */
export function createPlacement(deps: PlacementDeps) {
  const { database, inventory, wallets, coupons, shipping, orders, clock, newId, log } = deps;
  const inFlight = new Set<Promise<void>>();

  async function settle(tx: Tx, moves: TransitionEvent[], draft: Draft, pending?: OrderRow): Promise<void> {
    const { tenantId, userId, id: orderId } = draft;
    let discount = 0;
    if (draft.couponCode) {
      const redeemed = await coupons.redeem(tx, { tenantId, orderId, userId, code: draft.couponCode, subtotal: draft.subtotal, now: clock.now() });
      if (!redeemed.ok) throw new Refused(redeemed.reason, redeemed.detail ?? "the coupon cannot be used");
      discount = redeemed.value.discount;
    }
    const total = draft.subtotal - discount;
    const paid = draft.paymentMethod === "balance";
    if (paid) {
      const debited = await wallets.debit(tx, { tenantId, userId, orderId, amount: total });
      if (!debited.ok) throw new Refused(debited.reason, `the wallet holds less than ${total}`);
    }
    const shipment = paid ? await shipping.createDocument(tx, { tenantId, orderId, address: draft.shippingAddress }) : null;
    const status = paid ? "PAID" : "CREATED";
    const paymentDueAt = paid ? null : new Date(draft.createdAt.getTime() + deps.paymentTimeoutMs);
    const paymentStatus = paid ? "captured" : "pending";
    const written = pending
      ? await orders.transition(tx, moves, {
          order: pending,
          to: status,
          reason: "placement",
          patch: { discount, total, paymentStatus, paymentDueAt, shipmentWaybill: shipment?.waybill ?? null, shipmentStatus: shipment?.status ?? null },
        })
      : await orders.insertOrder(tx, moves, {
          ...draft,
          status,
          discount,
          total,
          currency: deps.currency,
          paymentStatus,
          paymentDueAt,
          shipment,
          path: [
            { to: "PENDING", reason: "placed" },
            { to: status, reason: "placement" },
          ],
        });
    if (!written.ok) throw new Refused("TRANSITION_VETOED", written.detail ?? written.reason);
    const reserved = await inventory.reserve(tx, { tenantId, orderId, lines: draft.lines, sold: paid });
    if (!reserved.ok) throw new Refused(reserved.reason, reserved.detail ?? "not enough stock");
  }

  /** Records the order PENDING (no stock, money or coupon taken yet) so it can be answered 202. */
  async function recordPending(tx: Tx, moves: TransitionEvent[], draft: Draft): Promise<OrderView> {
    const written = await orders.insertOrder(tx, moves, pendingOrder(draft, deps.currency));
    if (!written.ok) throw new Refused("TRANSITION_VETOED", written.detail ?? written.reason);
    return (await orders.getOrder(tx, systemViewer(draft.tenantId), draft.id)) as OrderView;
  }

  /** Finishes a PENDING order: placed, or cancelled with the refusal as its reason. */
  async function settlePending(tenantId: string, orderId: string): Promise<void> {
    try {
      await orders.withMoves(database, tenantId, async (tx, moves) => {
        const order = await orders.lockOrder(tx, systemViewer(tenantId), orderId, { skipLocked: true });
        if (order?.status !== "PENDING") return; // settled already, or another worker holds it
        const lines = await orders.orderLines(tx, tenantId, orderId);
        await settle(tx, moves, { ...order, lines, createdAt: order.createdAt }, order);
      });
    } catch (error) {
      if (!(error instanceof Refused)) throw error;
      await orders.withMoves(database, tenantId, async (tx, moves) => {
        const order = await orders.lockOrder(tx, systemViewer(tenantId), orderId);
        if (order?.status !== "PENDING") return;
        await orders.transition(tx, moves, {
          order,
          to: "CANCELLED",
          reason: error.reason,
          patch: { cancelReason: error.reason === "TRANSITION_VETOED" ? null : error.reason, paymentStatus: "voided" },
        });
      });
    }
  }

  function settleInBackground(tenantId: string, orderId: string): void {
    const run = settlePending(tenantId, orderId)
      .catch((error) => log.error({ err: error, orderId }, "settling a pending order failed; the recovery sweep will retry"))
      .finally(() => inFlight.delete(run));
    inFlight.add(run);
  }

  async function price(q: Queryable, input: PlaceOrderInput) {
    return priceItems(await inventory.catalogue(q, input.tenantId, input.items.map((i) => i.sku)), input.items);
  }

  return {
    /**
     * Places an order in one tenant transaction: priced, then settled (PAID or CREATED), or with
     * `respondAsync` recorded PENDING and settled in the background. If the settlement waits on a row
     * lock longer than `waitMs`, it is rolled back and the order is recorded PENDING instead (202).
     * `record` runs inside the transaction with the result, so what it stores commits with the order.
     */
    async place(input: PlaceOrderInput, options: PlaceOptions): Promise<PlacementResult> {
      let draft: Draft | undefined;
      const keep = async (tx: Tx, result: Extract<PlacementResult, { kind: "placed" | "pending" }>) => {
        await options.record?.(tx, result);
        return result;
      };
      let result: PlacementResult;
      try {
        result = await orders.withMoves(
          database,
          input.tenantId,
          async (tx, moves) => {
            const priced = await price(tx, input);
            if ("kind" in priced) return priced;
            draft = {
              id: newId("ord"),
              tenantId: input.tenantId,
              userId: input.userId,
              lines: priced.lines,
              subtotal: priced.subtotal,
              couponCode: input.couponCode ?? null,
              paymentMethod: input.paymentMethod,
              shippingAddress: input.shippingAddress,
              createdAt: clock.now(),
            };
            if (options.respondAsync) return keep(tx, { kind: "pending", order: await recordPending(tx, moves, draft) });
            await settle(tx, moves, draft);
            return keep(tx, { kind: "placed", order: (await orders.getOrder(tx, systemViewer(input.tenantId), draft.id)) as OrderView });
          },
          { lockTimeoutMs: options.waitMs },
        );
      } catch (error) {
        if (error instanceof Refused) return { kind: "refused", reason: error.reason, detail: error.detail };
        if (sqlState(error) !== LOCK_TIMEOUT || !draft) throw error;
        const late = draft;
        result = await orders.withMoves(database, input.tenantId, async (tx, moves) => keep(tx, { kind: "pending", order: await recordPending(tx, moves, late) }));
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

export type Placement = ReturnType<typeof createPlacement>;
