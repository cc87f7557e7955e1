import { describe, expect, it } from "vitest";
import { testDatabases } from "./support/databases.ts";
import { createHarness } from "./support/harness.ts";

// The orders service of the split deployment prices orders from its copy of the catalogue, kept from
// the inventory service's product events. The broker may deliver them in any order.
describe.each(testDatabases())("the orders service's catalogue copy on $name", ({ open }) => {
  it("keeps the newest version of a product whatever order its events arrive in", async () => {
    const h = await createHarness(await open(), { strategy: "saga" });
    try {
      const { database, orders } = h.services;
      const deliver = (version: number, price: number) =>
        database.tenant("shop", (tx) => orders.rememberProduct(tx, { tenantId: "shop", sku: "TEA", name: `Tea v${version}`, price, version }));
      const copy = async () => (await orders.catalogue(database.db, "shop", ["TEA"])).get("TEA");

      await deliver(2, 200);
      await deliver(1, 100); // late: an older price never comes back
      expect(await copy()).toEqual({ name: "Tea v2", price: 200 });
      await deliver(2, 200); // a redelivery changes nothing
      await deliver(3, 300);
      expect(await copy()).toEqual({ name: "Tea v3", price: 300 });
    } finally {
      await h.close();
    }
  });
});
