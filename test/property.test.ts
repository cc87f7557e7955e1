import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { discountFor } from "../src/modules/coupons/pricing.ts";
import { createHarness, type Harness, databaseStrategyCases } from "./support/harness.ts";
import { invariantViolations } from "./support/invariants.ts";

const SKUS = ["P0", "P1", "P2"];
const PRICES = [300, 700, 1100];
const USERS = ["u0", "u1"];

type Op =
  | { kind: "place"; user: number; lines: [number, number][]; external: boolean; coupon: boolean }
  | { kind: "cancel"; order: number; admin: boolean }
  | { kind: "ship"; order: number }
  | { kind: "complete"; order: number }
  | { kind: "adjust"; sku: number; delta: number }
  | { kind: "credit"; user: number; amount: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({
      kind: fc.constant("place" as const),
      user: fc.integer({ min: 0, max: 1 }),
      lines: fc.uniqueArray(fc.tuple(fc.integer({ min: 0, max: 2 }), fc.integer({ min: 1, max: 4 })), { minLength: 1, maxLength: 3, selector: ([sku]) => sku }),
      external: fc.boolean(),
      coupon: fc.boolean(),
    }),
  },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("cancel" as const), order: fc.nat(30), admin: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("ship" as const), order: fc.nat(30) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("complete" as const), order: fc.nat(30) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("adjust" as const), sku: fc.integer({ min: 0, max: 2 }), delta: fc.integer({ min: -6, max: 6 }).filter((d) => d !== 0) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("credit" as const), user: fc.integer({ min: 0, max: 1 }), amount: fc.integer({ min: 1, max: 5000 }) }) },
);

/** What the shop should look like: the test predicts every answer from it. */
interface Model {
  available: number[];
  balance: number[];
  couponLeft: number;
  orders: { id: string; user: number; status: string; lines: [number, number][]; coupon: boolean }[];
}

const cases = databaseStrategyCases();

describe.each(cases)("random operation sequences on $name", ({ database, strategy }) => {
  let h: Harness;
  let run = 0;
  beforeAll(async () => {
    h = await createHarness(await database.open(), { strategy });
  });
  afterAll(() => h.close());

  it("answer as the model predicts and keep invariants 1-3", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 5, maxLength: 25 }), async (ops) => {
        const tenant = `prop-${run++}`;
        const admin = await h.token(tenant, "root", ["admin"]);
        const users = await Promise.all(USERS.map((u) => h.token(tenant, u)));
        const model: Model = { available: [5, 5, 5], balance: [4000, 1500], couponLeft: 2, orders: [] };
        await h.seed(tenant, {
          products: SKUS.map((sku, i) => [sku, PRICES[i] as number, model.available[i] as number]),
          credits: USERS.map((u, i) => [u, model.balance[i] as number]),
        });
        await h.call("PUT", "/api/v1/coupons/SAVE20", { token: admin, body: { discount: { type: "percent", value: 20 }, maxRedemptions: 2 } });

        for (const op of ops) {
          switch (op.kind) {
            case "place": {
              const subtotal = op.lines.reduce((s, [sku, q]) => s + (PRICES[sku] as number) * q, 0);
              const total = op.coupon ? subtotal - discountFor(subtotal, { type: "percent", value: 20 }) : subtotal;
              const refusals = {
                COUPON_UNAVAILABLE: op.coupon && model.couponLeft === 0,
                INSUFFICIENT_FUNDS: !op.external && (model.balance[op.user] as number) < total,
                OUT_OF_STOCK: op.lines.some(([sku, q]) => (model.available[sku] as number) < q),
              };
              // Both executors refuse for a reason that holds. The local one runs the placement's steps in
              // their defined order (coupon, wallet, stock): the first that refuses is the answer. The saga
              // runs independent steps at once, so when several refuse, whichever answered first is.
              const applicable = (["COUPON_UNAVAILABLE", "INSUFFICIENT_FUNDS", "OUT_OF_STOCK"] as const).filter((reason) => refusals[reason]);
              const expected = applicable[0] ?? "ok";
              const r = await h.call("POST", "/api/v1/orders", {
                token: users[op.user],
                body: h.orderBody(
                  op.lines.map(([sku, q]) => [SKUS[sku] as string, q]),
                  { payment: { method: op.external ? "external" : "balance" }, ...(op.coupon ? { couponCode: "SAVE20" } : {}) },
                ),
              });
              if (expected !== "ok") {
                expect(r.status).toBe(409);
                // The sold-out gate answers OUT_OF_STOCK before any step runs, for a SKU refused a moment ago.
                if (strategy === "local" && r.body.code !== "OUT_OF_STOCK") expect(r.body.code).toBe(expected);
                else expect(applicable).toContain(r.body.code);
                break;
              }
              expect(r.status).toBe(201);
              expect(r.body).toMatchObject({ status: op.external ? "CREATED" : "PAID", total });
              for (const [sku, q] of op.lines) model.available[sku] = (model.available[sku] as number) - q;
              if (!op.external) model.balance[op.user] = (model.balance[op.user] as number) - total;
              if (op.coupon) model.couponLeft--;
              model.orders.push({ id: r.body.id, user: op.user, status: r.body.status, lines: op.lines, coupon: op.coupon });
              break;
            }
            case "cancel": {
              const order = model.orders[op.order % Math.max(model.orders.length, 1)];
              if (!order) break;
              const r = await h.call("POST", `/api/v1/orders/${order.id}/cancel`, { token: op.admin ? admin : users[order.user] });
              if (order.status !== "CREATED") {
                expect(r.status).toBe(409);
                break;
              }
              expect(r.body).toMatchObject({ status: "CANCELLED", cancelReason: op.admin ? "ADMIN_CANCELLED" : "CUSTOMER_CANCELLED" });
              order.status = "CANCELLED";
              for (const [sku, q] of order.lines) model.available[sku] = (model.available[sku] as number) + q;
              if (order.coupon) model.couponLeft++;
              // The saga strategy gives stock and coupon back by messages, a moment after the answer.
              if (strategy === "saga") await h.quiesce();
              break;
            }
            case "ship":
            case "complete": {
              const order = model.orders[op.order % Math.max(model.orders.length, 1)];
              if (!order) break;
              const [from, to] = op.kind === "ship" ? ["PAID", "SHIPPED"] : ["SHIPPED", "COMPLETED"];
              const r = await h.call("POST", `/api/v1/orders/${order.id}/${op.kind}`, { token: admin, body: op.kind === "ship" ? { carrier: "SF" } : undefined });
              expect(r.status).toBe(order.status === from ? 200 : 409);
              if (r.status === 200) order.status = to as string;
              break;
            }
            case "adjust": {
              const r = await h.call("POST", `/api/v1/products/${SKUS[op.sku]}/stock`, { token: admin, body: { delta: op.delta } });
              const next = (model.available[op.sku] as number) + op.delta;
              expect(r.status).toBe(next >= 0 ? 200 : 409);
              if (next >= 0) model.available[op.sku] = next;
              break;
            }
            case "credit": {
              const r = await h.call("POST", `/api/v1/accounts/${USERS[op.user]}/credits`, { token: admin, body: { amount: op.amount } });
              model.balance[op.user] = (model.balance[op.user] as number) + op.amount;
              expect(r.body.balance).toBe(model.balance[op.user]);
              break;
            }
          }
        }
        await h.quiesce();
        for (const [i, sku] of SKUS.entries()) {
          expect((await h.call("GET", `/api/v1/products/${sku}`, { token: admin })).body.available).toBe(model.available[i]);
        }
        expect(await invariantViolations(h.services.database.db)).toEqual([]);
      }),
      { numRuns: strategy === "saga" ? 15 : database.name === "pglite" ? 40 : 25 },
    );
  });
});
