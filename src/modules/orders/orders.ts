import { and, asc, desc, eq, inArray, lt, lte, or, sql } from "drizzle-orm";
import { type Database, type Queryable, rows, type TenantOptions, transaction, type Tx } from "../../db/client.ts";
import type { Clock } from "../../kit/clock.ts";
import { type Cursor, encodeCursor, page } from "../../kit/cursor.ts";
import { ok, type Outcome, refuse } from "../../kit/outcome.ts";
import type { Outbox } from "../../kit/outbox.ts";
import type { PricedLine } from "../coupons/pricing.ts";
import type { Address } from "../shipping/schema.ts";
import type { TransitionEvent, TransitionHooks } from "./hooks.ts";
import {
  type CancelReason,
  catalogueEntries,
  orderHistory,
  orderItems,
  orders,
  type OrderStatus,
  type PaymentMethod,
  type PaymentStatus,
  type ShipmentStatus,
} from "./schema.ts";
import { canMove, canMovePayment, type OrderActor } from "./state-machine.ts";

export type OrderRow = typeof orders.$inferSelect;

/** The order as the API shows it (api-contract.md §4, Orders). */
export interface OrderView {
  id: string;
  orderNumber: string;
  tenantId: string;
  userId: string;
  status: OrderStatus;
  version: number;
  items: PricedLine[];
  subtotal: number;
  discount: number;
  total: number;
  currency: string;
  couponCode: string | null;
  payment: { method: PaymentMethod; status: PaymentStatus; externalTxnId: string | null };
  shipment: { waybill: string; carrier: string | null; trackingNumber: string | null; status: ShipmentStatus } | null;
  shippingAddress: Address;
  cancelReason: CancelReason | null;
  history: { from: OrderStatus | null; to: OrderStatus; at: string; reason: string | null }[];
  createdAt: string;
  updatedAt: string;
}

export interface NewOrder {
  id: string;
  tenantId: string;
  userId: string;
  status: OrderStatus;
  lines: PricedLine[];
  subtotal: number;
  discount: number;
  total: number;
  currency: string;
  couponCode: string | null;
  paymentMethod: PaymentMethod;
  paymentStatus: PaymentStatus;
  paymentDueAt: Date | null;
  shippingAddress: Address;
  shipment: { waybill: string; status: ShipmentStatus } | null;
  /** The moves that led here, e.g. [PENDING] or [PENDING, PAID]. */
  path: { to: OrderStatus; reason: string | null }[];
}

/** Who is asking: customers see only their own orders, admins every order of their tenant. */
export interface Viewer {
  tenantId: string;
  userId: string;
  admin: boolean;
}

export type TransitionRefusal = "INVALID_TRANSITION" | "VERSION_MISMATCH" | "TRANSITION_VETOED";

/** What a move may change besides the status and the payment status, which only move() sets. */
export type OrderPatch = Partial<
  Pick<
    OrderRow,
    | "discount"
    | "total"
    | "externalTxnId"
    | "cancelReason"
    | "paymentDueAt"
    | "shipmentWaybill"
    | "shipmentCarrier"
    | "shipmentTrackingNumber"
    | "shipmentStatus"
  >
>;

/**
 * What every order event carries: the order as it is after the change, with its version, so a
 * consumer that keeps a copy applies an event only if it is newer than what it has (events may arrive
 * out of order).
 */
export interface OrderSnapshot {
  id: string;
  tenantId: string;
  userId: string;
  status: OrderStatus;
  version: number;
  total: number;
  currency: string;
  paymentMethod: PaymentMethod;
  paymentStatus: PaymentStatus;
  externalTxnId: string | null;
  cancelReason: CancelReason | null;
  shipment: { waybill: string; carrier: string | null; trackingNumber: string | null; status: ShipmentStatus } | null;
}

/** Topics of the order events: one per status reached, and `order.updated` for a change without a status move. */
export const ORDER_EVENT_TOPIC_PATTERN = "order.*";
export const orderEventTopic = (status: OrderStatus | null) => (status ? `order.${status.toLowerCase()}` : "order.updated");

function snapshotOf(row: OrderRow): OrderSnapshot {
  return {
    id: row.id,
    tenantId: row.tenantId,
    userId: row.userId,
    status: row.status,
    version: row.version,
    total: row.total,
    currency: row.currency,
    paymentMethod: row.paymentMethod,
    paymentStatus: row.paymentStatus,
    externalTxnId: row.externalTxnId,
    cancelReason: row.cancelReason,
    shipment: row.shipmentWaybill
      ? { waybill: row.shipmentWaybill, carrier: row.shipmentCarrier, trackingNumber: row.shipmentTrackingNumber, status: row.shipmentStatus ?? "pending" }
      : null,
  };
}

/** A new order ready for orders_record (see prepareOrder). */
export interface PreparedOrder {
  record: object;
  events: TransitionEvent[];
  view(orderNumber: string): OrderView;
  /** The row as recorded, without reading it back. */
  row(orderNumber: string): OrderRow;
}

/** A PENDING order's settlement ready for orders_settle (see prepareSettlement). */
export interface PreparedSettlement {
  record: object;
  events: TransitionEvent[];
}

/** One move of an order: a status move, a payment move, or both, made on behalf of `by`. */
export interface Move {
  order: OrderRow;
  by: OrderActor;
  /** The new status; omitted for a change of the payment alone. */
  to?: OrderStatus;
  /** The new payment status, checked against its own table of moves. */
  payment?: PaymentStatus;
  reason: string | null;
  expectedVersion?: number | undefined;
  patch?: OrderPatch;
}

// Items and history come with the order in the same SQL statement (lateral join + json_agg), not N+1.
const withRelations = {
  items: { orderBy: [asc(orderItems.sku)] },
  history: { orderBy: [asc(orderHistory.id)] },
};

type LoadedOrder = OrderRow & { items: (typeof orderItems.$inferSelect)[]; history: (typeof orderHistory.$inferSelect)[] };

/**
 * Lines by SKU in code-unit order: the order a placement prices them in, and the order every view
 * lists them in, whatever the database's collation (under en_US, 'a1' sorts before 'a-2').
 */
export const bySku = (a: { sku: string }, b: { sku: string }) => (a.sku < b.sku ? -1 : a.sku > b.sku ? 1 : 0);

function toView(row: LoadedOrder): OrderView {
  return {
    id: row.id,
    orderNumber: row.orderNumber,
    tenantId: row.tenantId,
    userId: row.userId,
    status: row.status,
    version: row.version,
    items: [...row.items].sort(bySku).map((i) => ({ sku: i.sku, name: i.name, quantity: i.quantity, unitPrice: i.unitPrice, lineTotal: i.lineTotal })),
    subtotal: row.subtotal,
    discount: row.discount,
    total: row.total,
    currency: row.currency,
    couponCode: row.couponCode,
    payment: { method: row.paymentMethod, status: row.paymentStatus, externalTxnId: row.externalTxnId },
    shipment: row.shipmentWaybill
      ? {
          waybill: row.shipmentWaybill,
          carrier: row.shipmentCarrier,
          trackingNumber: row.shipmentTrackingNumber,
          status: row.shipmentStatus ?? "pending",
        }
      : null,
    shippingAddress: row.shippingAddress,
    cancelReason: row.cancelReason,
    history: row.history.map((h) => ({ from: h.from, to: h.to, at: h.at.toISOString(), reason: h.reason })),
    createdAt: row.createdAt.toISOString(),
    updatedAt: row.updatedAt.toISOString(),
  };
}

/** The viewer of system work (placement, callbacks, sweepers): every order of one tenant. */
export const systemViewer = (tenantId: string): Viewer => ({ tenantId, userId: "", admin: true });

const visibleTo = (viewer: Viewer) =>
  and(eq(orders.tenantId, viewer.tenantId), viewer.admin ? undefined : eq(orders.userId, viewer.userId));

/** The orders module's front door: the order records and the one function that moves them. */
export function createOrders(deps: { hooks: TransitionHooks; clock: Clock; outbox: Outbox }) {
  const { hooks, clock, outbox } = deps;

  const announce = (tx: Tx, row: OrderRow, status: OrderStatus | null) =>
    outbox.enqueue(tx, { tenantId: row.tenantId, topic: orderEventTopic(status), payload: snapshotOf(row) });

  /**
   * A new order as orders_record (the module's SQL function) records it, once no hook vetoes the moves
   * that lead to its status: the record, the moves (for the after-hooks once it committed), and its
   * view as the API shows it once the database has given it a number.
   */
  async function prepareOrder(draft: NewOrder): Promise<Outcome<PreparedOrder, "TRANSITION_VETOED">> {
    // The moves that lead to a new order's status are the placement's moves of the table, like any other.
    const [first, ...later] = draft.path;
    if (first?.to !== "PENDING") throw new Error(`a new order starts PENDING, not ${first?.to}`);
    let from: OrderStatus = first.to;
    for (const { to } of later) {
      if (!canMove(from, to, "placement")) throw new Error(`a new order cannot be recorded as moved from ${from} to ${to}`);
      from = to;
    }
    if (from !== draft.status) throw new Error(`a new order's moves end at ${from}, not at its status ${draft.status}`);
    const at = clock.now();
    const events: TransitionEvent[] = draft.path.map((step, i) => ({
      tenantId: draft.tenantId,
      orderId: draft.id,
      from: i === 0 ? null : (draft.path[i - 1] as { to: OrderStatus }).to,
      to: step.to,
      reason: step.reason,
      version: i + 1,
      at,
    }));
    for (const event of events) {
      const veto = await hooks.vetoOf(event);
      if (veto) return refuse("TRANSITION_VETOED", veto);
    }
    const row: Omit<LoadedOrder, "orderNumber"> = {
      id: draft.id,
      tenantId: draft.tenantId,
      userId: draft.userId,
      status: draft.status,
      version: draft.path.length,
      subtotal: draft.subtotal,
      discount: draft.discount,
      total: draft.total,
      currency: draft.currency,
      couponCode: draft.couponCode,
      paymentMethod: draft.paymentMethod,
      paymentStatus: draft.paymentStatus,
      externalTxnId: null,
      shippingAddress: draft.shippingAddress,
      shipmentWaybill: draft.shipment?.waybill ?? null,
      shipmentCarrier: null,
      shipmentTrackingNumber: null,
      shipmentStatus: draft.shipment?.status ?? null,
      cancelReason: null,
      paymentDueAt: draft.paymentDueAt,
      createdAt: at,
      updatedAt: at,
      items: draft.lines.map((l) => ({ tenantId: draft.tenantId, orderId: draft.id, ...l })),
      history: events.map((e, i) => ({ id: i, tenantId: e.tenantId, orderId: e.orderId, from: e.from, to: e.to, reason: e.reason, at })),
    };
    const { items: _items, history: _history, createdAt: _createdAt, updatedAt: _updatedAt, ...columns } = row;
    const record = {
      ...columns,
      at: at.toISOString(),
      lines: draft.lines,
      history: events.map((e) => ({ from: e.from, to: e.to, reason: e.reason })),
      event: outbox.draft(orderEventTopic(draft.status), snapshotOf({ ...row, orderNumber: "" })),
    };
    return ok({ record, events, view: (orderNumber) => toView({ ...row, orderNumber }), row: (orderNumber) => ({ ...columns, createdAt: at, updatedAt: at, orderNumber }) });
  }

  /**
   * The checks every move passes before it is written: who may make it, the payment's own moves, the
   * expected version, the before-hooks. The event it makes, or the refusal.
   */
  async function checkMove(order: OrderRow, args: Omit<Move, "order" | "patch">, at: Date): Promise<Outcome<TransitionEvent | undefined, TransitionRefusal>> {
    const { to, payment, reason, by } = args;
    if (args.expectedVersion !== undefined && args.expectedVersion !== order.version) {
      return refuse("VERSION_MISMATCH", `the order is at version ${order.version}`);
    }
    if (to !== undefined && !canMove(order.status, to, by)) {
      return refuse("INVALID_TRANSITION", `an order cannot move from ${order.status} to ${to}${to === order.status ? "" : ` on behalf of ${by}`}`);
    }
    if (payment !== undefined && payment !== order.paymentStatus && !canMovePayment(order.paymentStatus, payment)) {
      return refuse("INVALID_TRANSITION", `the order's payment cannot move from ${order.paymentStatus} to ${payment}`);
    }
    const event: TransitionEvent | undefined =
      to === undefined ? undefined : { tenantId: order.tenantId, orderId: order.id, from: order.status, to, reason, version: order.version + 1, at };
    const veto = event && (await hooks.vetoOf(event));
    return veto ? refuse("TRANSITION_VETOED", veto) : ok(event);
  }

  async function getOrder(q: Queryable, viewer: Viewer, orderId: string): Promise<OrderView | undefined> {
    const row = await q.query.orders.findFirst({ where: and(eq(orders.id, orderId), visibleTo(viewer)), with: withRelations });
    return row && toView(row);
  }

  return {
    getOrder,

    async listOrders(
      q: Queryable,
      viewer: Viewer,
      filter: { limit: number; after?: Cursor | undefined; status?: OrderStatus | undefined; userId?: string | undefined; orderNumber?: string | undefined },
    ): Promise<{ data: OrderView[]; nextCursor: string | null }> {
      const { after } = filter;
      const rows = await q.query.orders.findMany({
        where: and(
          visibleTo(viewer),
          filter.status && eq(orders.status, filter.status),
          filter.userId !== undefined ? eq(orders.userId, filter.userId) : undefined,
          filter.orderNumber !== undefined ? eq(orders.orderNumber, filter.orderNumber) : undefined,
          after && or(lt(orders.createdAt, after.at), and(eq(orders.createdAt, after.at), lt(orders.id, after.key))),
        ),
        orderBy: [desc(orders.createdAt), desc(orders.id)],
        limit: filter.limit + 1,
        with: withRelations,
      });
      const result = page(rows, filter.limit, (row) => encodeCursor(row.createdAt, row.id));
      return { data: result.data.map(toView), nextCursor: result.nextCursor };
    },

    prepareOrder,

    /**
     * Records a new order with its lines and the moves that led to its status, vetoable by hooks;
     * gives its view as recorded (orders_record returns its number), without reading it back.
     */
    async insertOrder(tx: Tx, moves: TransitionEvent[], draft: NewOrder): Promise<Outcome<OrderView, "TRANSITION_VETOED">> {
      const prepared = await prepareOrder(draft);
      if (!prepared.ok) return prepared;
      const [recorded] = await rows<{ number: string }>(tx, sql`select orders_record(${draft.tenantId}, ${JSON.stringify(prepared.value.record)}::jsonb) as number`);
      moves.push(...prepared.value.events);
      return ok(prepared.value.view((recorded as { number: string }).number));
    },

    /**
     * The placement's move of a PENDING order (read, not locked) to its settlement, checked as move()
     * checks every move, ready for orders_settle: the composed placement writes it in the same
     * statement as the steps, compared and set at the order's version.
     */
    async prepareSettlement(
      order: OrderRow,
      settlement: { status: OrderStatus; paymentStatus: PaymentStatus; patch: Required<Pick<OrderPatch, "discount" | "total" | "paymentDueAt" | "shipmentWaybill" | "shipmentStatus">> },
    ): Promise<Outcome<PreparedSettlement, TransitionRefusal>> {
      const at = clock.now();
      const checked = await checkMove(order, { by: "placement", to: settlement.status, payment: settlement.paymentStatus, reason: "placement" }, at);
      if (!checked.ok) return checked;
      const settled: OrderRow = { ...order, ...settlement.patch, status: settlement.status, paymentStatus: settlement.paymentStatus, version: order.version + 1, updatedAt: at };
      const { patch } = settlement;
      const record = {
        id: order.id,
        version: settled.version,
        status: settled.status,
        paymentStatus: settled.paymentStatus,
        discount: patch.discount,
        total: patch.total,
        paymentDueAt: patch.paymentDueAt?.toISOString() ?? null,
        shipmentWaybill: patch.shipmentWaybill,
        shipmentStatus: patch.shipmentStatus,
        reason: "placement",
        at: at.toISOString(),
        event: outbox.draft(orderEventTopic(settled.status), snapshotOf(settled)),
      };
      return ok({ record, events: checked.value ? [checked.value] : [] });
    },

    /** Locks an order row for a move; undefined when it does not exist or is not the viewer's. */
    async lockOrder(tx: Tx, viewer: Viewer, orderId: string, options: { skipLocked?: boolean } = {}): Promise<OrderRow | undefined> {
      const [row] = await tx
        .select()
        .from(orders)
        .where(and(eq(orders.id, orderId), visibleTo(viewer)))
        .for("update", options.skipLocked ? { skipLocked: true } : {});
      return row;
    },

    /**
     * The one function that changes an order after it was recorded: checks that `by` may make the
     * status move and that the payment move is in its table, checks the expected version, asks the
     * before-hooks, compare-and-sets the version, appends history and writes the order's event to the
     * outbox, all in the caller's transaction (which holds the row lock: lockOrder).
     */
    async move(tx: Tx, moves: TransitionEvent[], args: Move): Promise<Outcome<OrderRow, TransitionRefusal>> {
      const { order, to, payment, reason } = args;
      const at = clock.now();
      const checked = await checkMove(order, args, at);
      if (!checked.ok) return checked;
      const event = checked.value;
      const [updated] = await tx
        .update(orders)
        .set({ ...args.patch, status: to ?? order.status, paymentStatus: payment ?? order.paymentStatus, version: order.version + 1, updatedAt: at })
        .where(and(eq(orders.id, order.id), eq(orders.version, order.version)))
        .returning();
      if (!updated) return refuse("VERSION_MISMATCH", "the order changed meanwhile");
      if (event) {
        await tx.insert(orderHistory).values({ tenantId: order.tenantId, orderId: order.id, from: order.status, to: event.to, reason, at });
        moves.push(event);
      }
      await announce(tx, updated, to ?? null);
      return ok(updated);
    },

    /**
     * Keeps the copy of a product's name and price (from the inventory service's events). Events may
     * arrive out of order: an older version never overwrites a newer one.
     */
    async rememberProduct(tx: Tx, product: { tenantId: string; sku: string; name: string; price: number; version: number }): Promise<void> {
      const entry = { ...product, updatedAt: clock.now() };
      await tx
        .insert(catalogueEntries)
        .values(entry)
        .onConflictDoUpdate({
          target: [catalogueEntries.tenantId, catalogueEntries.sku],
          set: { name: entry.name, price: entry.price, version: entry.version, updatedAt: entry.updatedAt },
          setWhere: sql`${catalogueEntries.version} < excluded.version`,
        });
    },

    /** Names and prices from the copy; a SKU missing from the map is unknown. */
    async catalogue(q: Queryable, tenantId: string, skus: string[]): Promise<Map<string, { name: string; price: number }>> {
      const found = await q
        .select({ sku: catalogueEntries.sku, name: catalogueEntries.name, price: catalogueEntries.price })
        .from(catalogueEntries)
        .where(and(eq(catalogueEntries.tenantId, tenantId), inArray(catalogueEntries.sku, skus)));
      return new Map(found.map((r) => [r.sku, { name: r.name, price: r.price }]));
    },

    /** Claims CREATED orders whose payment is overdue (and not captured), skipping rows another worker holds. Across tenants. */
    async lockOverdue(tx: Tx, now: Date, limit: number): Promise<OrderRow[]> {
      return tx
        .select()
        .from(orders)
        .where(and(eq(orders.status, "CREATED"), eq(orders.paymentStatus, "pending"), lte(orders.paymentDueAt, now)))
        .orderBy(asc(orders.paymentDueAt))
        .limit(limit)
        .for("update", { skipLocked: true });
    },

    /** The after-hooks of moves made in a transaction someone else committed (a saga reply's). */
    runAfterHooks: (moves: TransitionEvent[]) => hooks.runAfter(moves),

    /** Like withMoves, across tenants: the owner's transaction, for system jobs only. */
    async withSystemMoves<T>(database: Database, work: (tx: Tx, moves: TransitionEvent[]) => Promise<T>): Promise<T> {
      const moves: TransitionEvent[] = [];
      const result = await transaction(database.db, (tx) => work(tx, moves));
      await hooks.runAfter(moves);
      return result;
    },

    /** Runs work in one tenant transaction and, once it committed, the after-hooks of the moves it made. */
    async withMoves<T>(
      database: Database,
      tenantId: string,
      work: (tx: Tx, moves: TransitionEvent[]) => Promise<T>,
      options?: TenantOptions,
    ): Promise<T> {
      const moves: TransitionEvent[] = [];
      const result = await database.tenant(tenantId, (tx) => work(tx, moves), options);
      await hooks.runAfter(moves);
      return result;
    },

    /** An order's row with its lines, in one statement; undefined when there is none. For system work on the owner's handle: the tenant filter is its only scope. */
    async orderWithLines(q: Queryable, tenantId: string, orderId: string): Promise<(OrderRow & { lines: PricedLine[] }) | undefined> {
      const found = await q.query.orders.findFirst({ where: and(eq(orders.id, orderId), eq(orders.tenantId, tenantId)), with: { items: withRelations.items } });
      if (!found) return undefined;
      const { items, ...row } = found;
      return { ...row, lines: items.map((i) => ({ sku: i.sku, name: i.name, quantity: i.quantity, unitPrice: i.unitPrice, lineTotal: i.lineTotal })) };
    },

    /** Orders still PENDING since before `olderThan`, oldest first. */
    async stalePending(q: Queryable, olderThan: Date, limit: number): Promise<{ id: string; tenantId: string }[]> {
      return q
        .select({ id: orders.id, tenantId: orders.tenantId })
        .from(orders)
        .where(and(eq(orders.status, "PENDING"), lt(orders.createdAt, olderThan)))
        .orderBy(asc(orders.createdAt))
        .limit(limit);
    },
  };
}

export type Orders = ReturnType<typeof createOrders>;
