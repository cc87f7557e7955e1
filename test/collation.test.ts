import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openTestPostgres, postgresUrl } from "./support/databases.ts";
import { ADDRESS, createHarness, type Harness, STRATEGIES } from "./support/harness.ts";

// An order's answer lists its lines as they were priced (code-unit order of SKUs), and a read of it
// as stored. On a database whose collation sorts SKUs otherwise (ICU en-US: a-2 a1 A9 b B, where
// code units give A9 B a-2 a1 b) the two must still agree: every view orders lines itself.
const SKUS = ["b", "B", "a1", "a-2", "A9"];

describe.skipIf(!postgresUrl()).each(STRATEGIES)("an order's lines on a PostgreSQL database collated en-US (ICU), $strategy placement", ({ strategy }) => {
  let h: Harness;
  let buyer: string;

  beforeAll(async () => {
    h = await createHarness(await openTestPostgres({ createOptions: "template template0 locale_provider icu icu_locale 'en-US'" }), { strategy });
    buyer = await h.token("shop", "ada");
    await h.seed("shop", { products: SKUS.map((sku) => [sku, 100, 5] as [string, number, number]), credits: [["ada", 10_000]] });
  });
  afterAll(() => h?.close());

  it("answers the placement, the order and the list of orders with its lines in one order", async () => {
    const placed = await h.call("POST", "/api/v1/orders", {
      token: buyer,
      body: { items: SKUS.map((sku) => ({ sku, quantity: 1 })), payment: { method: "balance" }, shippingAddress: ADDRESS },
    });
    expect([201, 202]).toContain(placed.status);
    const lines = (order: { items: { sku: string }[] }) => order.items.map((i) => i.sku);
    expect(lines(placed.body)).toEqual(["A9", "B", "a-2", "a1", "b"]);
    expect(lines((await h.call("GET", `/api/v1/orders/${placed.body.id}`, { token: buyer })).body)).toEqual(lines(placed.body));
    expect(lines((await h.call("GET", "/api/v1/orders", { token: buyer })).body.data[0])).toEqual(lines(placed.body));
  });
});
