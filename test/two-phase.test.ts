import { sql } from "drizzle-orm";
import pg from "pg";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { ServiceName } from "../src/config.ts";
import { rows } from "../src/db/client.ts";
import { postgresUrl } from "./support/databases.ts";
import { cuttableProxy } from "./support/faults.ts";
import { ADDRESS } from "./support/harness.ts";
import { amqpUrl, type Deployment, startDeployment, tailOfLogs, waitFor } from "./support/split.ts";

// Two-phase-commit placement (ORDERLY_PLACEMENT=2pc) in the split deployment, each service on a
// database of its own: the orders service prepares a transaction on each, logs its decision, commits.
// The coordinator is a real `orderly serve --services orders` killed with SIGKILL at the two points
// where a crash leaves transactions in doubt; the restarted one must finish them as decided.

const SERVICES: ServiceName[] = ["inventory", "payments", "coupons", "shipping", "orders"];
const TENANT = "split";

describe.runIf(postgresUrl() && amqpUrl())("two-phase-commit placement across five databases", () => {
  let d: Deployment;
  const admin = () => d.tokens.sign({ tenantId: TENANT, userId: "root", roles: ["admin"] });
  const buyer = (userId: string) => d.tokens.sign({ tenantId: TENANT, userId, roles: ["customer"] });
  /**
   * The orders service as coordinator: every service's database, in-doubt transactions decided after
   * 10 s (past any lock wait). It holds a pool per database; at the deployment's 10 connections each
   * that alone was 60, and with the services' own pools and the test file run beside this one the
   * server's 100 ran out in CI (a refusal's rollback then failed and was left to recovery).
   */
  const coordinatorEnv = (overrides: Partial<Record<ServiceName, string>> = {}) => ({
    ORDERLY_PLACEMENT: "2pc",
    ORDERLY_2PC_IN_DOUBT_MS: "10000",
    ORDERLY_DB_POOL_MAX: "4",
    ...Object.fromEntries(SERVICES.map((s) => [`ORDERLY_${s.toUpperCase()}_DATABASE_URL`, overrides[s] ?? d.databaseUrl(s)])),
  });
  const prepared = async () => {
    const gids: string[] = [];
    for (const service of SERVICES) {
      gids.push(...(await rows<{ gid: string }>(d.db(service), sql`select gid from pg_prepared_xacts where database = current_database() and gid like 'orderly-2pc:%'`)).map((r) => r.gid));
    }
    return gids;
  };
  const count = async (service: ServiceName, statement: ReturnType<typeof sql>) => (await rows<{ n: number }>(d.db(service), statement))[0]?.n ?? 0;
  const available = async (sku: string) =>
    (await rows<{ available: number }>(d.db("inventory"), sql`select available::int as available from stock_levels where tenant_id = ${TENANT} and sku = ${sku}`))[0]?.available;

  beforeAll(async () => {
    d = await startDeployment({ layout: "per-service" });
    for (const service of SERVICES.filter((s) => s !== "orders")) await d.start(service);
    await d.start("orders", "", coordinatorEnv());
    const root = await admin();
    expect((await d.call("inventory", "PUT", "/products/HOT", root, { name: "Hot", price: 500, stock: 25 })).status).toBe(201);
    expect((await d.call("inventory", "PUT", "/products/CALM", root, { name: "Calm", price: 200, stock: 1_000 })).status).toBe(201);
    for (let i = 0; i < 20; i++) await d.call("payments", "POST", `/accounts/b${i}/credits`, root, { amount: 3_000 });
    await d.call("coupons", "PUT", "/coupons/TWOPC", root, { discount: { type: "amount", value: 100 }, maxRedemptions: 10 });
    await waitFor(async () => (await rows(d.db("orders"), sql`select 1 from order_catalogue where tenant_id = ${TENANT}`)).length === 2, "the catalogue copy", 15_000);
  }, 120_000);

  afterEach((context) => {
    if (context.task.result?.state === "fail") process.stderr.write(`${tailOfLogs(d)}\n`);
  });

  afterAll(async () => {
    await d?.close();
  });

  it("places 60 concurrent orders all or nothing: no oversell, no double charge, nothing left prepared", { timeout: 120_000 }, async () => {
    const buyers = await Promise.all(Array.from({ length: 20 }, (_, i) => buyer(`b${i}`)));
    const answers = await Promise.all(
      Array.from({ length: 60 }, (_, i) =>
        d.call("orders", "POST", "/orders", buyers[i % 20] as string, {
          items: i % 3 === 0 ? [{ sku: "HOT", quantity: 1 }, { sku: "CALM", quantity: 2 }] : [{ sku: "HOT", quantity: 1 }],
          payment: { method: i % 5 === 0 ? "external" : "balance" },
          ...(i % 4 === 0 ? { couponCode: "TWOPC" } : {}),
          shippingAddress: ADDRESS,
        }),
      ),
    );
    const statuses = answers.map((a) => a.status);
    expect(statuses.every((s) => s === 201 || s === 202 || s === 409), JSON.stringify(answers.filter((a) => ![201, 202, 409].includes(a.status)))).toBe(true);
    const placed = answers.filter((a) => a.status === 201);
    expect(placed.length).toBeGreaterThan(0);
    for (const a of placed) expect(["PAID", "CREATED"]).toContain(a.body.status);
    // The answer is the order as recorded (not read back after its insert): what reading it gives.
    for (const [i, a] of answers.entries()) {
      if (a.status === 201) expect((await d.call("orders", "GET", `/orders/${a.body.id}`, buyers[i % 20] as string)).body).toEqual(a.body);
    }
    // A refusal took nothing and recorded no order (as in the all-in-one).
    for (const a of answers.filter((x) => x.status === 409)) expect(["OUT_OF_STOCK", "INSUFFICIENT_FUNDS", "COUPON_UNAVAILABLE"]).toContain(a.body.code);
    expect(await d.settle()).toEqual([]);
    expect(await available("HOT")).toBeGreaterThanOrEqual(0);
    expect(await prepared()).toEqual([]);
    const decided = await count("orders", sql`select count(*)::int as n from placement_decisions where decision = 'commit'`);
    expect(decided).toBe(placed.length);
  });

  it("rolls everything back when the coordinator is killed after every participant prepared and before its decision", { timeout: 120_000 }, async () => {
    const hotBefore = await available("CALM");
    const lock = new pg.Client({ connectionString: d.databaseUrl("orders") });
    await lock.connect();
    try {
      // The decision log is held: the coordinator prepares on four databases (no coupon here), then waits to log its decision.
      await lock.query("begin; lock table placement_decisions in share mode");
      const answer = d.call("orders", "POST", "/orders", await buyer("b1"), { items: [{ sku: "CALM", quantity: 1 }], payment: { method: "balance" }, shippingAddress: ADDRESS }).catch(() => undefined);
      await waitFor(async () => (await prepared()).length === 4, "four prepared transactions", 20_000);
      expect(await available("CALM")).toBe(hotBefore); // prepared: not seen by anyone yet
      await d.kill("orders");
      await answer;
      // The dead coordinator's server session still waits to insert its decision: it goes with it.
      await lock.query(`select pg_terminate_backend(pid) from pg_stat_activity where pid <> pg_backend_pid() and query like 'insert into "placement_decisions"%'`);
      await lock.query("rollback");
    } finally {
      await lock.end();
    }
    const [gid] = await prepared();
    const orderId = (gid as string).split(":")[1] as string;
    await d.start("orders", "", coordinatorEnv());
    await waitFor(async () => (await prepared()).length === 0, "recovery to finish the prepared transactions", 40_000);
    expect((await rows<{ decision: string }>(d.db("orders"), sql`select decision from placement_decisions where order_id = ${orderId}`))[0]?.decision).toBe("abort");
    expect(await count("orders", sql`select count(*)::int as n from orders where id = ${orderId}`)).toBe(0);
    expect(await count("payments", sql`select count(*)::int as n from wallet_entries where order_id = ${orderId}`)).toBe(0);
    expect(await available("CALM")).toBe(hotBefore);
    expect(await d.settle()).toEqual([]);
  });

  it("commits the rest when the coordinator is killed between two commits", { timeout: 120_000 }, async () => {
    const hotBefore = (await available("CALM")) as number;
    // The coordinator reaches the shipping database through a proxy this test cuts after the prepare.
    const proxy = await cuttableProxy(Number(new URL(d.databaseUrl("shipping")).port || 5432));
    try {
      await d.kill("orders");
      await d.start("orders", "", coordinatorEnv({ shipping: proxy.url(d.databaseUrl("shipping")) }));
      const lock = new pg.Client({ connectionString: d.databaseUrl("orders") });
      await lock.connect();
      let answer: Promise<{ status: number; body: Record<string, any> } | undefined>;
      try {
        await lock.query("begin; lock table placement_decisions in share mode");
        answer = d.call("orders", "POST", "/orders", await buyer("b2"), { items: [{ sku: "CALM", quantity: 1 }], payment: { method: "balance" }, shippingAddress: ADDRESS }).catch(() => undefined);
        await waitFor(async () => (await prepared()).length === 4, "four prepared transactions", 20_000);
        proxy.cut(); // the shipping database's COMMIT PREPARED cannot arrive
        await lock.query("rollback"); // the decision is logged, and the coordinator commits what it can reach
      } finally {
        await lock.end();
      }
      await waitFor(async () => (await prepared()).length === 1, "every participant but shipping committed", 20_000);
      expect((await prepared())[0]).toMatch(/:create-shipment$/);
      await d.kill("orders");
      await answer;
      proxy.restore();
      expect(await available("CALM")).toBe(hotBefore - 1);
      await d.start("orders", "", coordinatorEnv());
      await waitFor(async () => (await prepared()).length === 0, "recovery to commit the shipment document", 20_000);
    } finally {
      proxy.restore();
      await proxy.close();
    }
    const [order] = await rows<{ id: string; status: string; shipment_waybill: string }>(
      d.db("orders"),
      sql`select id, status, shipment_waybill from orders where tenant_id = ${TENANT} and user_id = 'b2' order by created_at desc limit 1`,
    );
    expect(order?.status).toBe("PAID");
    expect(await count("shipping", sql`select count(*)::int as n from shipments where order_id = ${order?.id as string}`)).toBe(1);
    expect(await d.settle()).toEqual([]);
  });
});
