import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { sql } from "drizzle-orm";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { createTokens } from "../src/auth/tokens.ts";
import { createWebhookSignatures } from "../src/auth/webhooks.ts";
import type { ServiceName } from "../src/config.ts";
import { rows } from "../src/db/client.ts";
import { backlogOf } from "../src/kit/backlog.ts";
import { deleteRabbitTopology } from "../src/kit/rabbit-bus.ts";
import { DEFAULT_RETRY_DELAYS_MS } from "../src/kit/relay.ts";
import { BUS_CONSUMERS } from "../src/services.ts";
import { openTestPostgres, postgresUrl } from "./support/databases.ts";
import { ADDRESS } from "./support/harness.ts";
import { invariantViolations } from "./support/invariants.ts";

function amqpUrl(): string | undefined {
  const url = process.env.AMQP_URL;
  if (!url && process.env.CI === "true") throw new Error("AMQP_URL is not set: the split deployment suite cannot run in CI");
  return url;
}

const BIN = join(import.meta.dirname, "..", "bin", "orderly.mjs");
const SECRET = "split-secret-split-secret-split-secret-01";
const WEBHOOK_SECRET = "split-webhook-secret-0123456789";
const SERVICES: ServiceName[] = ["inventory", "payments", "coupons", "shipping", "orders"];

const freePort = () =>
  new Promise<number>((resolve) => {
    const server = createServer().listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => resolve(typeof address === "object" && address ? address.port : 0));
    });
  });

async function waitFor(check: () => Promise<boolean>, what: string, ms: number) {
  const until = Date.now() + ms;
  while (!(await check().catch(() => false))) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe.runIf(postgresUrl() && amqpUrl())("split deployment: five processes on PostgreSQL and RabbitMQ", () => {
  let database: Awaited<ReturnType<typeof openTestPostgres>>;
  const processes = new Map<ServiceName, ChildProcess>();
  const ports = new Map<ServiceName, number>();
  const logs = new Map<ServiceName, string>();
  const dataDir = mkdtempSync(join(tmpdir(), "orderly-split-"));
  const prefix = `split-${randomBytes(4).toString("hex")}`;
  const tokens = createTokens({ secret: SECRET });

  async function start(service: ServiceName, replica = "") {
    const name = `${service}${replica}` as ServiceName;
    const port = ports.get(name) ?? (await freePort());
    ports.set(name, port);
    const child = spawn(process.execPath, [BIN, "serve", "--services", service], {
      env: {
        PATH: process.env.PATH,
        PORT: String(port),
        DATABASE_URL: database.url,
        AMQP_URL: amqpUrl(),
        ORDERLY_AMQP_PREFIX: prefix,
        ORDERLY_JWT_SECRET: SECRET,
        ORDERLY_WEBHOOK_SECRET: WEBHOOK_SECRET,
        ORDERLY_DATA_DIR: dataDir,
        ORDERLY_RATE_LIMIT_RPS: "100000",
        ORDERLY_RATE_LIMIT_BURST: "100000",
        LOG_LEVEL: "warn",
      },
    });
    child.stdout?.on("data", (d) => logs.set(name, (logs.get(name) ?? "") + d));
    child.stderr?.on("data", (d) => logs.set(name, (logs.get(name) ?? "") + d));
    processes.set(name, child);
    await waitFor(async () => (await fetch(`http://127.0.0.1:${port}/readyz`)).ok, `${name} to be ready`, 30_000);
  }

  const url = (service: ServiceName, path: string) => `http://127.0.0.1:${ports.get(service)}/api/v1${path}`;
  const call = async (service: ServiceName, method: string, path: string, token: string, body?: unknown, headers: Record<string, string> = {}) => {
    const response = await fetch(url(service, path), {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { "content-type": "application/json" }), ...headers },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    return { status: response.status, body: (await response.json()) as Record<string, any> };
  };
  /**
   * Messages still inside RabbitMQ (a confirm waiting for a restarted service) are not visible in the
   * database: the invariants must come to hold within the contract's 30 s, and then hold.
   */
  const settled = async () => {
    await waitFor(quiet, "outbox sent, sagas finished, no order PENDING", 30_000);
    await waitFor(async () => (await invariantViolations(database.db)).length === 0, "the invariants to hold", 30_000).catch(() => {});
    expect(await invariantViolations(database.db)).toEqual([]);
  };
  /** Outbox sent, sagas finished, no order PENDING. */
  const quiet = async () => {
    const { outboxPending, sagasActive } = await backlogOf(database.db);
    const [pending] = await rows<{ n: number }>(database.db, sql`select count(*)::int as n from orders where status = 'PENDING'`);
    return outboxPending + sagasActive + (pending?.n ?? 0) === 0;
  };

  beforeAll(async () => {
    database = await openTestPostgres();
    for (const service of SERVICES) await start(service);
  }, 120_000);

  // A failing test shows what the services logged (warnings and errors only), the newest lines last.
  afterEach((context) => {
    if (context.task.result?.state !== "fail") return;
    for (const [name, text] of logs) process.stderr.write(`--- ${name} ---\n${text.split("\n").slice(-40).join("\n")}\n`);
  });

  afterAll(async () => {
    for (const child of processes.values()) child.kill("SIGKILL");
    await deleteRabbitTopology(amqpUrl() as string, prefix, BUS_CONSUMERS, DEFAULT_RETRY_DELAYS_MS);
    await database?.close();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it("keeps every invariant when the inventory service is killed with -9 in the middle of 320 orders", { timeout: 180_000 }, async () => {
    const admin = await tokens.sign({ tenantId: "split", userId: "root", roles: ["admin"] });
    const buyers = await Promise.all(Array.from({ length: 40 }, (_, i) => tokens.sign({ tenantId: "split", userId: `b${i}`, roles: ["customer"] })));
    expect((await call("inventory", "PUT", "/products/HOT", admin, { name: "Hot", price: 500, stock: 120 })).status).toBe(201);
    for (let i = 0; i < 5; i++) await call("inventory", "PUT", `/products/S${i}`, admin, { name: `S${i}`, price: 100 + i, stock: 60 });
    for (let i = 0; i < 40; i++) await call("payments", "POST", `/accounts/b${i}/credits`, admin, { amount: 2_500 });
    await call("coupons", "PUT", "/coupons/SPLIT", admin, { discount: { type: "percent", value: 10 }, maxRedemptions: 30 });
    await waitFor(async () => (await rows(database.db, sql`select 1 from order_catalogue where tenant_id = 'split'`)).length === 6, "the catalogue copy", 15_000);

    const body = (i: number) => ({
      items: i % 2 ? [{ sku: "HOT", quantity: 1 + (i % 2) }] : [{ sku: `S${i % 5}`, quantity: 2 }, { sku: "HOT", quantity: 1 }],
      payment: { method: i % 4 === 0 ? "external" : "balance" },
      ...(i % 3 === 0 ? { couponCode: "SPLIT" } : {}),
      shippingAddress: ADDRESS,
    });
    const answers: Promise<{ status: number; body: Record<string, any> }>[] = [];
    for (let i = 0; i < 320; i++) {
      answers.push(call("orders", "POST", "/orders", buyers[i % 40] as string, body(i)));
      if (i === 100) {
        processes.get("inventory")?.kill("SIGKILL");
        await new Promise((r) => setTimeout(r, 1_000));
        await start("inventory");
      }
      if (i % 20 === 0) await new Promise((r) => setTimeout(r, 25));
    }
    const results = await Promise.all(answers);
    expect(results.filter((r) => r.status >= 500).map((r) => r.body)).toEqual([]);
    expect(results.every((r) => [201, 202, 409].includes(r.status))).toBe(true);

    // Once load stops, no order stays PENDING longer than 30 s, the outbox and sagas drain, and no
    // reservation outlives its order.
    await settled();
    const statuses = await rows<{ status: string; n: number }>(database.db, sql`select status, count(*)::int as n from orders where tenant_id = 'split' group by status`);
    const count = (status: string) => statuses.find((s) => s.status === status)?.n ?? 0;
    expect(count("PAID") + count("CREATED")).toBeGreaterThan(0);
    expect(count("CANCELLED")).toBeGreaterThan(0); // the hot SKU sold out
    const [hot] = await rows<{ available: string; reserved: string; sold: string }>(database.db, sql`select available, reserved, sold from stock_levels where sku = 'HOT'`);
    expect(Number(hot?.available) + Number(hot?.reserved) + Number(hot?.sold)).toBe(120);
  });

  it("answers 202 and settles later when a participant is down, then resumes the saga after it returns", { timeout: 120_000 }, async () => {
    const buyer = await tokens.sign({ tenantId: "split", userId: "late", roles: ["customer"] });
    const admin = await tokens.sign({ tenantId: "split", userId: "root", roles: ["admin"] });
    await call("payments", "POST", "/accounts/late/credits", admin, { amount: 10_000 });
    processes.get("shipping")?.kill("SIGKILL");
    const placed = await call("orders", "POST", "/orders", buyer, { items: [{ sku: "S1", quantity: 1 }], payment: { method: "balance" }, shippingAddress: ADDRESS });
    expect(placed.status).toBe(202);
    expect(placed.body.status).toBe("PENDING");
    await start("shipping");
    await waitFor(async () => (await call("orders", "GET", `/orders/${placed.body.id}`, buyer)).body.status !== "PENDING", "the order to settle", 30_000);
    expect((await call("orders", "GET", `/orders/${placed.body.id}`, buyer)).body).toMatchObject({ status: "PAID", shipment: { status: "pending" } });
    await settled();
  });

  it("answers each request with its outcome when a second orders replica consumes half the replies", { timeout: 60_000 }, async () => {
    await start("orders", "-2");
    const buyer = await tokens.sign({ tenantId: "split", userId: "twin", roles: ["customer"] });
    const admin = await tokens.sign({ tenantId: "split", userId: "root", roles: ["admin"] });
    await call("payments", "POST", "/accounts/twin/credits", admin, { amount: 100_000 });
    const statuses: number[] = [];
    for (let i = 0; i < 16; i++) {
      const replica = (i % 2 ? "orders-2" : "orders") as ServiceName;
      // A generous wait: this is about which replica learns the outcome, not about speed.
      const body = { items: [{ sku: "S3", quantity: 1 }], payment: { method: "balance" }, shippingAddress: ADDRESS };
      statuses.push((await call(replica, "POST", "/orders", buyer, body, { prefer: "wait=10" })).status);
    }
    expect(statuses).toEqual(Array(16).fill(201));
    processes.get("orders-2" as ServiceName)?.kill("SIGTERM");
  });

  it("takes the payment callback at the payments service and pays the order at the orders service", { timeout: 60_000 }, async () => {
    const buyer = await tokens.sign({ tenantId: "split", userId: "ext", roles: ["customer"] });
    const placed = await call("orders", "POST", "/orders", buyer, { items: [{ sku: "S2", quantity: 1 }], payment: { method: "external" }, shippingAddress: ADDRESS });
    expect(placed.body.status).toBe("CREATED");
    await waitFor(quiet, "the payment intent", 15_000);
    const raw = JSON.stringify({ tenantId: "split", orderId: placed.body.id, externalTxnId: "txn-split-1", amount: placed.body.total, currency: "CNY", status: "succeeded" });
    const signature = createWebhookSignatures(WEBHOOK_SECRET, { now: () => new Date() }).sign(raw);
    const paid = await fetch(url("payments", "/payments/callback"), { method: "POST", headers: { "content-type": "application/json", "orderly-signature": signature }, body: raw });
    expect(paid.status).toBe(200);
    expect(await paid.json()).toEqual({ orderId: placed.body.id, status: "PAID", duplicate: false });
    await waitFor(async () => (await call("orders", "GET", `/orders/${placed.body.id}`, buyer)).body.status === "PAID", "the order to be paid", 15_000);
    const order = (await call("orders", "GET", `/orders/${placed.body.id}`, buyer)).body;
    expect(order).toMatchObject({ status: "PAID", payment: { status: "captured", externalTxnId: "txn-split-1" } });
    expect(order.shipment.waybill).toMatch(/^WB/);
    await settled();
  });
});
