import type { Queryable, Tx } from "../../db/client.ts";
import { type Cache, cacheKey } from "../../kit/cache.ts";
import type { Coupons, CouponTerms } from "./coupons.ts";

/**
 * Coupon terms through the cache (src/kit/cache.ts): enough to preview a discount or refuse an
 * unknown code early. Whether a coupon may still be redeemed is decided only by `coupons.redeem`'s
 * conditional update, never from here.
 */
export function createCachedCouponTerms(deps: { cache: Cache<CouponTerms>; coupons: Coupons }) {
  const { cache, coupons } = deps;
  return {
    /** The terms of a coupon, undefined if there is none. Pass the transaction you are in, or the database outside one. */
    terms(q: Queryable, tenantId: string, code: string): Promise<CouponTerms | undefined> {
      return cache.get(cacheKey(tenantId, code), async () => {
        const coupon = await coupons.getCoupon(q, tenantId, code);
        if (!coupon) return undefined;
        const { redemptions: _, ...terms } = coupon;
        return terms;
      });
    },

    /** Drops terms found stale (a placement's redemption saw another rule), here and in every replica. */
    forget(tenantId: string, code: string): Promise<void> {
      return cache.invalidate([cacheKey(tenantId, code)]);
    },

    /** Called in the transaction that changes a coupon's terms: every replica drops it when it commits. */
    changed(tx: Tx, tenantId: string, code: string): Promise<void> {
      return cache.invalidateOnCommit(tx, [cacheKey(tenantId, code)]);
    },
  };
}

export type CachedCouponTerms = ReturnType<typeof createCachedCouponTerms>;
