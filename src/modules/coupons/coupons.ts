import { and, eq, sql } from "drizzle-orm";
import type { Queryable, Tx } from "../../db/client.ts";
import { callStep, type StepCall } from "../../db/step-functions.ts";
import { ok, type Outcome, refuse } from "../../kit/outcome.ts";
import { type Discount, discountFor } from "./pricing.ts";
import { coupons } from "./schema.ts";

export interface Coupon {
  code: string;
  discount: Discount;
  userId: string | null;
  minSubtotal: number | null;
  expiresAt: string | null;
  maxRedemptions: number;
  redemptions: number;
}

export interface CouponInput {
  discount: Discount;
  userId?: string | undefined;
  minSubtotal?: number | undefined;
  expiresAt?: Date | undefined;
  maxRedemptions?: number | undefined;
}

type CouponRow = typeof coupons.$inferSelect;

const view = (row: CouponRow): Coupon => ({
  code: row.code,
  discount: { type: row.discountType, value: row.discountValue },
  userId: row.userId,
  minSubtotal: row.minSubtotal,
  expiresAt: row.expiresAt?.toISOString() ?? null,
  maxRedemptions: row.maxRedemptions,
  redemptions: row.redemptions,
});

/** A coupon's terms: what a price preview needs, without the redemption count that changes with every order. */
export type CouponTerms = Omit<Coupon, "redemptions">;

/** Told in the writing transaction whenever a coupon's terms change (e.g. to drop cached copies). */
export type CouponChanged = (tx: Tx, coupon: { tenantId: string; code: string }) => Promise<void>;

export interface RedeemArgs {
  orderId: string;
  code: string;
  userId: string;
  subtotal: number;
  now: Date;
  /** The discount rule the order was priced with, when it was priced before the redemption. */
  expected?: Discount | undefined;
}

const redeemCall = (args: RedeemArgs): StepCall => ({
  fn: "coupons_redeem",
  input: {
    orderId: args.orderId,
    code: args.code,
    userId: args.userId,
    subtotal: args.subtotal,
    now: args.now.toISOString(),
    ...(args.expected ? { expected: args.expected } : {}),
  },
});

/** The coupons module's front door: definitions and redemptions. */
export function createCoupons(options: { onCouponChanged?: CouponChanged } = {}) {
  async function getCoupon(q: Queryable, tenantId: string, code: string): Promise<Coupon | undefined> {
    const [row] = await q.select().from(coupons).where(and(eq(coupons.tenantId, tenantId), eq(coupons.code, code)));
    return row && view(row);
  }

  return {
    getCoupon,

    /** Creates or replaces a coupon's terms; redemptions so far are kept. */
    async putCoupon(
      tx: Tx,
      tenantId: string,
      code: string,
      input: CouponInput,
    ): Promise<Outcome<{ coupon: Coupon; created: boolean }, "MAX_REDEMPTIONS_BELOW_REDEEMED">> {
      const terms = {
        discountType: input.discount.type,
        discountValue: input.discount.value,
        userId: input.userId ?? null,
        minSubtotal: input.minSubtotal ?? null,
        expiresAt: input.expiresAt ?? null,
        maxRedemptions: input.maxRedemptions ?? 1,
      };
      const [existing] = await tx
        .select({ redemptions: coupons.redemptions })
        .from(coupons)
        .where(and(eq(coupons.tenantId, tenantId), eq(coupons.code, code)))
        .for("update");
      if (existing && existing.redemptions > terms.maxRedemptions) {
        return refuse("MAX_REDEMPTIONS_BELOW_REDEEMED", `the coupon was already redeemed ${existing.redemptions} times`);
      }
      const [row] = await tx
        .insert(coupons)
        .values({ tenantId, code, ...terms })
        .onConflictDoUpdate({ target: [coupons.tenantId, coupons.code], set: { ...terms, updatedAt: sql`now()` } })
        .returning();
      await options.onCouponChanged?.(tx, { tenantId, code });
      return ok({ coupon: view(row as CouponRow), created: !existing });
    },

    /**
     * Redeems a coupon for one order if every term allows it (owner, minimum subtotal, expiry, limit),
     * in one conditional update, so concurrent orders never pass maxRedemptions. Idempotent per order.
     */
    redeemCall,

    /**
     * Redeems a coupon for an order, once per order, within its limits, and answers the discount
     * (coupons_redeem in the module's migrations). With `expected`, a coupon whose discount rule
     * is no longer that one is refused COUPON_CHANGED.
     */
    async redeem(tx: Tx, args: RedeemArgs & { tenantId: string }): Promise<Outcome<{ discount: number }, "COUPON_UNAVAILABLE" | "COUPON_CHANGED">> {
      const reply = await callStep(tx, args.tenantId, redeemCall(args));
      if (reply.refused) return refuse(reply.refused as "COUPON_UNAVAILABLE" | "COUPON_CHANGED", reply.detail);
      const rule = { type: reply.discountType as Discount["type"], value: Number(reply.discountValue) };
      return ok({ discount: discountFor(args.subtotal, rule) });
    },

    /** Gives back an order's redemption (the order was cancelled). Idempotent. */
    async restore(tx: Tx, args: { tenantId: string; orderId: string }): Promise<void> {
      const { tenantId, orderId } = args;
      await tx.execute(sql`
        with r as (
          update coupon_redemptions set status = 'restored'
          where tenant_id = ${tenantId} and order_id = ${orderId} and status = 'redeemed'
          returning code
        )
        update coupons set redemptions = redemptions - 1, updated_at = now()
        where tenant_id = ${tenantId} and code in (select code from r)`);
    },
  };
}

export type Coupons = ReturnType<typeof createCoupons>;
