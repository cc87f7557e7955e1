import { eq } from "drizzle-orm";
import { transaction } from "./db/client.ts";
import { products } from "./modules/inventory/schema.ts";
import type { Services } from "./services.ts";

export const DEMO_TENANT = "demo";

const DEMO_PRODUCTS = [
  { sku: "SKU-1", name: "Ceramic mug", price: 3900, stock: 500 },
  { sku: "SKU-2", name: "Green tea, 250 g", price: 6800, stock: 300 },
  { sku: "SKU-3", name: "Bamboo chopsticks, set of 5", price: 2500, stock: 1000 },
  { sku: "FLASH-1", name: "Flash-sale headphones", price: 19900, stock: 100 },
];
const DEMO_CUSTOMERS = [
  { userId: "alice", balance: 100_000 },
  { userId: "bob", balance: 20_000 },
];

/** Loads the demo tenant once (a second start finds it and changes nothing). */
export async function loadDemo(deps: Pick<Services, "database" | "inventory" | "wallets" | "coupons">): Promise<boolean> {
  const { database, inventory, wallets, coupons } = deps;
  const [existing] = await database.db.select({ sku: products.sku }).from(products).where(eq(products.tenantId, DEMO_TENANT)).limit(1);
  if (existing) return false;
  await transaction(database.db, async (tx) => {
    for (const product of DEMO_PRODUCTS) await inventory.putProduct(tx, { tenantId: DEMO_TENANT, ...product });
    for (const { userId, balance } of DEMO_CUSTOMERS) await wallets.credit(tx, { tenantId: DEMO_TENANT, userId, amount: balance });
    await coupons.putCoupon(tx, DEMO_TENANT, "WELCOME5", { discount: { type: "amount", value: 500 }, maxRedemptions: 1000 });
  });
  return true;
}
