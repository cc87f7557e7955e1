import { and, desc, eq, inArray, lt, or, sql } from "drizzle-orm";
import { type Queryable, rows, type Tx } from "../../db/client.ts";
import { callStep, type StepCall } from "../../db/step-functions.ts";
import { type Cursor, encodeCursor, page } from "../../kit/cursor.ts";
import { ok, type Outcome, refuse } from "../../kit/outcome.ts";
import { products, stockAdjustments, stockLevels } from "./schema.ts";

export interface Product {
  sku: string;
  name: string;
  price: number;
  currency: string;
  available: number;
}

export interface StockLine {
  sku: string;
  quantity: number;
}

export interface CatalogueEntry {
  name: string;
  price: number;
  currency: string;
}

const productColumns = {
  sku: products.sku,
  name: products.name,
  price: products.price,
  currency: products.currency,
  available: stockLevels.available,
  createdAt: products.createdAt,
};

/** Told in the writing transaction whenever a product's name or price changes (e.g. to put an event in the outbox). */
export type ProductChanged = (tx: Tx, product: ProductChange) => Promise<void>;

/** A product's name and price as of one version (the event other services keep copies from). */
export interface ProductChange {
  tenantId: string;
  sku: string;
  name: string;
  price: number;
  version: number;
}

/**
 * Told in the writing transaction whenever units become available again (a restock, a new product's
 * stock, a released reservation), e.g. to clear the sold-out gate's marks once it commits.
 */
export type StockReturned = (tx: Tx, change: { tenantId: string; skus: string[] }) => Promise<void>;

/** The refusal detail of a reservation short of these SKUs; `skusShortIn` reads it back. */
export const outOfStockDetail = (skus: readonly string[]) => `not enough stock of ${skus.join(", ")}`;

/** The SKUs an OUT_OF_STOCK detail names (none if it is not one of outOfStockDetail's). */
export function skusShortIn(detail: string): string[] {
  const named = /^not enough stock of (.+)$/.exec(detail)?.[1];
  return named ? named.split(", ") : [];
}

/** The inventory module's front door: catalogue, stock levels and reservations. */
export function createInventory(options: { currency: string; onProductChanged?: ProductChanged; onStockReturned?: StockReturned }) {
  const { currency } = options;

  async function findProduct(q: Queryable, tenantId: string, sku: string) {
    const [row] = await q
      .select(productColumns)
      .from(products)
      .innerJoin(stockLevels, and(eq(stockLevels.tenantId, products.tenantId), eq(stockLevels.sku, products.sku)))
      .where(and(eq(products.tenantId, tenantId), eq(products.sku, sku)));
    return row;
  }

  const view = ({ createdAt: _, ...product }: Product & { createdAt: Date }): Product => product;

  async function getProduct(q: Queryable, tenantId: string, sku: string): Promise<Product | undefined> {
    const row = await findProduct(q, tenantId, sku);
    return row && view(row);
  }

  const reserveCall = (args: { orderId: string; lines: StockLine[]; sold: boolean }): StepCall => ({
    fn: "inventory_reserve",
    input: { orderId: args.orderId, lines: args.lines.map(({ sku, quantity }) => ({ sku, quantity })), sold: args.sold },
  });

  return {
    getProduct,

    async listProducts(q: Queryable, tenantId: string, args: { limit: number; after?: Cursor | undefined }) {
      const { after } = args;
      const rows = await q
        .select(productColumns)
        .from(products)
        .innerJoin(stockLevels, and(eq(stockLevels.tenantId, products.tenantId), eq(stockLevels.sku, products.sku)))
        .where(
          and(
            eq(products.tenantId, tenantId),
            after && or(lt(products.createdAt, after.at), and(eq(products.createdAt, after.at), lt(products.sku, after.key))),
          ),
        )
        .orderBy(desc(products.createdAt), desc(products.sku))
        .limit(args.limit + 1);
      const result = page(rows, args.limit, (row) => encodeCursor(row.createdAt, row.sku));
      return { data: result.data.map(view), nextCursor: result.nextCursor };
    },

    /** Creates a product with its initial stock, or renames/reprices an existing one. */
    async putProduct(
      tx: Tx,
      args: { tenantId: string; sku: string; name: string; price: number; stock?: number | undefined },
    ): Promise<Outcome<{ product: Product; created: boolean }, "USE_STOCK_ADJUSTMENT">> {
      const { tenantId, sku, name, price } = args;
      const inserted = await tx
        .insert(products)
        .values({ tenantId, sku, name, price, currency })
        .onConflictDoNothing()
        .returning({ version: products.version });
      let version = inserted[0]?.version;
      if (version !== undefined) {
        const stock = args.stock ?? 0;
        await tx.insert(stockLevels).values({ tenantId, sku, initial: stock, available: stock });
        if (stock > 0) await options.onStockReturned?.(tx, { tenantId, skus: [sku] });
      } else {
        if (args.stock !== undefined) return refuse("USE_STOCK_ADJUSTMENT");
        const [updated] = await tx
          .update(products)
          .set({ name, price, version: sql`${products.version} + 1`, updatedAt: sql`now()` })
          .where(and(eq(products.tenantId, tenantId), eq(products.sku, sku)))
          .returning({ version: products.version });
        version = (updated as { version: number }).version;
      }
      await options.onProductChanged?.(tx, { tenantId, sku, name, price, version });
      const product = (await getProduct(tx, tenantId, sku)) as Product;
      return ok({ product, created: inserted.length === 1 });
    },

    /** Adds delta to the on-hand count; on-hand never drops below what live orders hold. */
    async adjustStock(
      tx: Tx,
      args: { tenantId: string; sku: string; delta: number },
    ): Promise<Outcome<Product, "PRODUCT_NOT_FOUND" | "INSUFFICIENT_STOCK">> {
      const { tenantId, sku, delta } = args;
      const updated = await tx
        .update(stockLevels)
        .set({ available: sql`${stockLevels.available} + ${delta}`, adjusted: sql`${stockLevels.adjusted} + ${delta}` })
        .where(and(eq(stockLevels.tenantId, tenantId), eq(stockLevels.sku, sku), sql`${stockLevels.available} + ${delta} >= 0`))
        .returning({ sku: stockLevels.sku });
      if (updated.length === 0) {
        const exists = await findProduct(tx, tenantId, sku);
        return exists ? refuse("INSUFFICIENT_STOCK", `only ${exists.available} unreserved units of ${sku}`) : refuse("PRODUCT_NOT_FOUND");
      }
      await tx.insert(stockAdjustments).values({ tenantId, sku, delta });
      if (delta > 0) await options.onStockReturned?.(tx, { tenantId, skus: [sku] });
      return ok((await getProduct(tx, tenantId, sku)) as Product);
    },

    /** Available units of these (tenant, sku) pairs, on any tenant's rows (the owner's handle): the sold-out gate's re-check. */
    async availableOfMany(q: Queryable, keys: readonly { tenantId: string; sku: string }[]): Promise<{ tenantId: string; sku: string; available: number }[]> {
      if (keys.length === 0) return [];
      const wanted = JSON.stringify(keys.map((k) => ({ tenant_id: k.tenantId, sku: k.sku })));
      const found = await rows<{ tenant_id: string; sku: string; available: string | number }>(q, sql`
        select s.tenant_id, s.sku, s.available from stock_levels s
        join jsonb_to_recordset(${wanted}::jsonb) as k(tenant_id text, sku text) on s.tenant_id = k.tenant_id and s.sku = k.sku`);
      return found.map((r) => ({ tenantId: r.tenant_id, sku: r.sku, available: Number(r.available) }));
    },

    /** Names and current prices of the given SKUs; a SKU missing from the map is unknown. */
    async catalogue(q: Queryable, tenantId: string, skus: string[]): Promise<Map<string, CatalogueEntry>> {
      const rows = await q
        .select({ sku: products.sku, name: products.name, price: products.price, currency: products.currency })
        .from(products)
        .where(and(eq(products.tenantId, tenantId), inArray(products.sku, skus)));
      return new Map(rows.map((r) => [r.sku, { name: r.name, price: r.price, currency: r.currency }]));
    },

    /** Units of a SKU on sale now (undefined: no such product). Read live, never cached. */
    async availableOf(q: Queryable, tenantId: string, sku: string): Promise<number | undefined> {
      const [row] = await q
        .select({ available: stockLevels.available })
        .from(stockLevels)
        .where(and(eq(stockLevels.tenantId, tenantId), eq(stockLevels.sku, sku)));
      return row?.available;
    },

    /**
     * Takes the order's units off `available`, into `reserved` (awaiting payment) or straight into
     * `sold`, for every line or for none, in SKU order, never below zero; idempotent per order
     * (inventory_reserve in the module's migrations).
     */
    reserveCall,

    async reserve(
      tx: Tx,
      args: { tenantId: string; orderId: string; lines: StockLine[]; sold: boolean },
    ): Promise<Outcome<void, "OUT_OF_STOCK">> {
      const reply = await callStep(tx, args.tenantId, reserveCall(args));
      // The detail is outOfStockDetail's, written by inventory_reserve (the sold-out gate reads it back).
      return reply.refused ? refuse("OUT_OF_STOCK", reply.detail) : ok(undefined);
    },

    /** Returns an order's reserved units to `available`. Idempotent; a no-op for sold units. */
    async release(tx: Tx, args: { tenantId: string; orderId: string }): Promise<void> {
      const skus = await moveReservation(tx, args, "reserved", "released");
      if (skus.length > 0) await options.onStockReturned?.(tx, { tenantId: args.tenantId, skus });
    },

    /** Turns an order's reservation into a sale (the order was paid). Idempotent. */
    async sell(tx: Tx, args: { tenantId: string; orderId: string }): Promise<void> {
      await moveReservation(tx, args, "reserved", "sold");
    },
  };
}

async function moveReservation(
  tx: Tx,
  { tenantId, orderId }: { tenantId: string; orderId: string },
  from: "reserved",
  to: "released" | "sold",
): Promise<string[]> {
  const moved = await rows<{ sku: string }>(tx, sql`
    with moved as (
      update stock_reservations set status = ${to}, updated_at = now()
      where tenant_id = ${tenantId} and order_id = ${orderId} and status = ${from}
      returning sku, quantity
    ),
    locked as (
      select s.sku from stock_levels s
      where s.tenant_id = ${tenantId} and s.sku in (select sku from moved)
      order by s.sku for update
    )
    update stock_levels s
    set reserved = s.reserved - moved.quantity,
        available = s.available + case when ${to} = 'released' then moved.quantity else 0 end,
        sold = s.sold + case when ${to} = 'sold' then moved.quantity else 0 end
    from moved
    where s.tenant_id = ${tenantId} and s.sku = moved.sku and s.sku in (select sku from locked)
    returning s.sku`);
  return moved.map((m) => m.sku);
}

export type Inventory = ReturnType<typeof createInventory>;
