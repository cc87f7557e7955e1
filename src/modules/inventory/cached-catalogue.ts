import type { Queryable, Tx } from "../../db/client.ts";
import { type Cache, cacheKey } from "../../kit/cache.ts";
import type { CatalogueEntry, Inventory } from "./inventory.ts";

/**
 * Product names, prices and currency through the cache (src/kit/cache.ts), for pricing and product
 * pages. Stock is never in it: `available` is read live, and reservations decide in the database.
 */
export function createCachedCatalogue(deps: { cache: Cache<CatalogueEntry>; inventory: Inventory }) {
  const { cache, inventory } = deps;
  return {
    /**
     * The entries of the SKUs that exist (a SKU missing from the map is unknown), the ones no cache
     * level holds read with `q` in one query. Pass the transaction you are in, or the database outside one.
     */
    async entries(q: Queryable, tenantId: string, skus: readonly string[]): Promise<Map<string, CatalogueEntry>> {
      const skuOf = new Map(skus.map((sku) => [cacheKey(tenantId, sku), sku]));
      const found = await cache.getMany([...skuOf.keys()], async (keys) => {
        const loaded = await inventory.catalogue(q, tenantId, keys.map((key) => skuOf.get(key) as string));
        return new Map([...loaded].map(([sku, entry]) => [cacheKey(tenantId, sku), entry]));
      });
      return new Map([...found].map(([key, entry]) => [skuOf.get(key) as string, entry]));
    },

    /** Drops entries found stale (a placement's statement saw other prices), here and in every replica. */
    forget(tenantId: string, skus: readonly string[]): Promise<void> {
      return cache.invalidate(skus.map((sku) => cacheKey(tenantId, sku)));
    },

    /** Called in the transaction that changes a product's name or price: every replica drops it when it commits. */
    changed(tx: Tx, tenantId: string, skus: readonly string[]): Promise<void> {
      return cache.invalidateOnCommit(
        tx,
        skus.map((sku) => cacheKey(tenantId, sku)),
      );
    },
  };
}

export type CachedCatalogue = ReturnType<typeof createCachedCatalogue>;
