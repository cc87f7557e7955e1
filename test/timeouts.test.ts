import { sql } from "drizzle-orm";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../src/config.ts";
import { rows } from "../src/db/client.ts";
import { openPostgres } from "../src/db/postgres.ts";
import { manualClock } from "../src/kit/clock.ts";
import { startJobs } from "../src/ops/jobs.ts";
import { createServices } from "../src/services.ts";
import { openTestPglite, openTestPostgres, postgresUrl } from "./support/databases.ts";
import { createHarness, type Harness, databaseStrategyCases, TEST_SECRETS } from "./support/harness.ts";
import { invariantViolations } from "./support/invariants.ts";

const TIMEOUT_MS = 900_000;

const cases = databaseStrategyCases();

describe.each(cases)("payment timeouts on $name", ({ database, strategy }) => {
  const clock = manualClock(new Date());
  let h: Harness;
  let admin: string;
  let dave: string;

  beforeAll(async () => {
    h = await createHarness(await database.open(), { clock, strategy });
    admin = await h.token("late", "root", ["admin"]);
    dave = await h.token("late", "dave");
    await h.seed("late", { products: [["LAMP", 4000, 3]] });
    await h.call("PUT", "/api/v1/coupons/LATE10", { token: admin, body: { discount: { type: "amount", value: 10 } } });
  });
  afterAll(() => h.close());

  it("cancels an unpaid order once it is overdue, not before, returning stock and coupon", async () => {
    const placed = await h.call("POST", "/api/v1/orders", {
      token: dave,
      body: h.orderBody([["LAMP", 2]], { payment: { method: "external" }, couponCode: "LATE10" }),
    });
    expect(placed.body.status).toBe("CREATED");
    clock.advance(TIMEOUT_MS - 1000);
    expect(await h.services.paymentTimeouts.sweep()).toBe(0);
    clock.advance(2000);
    expect(await h.services.paymentTimeouts.sweep()).toBe(1);
    await h.quiesce();
    const order = (await h.call("GET", `/api/v1/orders/${placed.body.id}`, { token: dave })).body;
    expect(order).toMatchObject({ status: "CANCELLED", cancelReason: "PAYMENT_TIMEOUT", payment: { status: "voided" } });
    expect(order.history.at(-1)).toMatchObject({ from: "CREATED", to: "CANCELLED", reason: "PAYMENT_TIMEOUT" });
    expect((await h.call("GET", "/api/v1/products/LAMP", { token: dave })).body.available).toBe(3);
    expect((await h.call("GET", "/api/v1/coupons/LATE10", { token: admin })).body.redemptions).toBe(0);
    expect(await h.services.paymentTimeouts.sweep()).toBe(0);
    expect(await invariantViolations(h.services.database.db)).toEqual([]);
  });

  it("leaves paid and wallet orders alone", async () => {
    await h.call("POST", "/api/v1/accounts/dave/credits", { token: admin, body: { amount: 10_000 } });
    const paid = await h.call("POST", "/api/v1/orders", { token: dave, body: h.orderBody([["LAMP", 1]]) });
    clock.advance(2 * TIMEOUT_MS);
    expect(await h.services.paymentTimeouts.sweep()).toBe(0);
    expect((await h.call("GET", `/api/v1/orders/${paid.body.id}`, { token: dave })).body.status).toBe("PAID");
  });
});

describe("payment timeouts in a running process", () => {
  it("cancels within the timeout plus 10 s, by the background job alone", async () => {
    const h = await createHarness(await openTestPglite(), { env: { ORDERLY_PAYMENT_TIMEOUT_MS: "1000" } });
    const stop = startJobs(h.services, { paymentSweepMs: 250 });
    try {
      await h.seed("rt", { products: [["CLOCK", 100, 5]] });
      const token = await h.token("rt", "erin");
      const placed = await h.call("POST", "/api/v1/orders", { token, body: h.orderBody([["CLOCK", 1]], { payment: { method: "external" } }) });
      const started = Date.now();
      let status = placed.body.status as string;
      while (status === "CREATED" && Date.now() - started < 11_000) {
        await new Promise((r) => setTimeout(r, 100));
        status = (await h.call("GET", `/api/v1/orders/${placed.body.id}`, { token })).body.status;
      }
      expect(status).toBe("CANCELLED");
    } finally {
      await stop();
      await h.close();
    }
  });
});

describe.runIf(postgresUrl())("two sweepers racing on PostgreSQL", () => {
  it("cancel each overdue order exactly once", async () => {
    const clock = manualClock(new Date());
    const first = await openTestPostgres();
    const h = await createHarness(first, { clock });
    const second = openPostgres(first.url);
    const other = createServices({ config: loadConfig({}), database: second, secrets: TEST_SECRETS, log: pino({ level: "silent" }), clock });
    try {
      await h.seed("race", { products: [["A", 100, 500], ["B", 200, 500], ["C", 300, 500]] });
      const token = await h.token("race", "fay");
      const ids: string[] = [];
      for (let i = 0; i < 60; i++) {
        const items: [string, number][] = i % 2 ? [["A", 1], ["C", 2]] : [["B", 1], ["A", 2]];
        const r = await h.call("POST", "/api/v1/orders", { token, body: h.orderBody(items, { payment: { method: "external" } }) });
        ids.push(r.body.id);
      }
      clock.advance(TIMEOUT_MS + 1);
      const counts = await Promise.all([h.services.paymentTimeouts.sweep(7), other.paymentTimeouts.sweep(7), h.services.paymentTimeouts.sweep(), other.paymentTimeouts.sweep()]);
      const rest = (await h.services.paymentTimeouts.sweep()) + (await other.paymentTimeouts.sweep());
      expect(counts.reduce((a, b) => a + b, 0) + rest).toBe(60);
      const cancels = await rows<{ order_id: string; n: number }>(
        first.db,
        sql`select order_id, count(*)::int as n from order_history where to_status = 'CANCELLED' group by order_id`,
      );
      expect(cancels).toHaveLength(60);
      expect(cancels.every((c) => c.n === 1)).toBe(true);
      expect(await invariantViolations(first.db)).toEqual([]);
      const stock = await rows<{ available: string }>(first.db, sql`select available from stock_levels where tenant_id = 'race' order by sku`);
      expect(stock.map((s) => Number(s.available))).toEqual([500, 500, 500]);
    } finally {
      await other.close();
      await second.close();
      await h.close();
    }
  });
});
