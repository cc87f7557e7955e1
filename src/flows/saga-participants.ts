import type { Clock } from "../kit/clock.ts";
import type { Outcome } from "../kit/outcome.ts";
import type { ParticipantStep, StepOutcome } from "../kit/saga.ts";
import type { Coupons } from "../modules/coupons/coupons.ts";
import type { Inventory, StockLine } from "../modules/inventory/inventory.ts";
import type { Wallets } from "../modules/payments/wallets.ts";
import type { Address } from "../modules/shipping/schema.ts";
import type { Shipping } from "../modules/shipping/shipping.ts";

// Each service's part in the placement saga: its module's operation and inverse, unchanged from the
// local strategy, run by sagaParticipant behind the barrier in the service's own transaction.

const stepOutcome = <T>(outcome: Outcome<T, string>): StepOutcome =>
  outcome.ok ? { ok: true, result: outcome.value ?? null } : { ok: false, reason: outcome.reason };

export const STEP = {
  reserveStock: "reserve-stock",
  redeemCoupon: "redeem-coupon",
  debitWallet: "debit-wallet",
  createShipment: "create-shipment",
} as const;

export function inventorySteps(inventory: Inventory): Record<string, ParticipantStep> {
  return {
    [STEP.reserveStock]: {
      try: async (tx, tenantId, c) =>
        stepOutcome(await inventory.reserve(tx, { tenantId, orderId: c.orderId as string, lines: c.lines as StockLine[], sold: false })),
      cancel: (tx, tenantId, c) => inventory.release(tx, { tenantId, orderId: c.orderId as string }),
      // Confirmed once the order is paid: the reservation becomes a sale.
      confirm: (tx, tenantId, c) => inventory.sell(tx, { tenantId, orderId: c.orderId as string }),
    },
  };
}

export function couponSteps(coupons: Coupons, clock: Clock): Record<string, ParticipantStep> {
  return {
    [STEP.redeemCoupon]: {
      try: async (tx, tenantId, c) =>
        stepOutcome(
          await coupons.redeem(tx, {
            tenantId,
            orderId: c.orderId as string,
            code: c.code as string,
            userId: c.userId as string,
            subtotal: c.subtotal as number,
            now: clock.now(),
          }),
        ),
      cancel: (tx, tenantId, c) => coupons.restore(tx, { tenantId, orderId: c.orderId as string }),
    },
  };
}

export function walletSteps(wallets: Wallets): Record<string, ParticipantStep> {
  return {
    [STEP.debitWallet]: {
      try: async (tx, tenantId, c) =>
        stepOutcome(await wallets.debit(tx, { tenantId, userId: c.userId as string, orderId: c.orderId as string, amount: c.amount as number })),
      cancel: (tx, tenantId, c) => wallets.refund(tx, { tenantId, orderId: c.orderId as string }),
    },
  };
}

export function shippingSteps(shipping: Shipping): Record<string, ParticipantStep> {
  return {
    [STEP.createShipment]: {
      try: async (tx, tenantId, c) => ({
        ok: true,
        result: await shipping.createDocument(tx, { tenantId, orderId: c.orderId as string, address: c.address as Address }),
      }),
      cancel: (tx, tenantId, c) => shipping.cancelDocument(tx, { tenantId, orderId: c.orderId as string }),
    },
  };
}
