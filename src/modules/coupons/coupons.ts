import { and, eq, sql } from "drizzle-orm";
import { type Queryable, rows, type Tx } from "../../db/client.ts";
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
    async redeem(
      tx: Tx,
      args: { tenantId: string; orderId: string; code: string; userId: string; subtotal: number; now: Date },
    ): Promise<Outcome<{ discount: number }, "COUPON_UNAVAILABLE">> {
      const { tenantId, orderId, code, userId, subtotal, now } = args;
      const result = await rows<{ discount_type: "amount" | "percent"; discount_value: string }>(tx, sql`
        with c as (
          update coupons set redemptions = redemptions + 1, updated_at = now()
          where tenant_id = ${tenantId} and code = ${code}
            and redemptions < max_redemptions
            and (user_id is null or user_id = ${userId})
            and (min_subtotal is null or min_subtotal <= ${subtotal})
            and (expires_at is null or expires_at > ${now.toISOString()}::timestamptz)
            and not exists (select 1 from coupon_redemptions where tenant_id = ${tenantId} and order_id = ${orderId})
          returning discount_type, discount_value
        ),
        r as (
          insert into coupon_redemptions (tenant_id, order_id, code, user_id, status)
          select ${tenantId}, ${orderId}, ${code}, ${userId}, 'redeemed' from c
        )
        select discount_type, discount_value from c`);
      const row = result[0];
      if (row) return ok({ discount: discountFor(subtotal, { type: row.discount_type, value: Number(row.discount_value) }) });
      const coupon = await getCoupon(tx, tenantId, code);
      const [held] = await rows(tx, sql`
        select 1 from coupon_redemptions where tenant_id = ${tenantId} and order_id = ${orderId} and status = 'redeemed'`);
      if (coupon && held) return ok({ discount: discountFor(subtotal, coupon.discount) });
      return refuse("COUPON_UNAVAILABLE", coupon ? `coupon ${code} cannot be used for this order` : `no coupon ${code}`);
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
