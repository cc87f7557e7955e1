import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jwtVerify } from "jose";
import { sql } from "drizzle-orm";
import { afterAll, describe, expect, it } from "vitest";
import { rows } from "../src/db/client.ts";
import { pino } from "pino";
import { createInProcessBus } from "../src/kit/bus.ts";
import { createDeadLetters } from "../src/kit/dead-letters.ts";
import { inboxHandler } from "../src/kit/inbox.ts";
import { newId } from "../src/kit/ids.ts";
import { createOutbox } from "../src/kit/outbox.ts";
import { createRelay } from "../src/kit/relay.ts";
import { openTestPostgres, postgresUrl } from "./support/databases.ts";
import { baseEnv, CLI, serve as startServe } from "./support/cli.ts";


const dirs: string[] = [];
const children: ChildProcess[] = [];

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "orderly-cli-"));
  dirs.push(dir);
  return dir;
}

/** Runs the CLI to its end (`serve` refusing a setting opens and migrates the embedded database first: up to 30 s on a loaded CI machine). */
function run(args: string[], env: Record<string, string>, timeoutMs = 90_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...CLI, ...args], { env: baseEnv(env) });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`orderly ${args.join(" ")} did not finish: ${stderr}`));
    }, timeoutMs);
    child.on("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** `orderly serve`, killed after the suite. */
const serve = (args: string[], env: Record<string, string>) => startServe(args, env, (child) => children.push(child));

const exited = (child: ChildProcess) => new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));

afterAll(() => {
  for (const child of children) if (child.exitCode === null) child.kill("SIGKILL");
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

/** Everything production asks for, the database unreachable: each refusal comes before it is reached. */
const PRODUCTION = { NODE_ENV: "production", DATABASE_URL: "postgres://127.0.0.1:1/none", ORDERLY_WEBHOOK_SECRET: "w".repeat(16), ORDERLY_JWT_SECRET: "s".repeat(32) };
const LDAP = { ORDERLY_LDAP_URL: "ldaps://directory.example:636", ORDERLY_LDAP_USER_BASE: "ou=people,dc=example", ORDERLY_LDAP_ROLE_MAP: "staff=admin", ORDERLY_LDAP_TENANT: "acme" };

// A test here starts up to a dozen CLI processes, each 1-2 s on a quiet machine and several times
// that on a loaded CI machine: hence twice the suite's default timeout.
describe("orderly CLI", { timeout: 120_000 }, () => {
  it("prints a token signed with the data dir's dev secret, carrying the identity asked for", async () => {
    const dir = tempDir();
    const r = await run(["token", "--tenant", "demo", "--user", "alice", "--role", "customer", "--ttl", "2h"], { ORDERLY_DATA_DIR: dir });
    expect(r.code).toBe(0);
    const secret = JSON.parse(readFileSync(join(dir, "dev-secrets.json"), "utf8")).jwtSecret as string;
    const { payload } = await jwtVerify(r.stdout.trim(), new TextEncoder().encode(secret));
    expect(payload).toMatchObject({ sub: "alice", tid: "demo", roles: ["customer"] });
    expect((payload.exp as number) - Math.floor(Date.now() / 1000)).toBeGreaterThan(7000);
    const bad = await run(["token", "--tenant", "demo", "--user", "alice", "--role", "root"], { ORDERLY_DATA_DIR: dir });
    expect(bad.code).not.toBe(0);
    expect(bad.stderr.trim()).toBe("orderly: --role: must be customer or admin");
  });

  it.each([
    [{ PORT: "http" }, "PORT"],
    [{ DATABASE_URL: "postgres://127.0.0.1:1/none" }, "DATABASE_URL"],
    [{ DATABASE_URL: "mysql://localhost/x" }, "DATABASE_URL"],
    [{ ORDERLY_CURRENCY: "rmb" }, "ORDERLY_CURRENCY"],
    [{ REDIS_URL: "redis://127.0.0.1:1" }, "REDIS_URL"],
    [{ ORDERLY_PLACEMENT: "2pc" }, "ORDERLY_PLACEMENT"],
    [{ NODE_ENV: "production" }, "DATABASE_URL"],
    [{ NODE_ENV: "production", DATABASE_URL: "postgres://127.0.0.1:1/none" }, "ORDERLY_WEBHOOK_SECRET"],
    [{ NODE_ENV: "production", DATABASE_URL: "postgres://127.0.0.1:1/none", ORDERLY_WEBHOOK_SECRET: "w".repeat(16) }, "ORDERLY_JWT_SECRET"],
    // One service's own database is not the all-in-one's: it would have served the embedded one.
    [{ ...PRODUCTION, DATABASE_URL: "", ORDERLY_ORDERS_DATABASE_URL: "postgres://127.0.0.1:1/orders" }, "DATABASE_URL"],
    [{ ...PRODUCTION, ORDERLY_WEBHOOK_SECRET: "too-short" }, "ORDERLY_WEBHOOK_SECRET"],
    [{ ...PRODUCTION, ORDERLY_REFUND_URL: "http://psp.example/refunds" }, "ORDERLY_REFUND_URL"],
    [{ ...PRODUCTION, ...LDAP, ORDERLY_LDAP_URL: "ldap://directory.example:389" }, "ORDERLY_LDAP_URL"],
    // Tokens verified by an identity provider's keys, but a directory sign-in needs the secret to sign its own.
    [{ ...PRODUCTION, ...LDAP, ORDERLY_JWT_SECRET: "", ORDERLY_JWKS_URL: "https://idp.example/jwks" }, "ORDERLY_JWT_SECRET"],
  ])("refuses to start on %j with one line naming %s and a non-zero exit", async (env, variable) => {
    const r = await run(["serve"], { ORDERLY_DATA_DIR: tempDir(), ...env });
    expect(r.code).not.toBe(0);
    const lines = r.stderr.trim().split("\n");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(new RegExp(`^orderly: ${variable}: `));
  });

  it.each([["migrate"], ["migrate", "--status"], ["dlq", "list"], ["order", "show", "0192f8d4-0000-7000-8000-000000000000"]])(
    "runs %s in production on a database server only, never on an embedded one in the data dir",
    async (...args) => {
      const dir = tempDir();
      const r = await run(args, { ...PRODUCTION, DATABASE_URL: "", ORDERLY_DATA_DIR: dir });
      expect(r.code).not.toBe(0);
      expect(r.stderr.trim().split("\n")).toEqual(["orderly: DATABASE_URL: is required when NODE_ENV=production (no embedded database in production)"]);
      expect(existsSync(join(dir, "pgdata"))).toBe(false);
    },
  );

  it("refuses an unknown service, and a split service without DATABASE_URL and AMQP_URL", async () => {
    const unknown = await run(["serve", "--services", "orders,billing"], { ORDERLY_DATA_DIR: tempDir() });
    expect(unknown.code).not.toBe(0);
    expect(unknown.stderr).toMatch(/^orderly: --services: unknown service "billing"/);
    const split = await run(["serve", "--services", "inventory"], { ORDERLY_DATA_DIR: tempDir() });
    expect(split.code).not.toBe(0);
    expect(split.stderr).toMatch(/^orderly: DATABASE_URL: is required/);
  });

  it("serves the embedded database with demo data once, refuses a second process on it, and stops cleanly on SIGINT", async () => {
    const dir = tempDir();
    const first = await serve(["--demo"], { ORDERLY_DATA_DIR: dir });
    expect(first.output()).toContain('demo tenant "demo" loaded');
    expect(first.output()).toMatch(/customer token: +ey/);
    expect((await fetch(`${first.url}/readyz`)).status).toBe(200);
    const customer = /customer token: +(\S+)/.exec(first.output())?.[1] as string;
    const order = await fetch(`${first.url}/api/v1/orders`, {
      method: "POST",
      headers: { authorization: `Bearer ${customer}`, "content-type": "application/json" },
      body: JSON.stringify({
        items: [{ sku: "SKU-1", quantity: 1 }],
        couponCode: "WELCOME5",
        payment: { method: "balance" },
        shippingAddress: { name: "A", phone: "1", line1: "l", city: "c", country: "CN" },
      }),
    });
    expect(order.status).toBe(201);

    const second = await run(["serve"], { ORDERLY_DATA_DIR: dir, PORT: "0" });
    expect(second.code).not.toBe(0);
    expect(second.stderr).toMatch(/^orderly: ORDERLY_DATA_DIR: .* is in use by process/);

    first.child.kill("SIGINT");
    expect(await exited(first.child)).toBe(0);
    expect(existsSync(join(dir, "orderly.lock"))).toBe(false);

    const again = await serve(["--demo"], { ORDERLY_DATA_DIR: dir });
    expect(again.output()).toContain('demo tenant "demo" already present');
    const orders = await fetch(`${again.url}/api/v1/orders`, { headers: { authorization: `Bearer ${customer}` } });
    expect((await orders.json()).data).toHaveLength(1);
    again.child.kill("SIGTERM");
    expect(await exited(again.child)).toBe(0);
  });

  it.runIf(postgresUrl())("lists dead letters and retries, skips and resolves them, audited", async () => {
    const database = await openTestPostgres();
    try {
      const clock = { now: () => new Date() };
      const letters = createDeadLetters({ clock, newId });
      const outbox = createOutbox({ clock, newId });
      const messageId = await database.tenant("t", (tx) => outbox.enqueue(tx, { tenantId: "t", topic: "order.placed", payload: {} }));
      await database.db.execute(sql`update outbox_messages set status = 'dead' where id = ${messageId}`);
      const first = await letters.record(database.db, { tenantId: "t", source: "outbox", reference: messageId, reason: "broker said no" });
      const second = await letters.record(database.db, { tenantId: "t", source: "consumer", reference: messageId, consumer: "shipping", reason: "label printer offline" });
      const third = await letters.record(database.db, { tenantId: "t", source: "saga", reference: "ord_x", reason: "compensation unanswered" });
      const env = { DATABASE_URL: database.url, ORDERLY_DATA_DIR: tempDir(), USER: "ops-ann" };

      const list = await run(["dlq", "list"], env);
      expect(list.code).toBe(0);
      expect(list.stdout).toContain(first);
      expect(list.stdout).toContain("shipping");
      expect((await run(["dlq", "resolve", second], env)).stderr).toMatch(/^orderly: --note: is required/);
      expect(JSON.parse((await run(["dlq", "retry", first], env)).stdout)).toMatchObject({ id: first, status: "retried" });
      const [row] = await rows<{ status: string }>(database.db, sql`select status from outbox_messages where id = ${messageId}`);
      expect(row?.status).toBe("pending");
      const again = await run(["dlq", "retry", first], env);
      expect(again.code).not.toBe(0);
      expect(again.stderr).toContain("already retried");
      expect(JSON.parse((await run(["dlq", "resolve", second, "--note", "printed by hand"], env)).stdout)).toMatchObject({ status: "resolved", note: "printed by hand" });
      expect(JSON.parse((await run(["dlq", "skip", third], env)).stdout)).toMatchObject({ id: third, status: "skipped" });
      expect((await run(["dlq", "list"], env)).stdout.trim()).toBe("");
      expect((await run(["dlq", "list", "--status", "all"], env)).stdout.trim().split("\n")).toHaveLength(3);
      expect((await letters.actions(database.db, first)).map((a) => [a.action, a.actor])).toEqual([["retry", "ops-ann"]]);
    } finally {
      await database.close();
    }
  });

  it.runIf(postgresUrl())("re-drives a consumer's dead letter to that consumer once, and refuses what it cannot re-drive", async () => {
    const database = await openTestPostgres();
    try {
      const clock = { now: () => new Date() };
      const letters = createDeadLetters({ clock, newId });
      const message = { id: "msg_original", tenantId: "t", topic: "order.placed", payload: { orderId: "ord_1" } };
      const consumerLetter = await letters.recordConsumerFailure(database.db, { message, consumer: "shipping", reason: "label printer offline" });
      const sagaLetter = await letters.record(database.db, { tenantId: "t", source: "saga", reference: "ord_x", reason: "compensation unanswered" });
      const outboxLetter = await letters.record(database.db, { tenantId: "t", source: "outbox", reference: "msg_sent_elsewhere", reason: "broker said no" });
      const env = { DATABASE_URL: database.url, ORDERLY_DATA_DIR: tempDir(), USER: "ops-ann" };

      const retried = await run(["dlq", "retry", consumerLetter], env);
      expect(retried.code).toBe(0);
      expect(JSON.parse(retried.stdout)).toMatchObject({ id: consumerLetter, status: "retried" });

      // A relay of that database sends it to the consumer that failed, under the original id; no one else sees it.
      const handled: string[] = [];
      const bus = createInProcessBus();
      for (const consumer of ["shipping", "billing"]) {
        await bus.subscribe({ consumer, topics: ["order.*"], handler: inboxHandler(database, consumer, async (_tx, m) => void handled.push(`${consumer} ${m.id}`)) });
      }
      const relay = createRelay({ database, bus, clock, log: pino({ level: "silent" }), deadLetters: letters, pollMs: 50 });
      await relay.start();
      try {
        for (let i = 0; i < 200 && handled.length === 0; i++) await new Promise((r) => setTimeout(r, 25));
        await bus.publish({ ...message, consumer: "shipping" }); // delivered again: the inbox keeps it to one effect
        await new Promise((r) => setTimeout(r, 200));
      } finally {
        await relay.stop();
      }
      expect(handled).toEqual(["shipping msg_original"]);

      for (const [id, reason] of [
        [sagaLetter, "a saga resends its own commands; nothing to re-drive"],
        [outboxLetter, "outbox message msg_sent_elsewhere"],
        ["dlq_unknown", "no dead letter dlq_unknown"],
      ] as const) {
        const refused = await run(["dlq", "retry", id], env);
        expect(refused.code).not.toBe(0);
        expect(refused.stdout).toBe("");
        const lines = refused.stderr.trim().split("\n");
        expect(lines).toHaveLength(1);
        expect(lines[0]).toContain(reason);
      }
      // Refused letters stay open, with no action recorded against them.
      expect((await letters.list(database.db, { status: "open" })).map((l) => l.id).sort()).toEqual([sagaLetter, outboxLetter].sort());
      expect(await letters.actions(database.db, sagaLetter)).toEqual([]);
    } finally {
      await database.close();
    }
  });

  it.runIf(postgresUrl())("migrates by service, reports what is pending, and serves --no-migrate only a database fully migrated", async () => {
    const database = await openTestPostgres({ migrate: false });
    const env = { DATABASE_URL: database.url, ORDERLY_DATA_DIR: tempDir() };
    try {
      const fresh = await run(["migrate", "--status"], env);
      expect(fresh.code).toBe(1);
      expect(fresh.stdout).toMatch(/^kit +0 applied +\d+ pending: 0000_kit/m);
      expect(fresh.stdout).toMatch(/^orders +0 applied/m);

      const refused = await run(["serve", "--no-migrate"], { ...env, PORT: "0" });
      expect(refused.code).not.toBe(0);
      expect(refused.stderr.trim().split("\n")).toHaveLength(1);
      expect(refused.stderr).toMatch(/^orderly: DATABASE_URL: the database is not migrated: kit \(\d+ pending, first 0000_kit\)/);

      expect((await run(["migrate", "--services", "inventory"], env)).code).toBe(0);
      const inventory = await run(["migrate", "--status", "--services", "inventory", "--json"], env);
      expect(inventory.code).toBe(0);
      expect(JSON.parse(inventory.stdout).map((s: { set: string; pending: string[] }) => [s.set, s.pending.length])).toEqual([["kit", 0], ["inventory", 0]]);
      const all = await run(["migrate", "--status"], env);
      expect(all.code).toBe(1);
      expect(all.stdout).toMatch(/^inventory +\d+ applied +up to date/m);
      expect(all.stdout).toMatch(/^orders +0 applied/m);

      const migrated = await run(["migrate"], env);
      expect(migrated.code).toBe(0);
      expect(migrated.stdout).toContain("migrations applied");
      expect((await run(["migrate", "--status"], env)).code).toBe(0);

      // Served without migrating; on SIGTERM /readyz answers 503 first while /healthz still answers.
      const served = await serve(["--no-migrate"], { ...env, ORDERLY_SHUTDOWN_DELAY_MS: "2000" });
      expect((await fetch(`${served.url}/readyz`)).status).toBe(200);
      served.child.kill("SIGTERM");
      await new Promise((r) => setTimeout(r, 500));
      const ready = await fetch(`${served.url}/readyz`);
      expect(ready.status).toBe(503);
      expect((await ready.json()).detail).toBe("not ready: shutting down");
      expect((await fetch(`${served.url}/healthz`)).status).toBe(200);
      expect(await exited(served.child)).toBe(0);
    } finally {
      await database.close();
    }
  });

  it.runIf(postgresUrl())("never loads demo data nor prints a token in production, whatever --demo and ORDERLY_DEMO say", async () => {
    const database = await openTestPostgres();
    try {
      const production = {
        NODE_ENV: "production",
        DATABASE_URL: database.url,
        ORDERLY_JWT_SECRET: "p".repeat(40),
        ORDERLY_WEBHOOK_SECRET: "w".repeat(20),
        ORDERLY_DEMO: "1",
        ORDERLY_DATA_DIR: tempDir(),
      };
      const served = await serve(["--demo"], production);
      expect(served.output()).toContain("demo data is never loaded in production");
      expect(served.output()).not.toMatch(/token:\s+ey/);
      expect(served.output()).not.toContain("demo tenant");
      const [products] = await rows<{ n: number }>(database.db, sql`select count(*)::int as n from products`);
      expect(products?.n).toBe(0);
      served.child.kill("SIGTERM");
      expect(await exited(served.child)).toBe(0);

      // A shutdown that would outlast its deadline (here /readyz failing first for longer) exits 1 at the deadline.
      const slow = await serve([], { ...production, ORDERLY_SHUTDOWN_DELAY_MS: "20000", ORDERLY_SHUTDOWN_TIMEOUT_MS: "1000" });
      const signalled = Date.now();
      slow.child.kill("SIGTERM");
      expect(await exited(slow.child)).toBe(1);
      expect(Date.now() - signalled).toBeLessThan(15_000);
      expect(slow.output()).toContain("shutdown took longer than ORDERLY_SHUTDOWN_TIMEOUT_MS; exiting");
    } finally {
      await database.close();
    }
  });

  it.runIf(postgresUrl())("migrates a PostgreSQL database and exits", async () => {
    const database = await openTestPostgres();
    try {
      const r = await run(["migrate"], { DATABASE_URL: database.url, ORDERLY_DATA_DIR: tempDir() });
      expect(r.code).toBe(0);
      expect(r.stdout).toContain("migrations applied");
    } finally {
      await database.close();
    }
  });
});
