import { z } from "zod";
import type { ServiceName } from "../config.ts";
import type { Tx } from "../db/client.ts";
import type { StepCall, StepFunction } from "../db/step-functions.ts";
import type { Clock } from "../kit/clock.ts";
import { ok, type Outcome } from "../kit/outcome.ts";
import type { Coupons } from "../modules/coupons/coupons.ts";
import type { Inventory } from "../modules/inventory/inventory.ts";
import type { Wallets } from "../modules/payments/wallets.ts";
import type { Shipping } from "../modules/shipping/shipping.ts";

// The steps orders are made of, each owned by one service and defined once: its payload, its try,
// and the cancel and confirm that undo or settle it, over that service's module. A flow lists steps;
// the local executor runs them in one transaction, the saga executor sends them as commands to their
// owners (topic `<owner>.<step>`), which run them behind the barrier in their own transactions.

/** The module front doors steps run on. In a split process only the owner's tables exist, and only the owner runs a step. */
export interface StepModules {
  inventory: Inventory;
  wallets: Wallets;
  coupons: Coupons;
  shipping: Shipping;
  clock: Clock;
}

/** What every step's context has: steps undo and confirm by order. */
export interface OrderContext {
  orderId: string;
}

export interface Step<P, R> {
  id: string;
  owner: ServiceName;
  /** The try command's payload, validated by the owner before it runs. */
  payload: z.ZodType<P>;
  /** The try. `confirm` asks for try and confirm at once, when both happen in one transaction (local executor). */
  try(m: StepModules, tx: Tx, tenantId: string, payload: P, options: { confirm: boolean }): Promise<Outcome<R, string>>;
  /** The owner's SQL function that is this step's try, and the call of it for a payload: what the composed placement runs (src/flows/composed.ts). */
  fn: StepFunction;
  call(m: StepModules, payload: P, options: { confirm: boolean }): StepCall;
  cancel(m: StepModules, tx: Tx, tenantId: string, orderId: string): Promise<void>;
  /** For a try that holds something until the order is paid (TCC): makes it final. */
  confirm?(m: StepModules, tx: Tx, tenantId: string, orderId: string): Promise<void>;
}

export const stepTopic = (step: { owner: string; id: string }) => `${step.owner}.${step.id}`;

const OrderId = z.string().min(1).max(64);
const Line = z.object({ sku: z.string(), quantity: z.number().int().positive() });
const AddressPayload = z.object({
  name: z.string(),
  phone: z.string(),
  line1: z.string(),
  line2: z.string().optional(),
  city: z.string(),
  postalCode: z.string().optional(),
  country: z.string(),
});

const ReserveStock = z.object({ orderId: OrderId, lines: z.array(Line).min(1) });
export const reserveStock: Step<z.infer<typeof ReserveStock>, null> = {
  id: "reserve-stock",
  owner: "inventory",
  payload: ReserveStock,
  async try(m, tx, tenantId, p, { confirm }) {
    const reserved = await m.inventory.reserve(tx, { tenantId, orderId: p.orderId, lines: p.lines, sold: confirm });
    return reserved.ok ? ok(null) : reserved;
  },
  fn: "inventory_reserve",
  call: (m, p, { confirm }) => m.inventory.reserveCall({ orderId: p.orderId, lines: p.lines, sold: confirm }),
  cancel: (m, tx, tenantId, orderId) => m.inventory.release(tx, { tenantId, orderId }),
  // The order was paid: its reservation becomes a sale.
  confirm: (m, tx, tenantId, orderId) => m.inventory.sell(tx, { tenantId, orderId }),
};

const RedeemCoupon = z.object({
  orderId: OrderId,
  code: z.string(),
  userId: z.string(),
  subtotal: z.number().int().nonnegative(),
  /** The discount rule the order was priced with (local executor): a coupon changed since is refused. */
  expected: z.object({ type: z.enum(["amount", "percent"]), value: z.number().int().nonnegative() }).optional(),
});
const redeemArgs = (m: StepModules, p: z.infer<typeof RedeemCoupon>) => ({ orderId: p.orderId, code: p.code, userId: p.userId, subtotal: p.subtotal, now: m.clock.now(), expected: p.expected });
export const redeemCoupon: Step<z.infer<typeof RedeemCoupon>, { discount: number }> = {
  id: "redeem-coupon",
  owner: "coupons",
  payload: RedeemCoupon,
  try: (m, tx, tenantId, p) => m.coupons.redeem(tx, { tenantId, ...redeemArgs(m, p) }),
  fn: "coupons_redeem",
  call: (m, p) => m.coupons.redeemCall(redeemArgs(m, p)),
  cancel: (m, tx, tenantId, orderId) => m.coupons.restore(tx, { tenantId, orderId }),
};

const DebitWallet = z.object({ orderId: OrderId, userId: z.string(), amount: z.number().int().nonnegative() });
export const debitWallet: Step<z.infer<typeof DebitWallet>, null> = {
  id: "debit-wallet",
  owner: "payments",
  payload: DebitWallet,
  async try(m, tx, tenantId, p) {
    const debited = await m.wallets.debit(tx, { tenantId, orderId: p.orderId, userId: p.userId, amount: p.amount });
    return debited.ok ? ok(null) : debited;
  },
  fn: "wallets_debit",
  call: (m, p) => m.wallets.debitCall(p),
  cancel: (m, tx, tenantId, orderId) => m.wallets.refund(tx, { tenantId, orderId }),
};

const CreateShipment = z.object({ orderId: OrderId, address: AddressPayload });
export const createShipment: Step<z.infer<typeof CreateShipment>, { waybill: string; status: "pending" | "shipped" | "delivered" | "cancelled" }> = {
  id: "create-shipment",
  owner: "shipping",
  payload: CreateShipment,
  async try(m, tx, tenantId, p) {
    const document = await m.shipping.createDocument(tx, { tenantId, orderId: p.orderId, address: p.address });
    return ok({ waybill: document.waybill, status: document.status });
  },
  fn: "shipping_create_document",
  call: (m, p) => m.shipping.createDocumentCall(p),
  cancel: async (m, tx, tenantId, orderId) => {
    await m.shipping.cancelDocument(tx, { tenantId, orderId });
  },
};

/** A command to a service that is not a step of a saga: sent, applied once, not answered. */
export interface Command<P> {
  name: string;
  owner: ServiceName;
  payload: z.ZodType<P>;
  run(m: StepModules, tx: Tx, tenantId: string, payload: P): Promise<void>;
}

export const commandTopic = (command: { owner: string; name: string }) => `${command.owner}.${command.name}`;

const UpdateShipment = z.object({
  orderId: OrderId,
  status: z.enum(["shipped", "delivered"]),
  carrier: z.string().optional(),
  trackingNumber: z.string().nullable().optional(),
});
/** The order was shipped or delivered: the shipment document follows. */
export const updateShipment: Command<z.infer<typeof UpdateShipment>> = {
  name: "update-shipment",
  owner: "shipping",
  payload: UpdateShipment,
  async run(m, tx, tenantId, p) {
    if (p.status === "shipped") await m.shipping.markShipped(tx, { tenantId, orderId: p.orderId, carrier: p.carrier ?? "", trackingNumber: p.trackingNumber ?? null });
    else await m.shipping.markDelivered(tx, { tenantId, orderId: p.orderId });
  },
};

// Lists hold steps and commands of different payloads; each validates its own with its schema.
export type AnyStep = Step<any, any>;
export type AnyCommand = Command<any>;

/** Every step and command, by owner: what each service's consumer must handle. */
export const STEPS: readonly AnyStep[] = [reserveStock, redeemCoupon, debitWallet, createShipment];
export const COMMANDS: readonly AnyCommand[] = [updateShipment];
