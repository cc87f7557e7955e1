import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openTestPostgres } from "./support/databases.ts";
import { createHarness, type Harness } from "./support/harness.ts";
import { CLI } from "./support/cli.ts";


const dir = mkdtempSync(join(tmpdir(), "orderly-cli-ops-"));

/** Runs the CLI to its end (as test/cli.test.ts does). */
function run(args: string[], env: Record<string, string> = {}, timeoutMs = 30_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...CLI, ...args], { env: { PATH: process.env.PATH, HOME: process.env.HOME, ORDERLY_DATA_DIR: dir, ...env } });
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

afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("orderly --help and usage errors", () => {
  it.each([
    [["--help"], "usage: orderly COMMAND"],
    [["help"], "usage: orderly COMMAND"],
    [["serve", "--help"], "usage: orderly serve"],
    [["migrate", "--help"], "usage: orderly migrate"],
    [["token", "-h"], "usage: orderly token"],
    [["dlq", "--help"], "usage: orderly dlq list"],
    [["dlq", "retry", "--help"], "usage: orderly dlq list"],
    [["order", "show", "--help"], "usage: orderly order show ID"],
  ])("orderly %j prints its help on stdout and exits 0", async (args, first) => {
    const r = await run(args);
    expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: "" });
    expect(r.stdout.startsWith(first)).toBe(true);
  });

  it.each([
    [[], "a command is required"],
    [["bogus"], 'unknown command "bogus"'],
    [["dlq", "list", "--bogus"], "Unknown option '--bogus'"],
    [["dlq"], "dlq: an action is required"],
    [["dlq", "show"], "dlq: show needs a dead letter id"],
    [["dlq", "list", "--status", "lost"], "--status: must be one of"],
    [["dlq", "resolve", "dlq_1"], "--note: is required"],
    [["order", "show"], "order: show needs an order id"],
    [["order", "list"], 'order: unknown action "list"'],
    [["token", "--tenant", "t", "--user", "u", "--role", "root"], "--role: must be customer or admin"],
  ])("orderly %j is a usage error: one line on stderr, exit 2", async (args, message) => {
    const r = await run(args);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe("");
    const lines = r.stderr.trim().split("\n");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(message);
  });
});

describe("orderly order show and dlq show (PostgreSQL)", () => {
  let h: Harness;
  let env: Record<string, string>;
  let orderId: string;

  beforeAll(async () => {
    const database = await openTestPostgres({ max: 3 });
    env = { DATABASE_URL: database.url, USER: "ops-cli" };
    h = await createHarness(database, { strategy: "saga" });
    await h.seed("cli", { products: [["LAMP", 4000, 3]], credits: [["cy", 10_000]] });
    const placed = await h.call("POST", "/api/v1/orders", { token: await h.token("cli", "cy"), body: h.orderBody([["LAMP", 1]]) });
    expect(placed.status).toBe(201);
    orderId = placed.body.id;
    await h.quiesce();
  });
  afterAll(() => h?.close());

  it("prints an order's timeline: the order, its state moves, saga steps with durations and messages, in time order", async () => {
    const r = await run(["order", "show", orderId], env);
    expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: "" });
    const lines = r.stdout.split("\n");
    expect(lines[0]).toMatch(new RegExp(`^order ${orderId} \\(.+\\)  PAID  tenant cli  user cy$`));
    expect(r.stdout).toMatch(/^TIME\s+KIND\s+WHAT\s+TOOK\s+TRACE$/m);
    expect(r.stdout).toMatch(/^\S+Z\s+state\s+PENDING → PAID/m);
    expect(r.stdout).toMatch(/^\S+Z\s+saga-step\s+reserve-stock try: ok\s+\d+(\.\d)? m?s/m);
    expect(r.stdout).toMatch(/^\S+Z\s+message-handled\s+inventory handled /m);
    const times = lines.filter((l) => /^\d{4}-/.test(l)).map((l) => Date.parse(l.split(/\s+/)[0] as string));
    expect(times.length).toBeGreaterThan(8);
    expect(times).toEqual([...times].sort((a, b) => a - b));
  });

  it("prints the same timeline as JSON with --json, as the admin API answers it", async () => {
    const r = await run(["order", "show", orderId, "--json"], env);
    expect(r.code).toBe(0);
    const cli = JSON.parse(r.stdout);
    const api = await h.call("GET", `/api/v1/admin/orders/${orderId}/timeline`, { token: await h.token("cli", "root", ["admin"]) });
    expect(cli).toEqual(api.body);
  });

  it("refuses an order it cannot find, and another tenant's, with one line and exit 1", async () => {
    for (const args of [["order", "show", "ord_missing"], ["order", "show", orderId, "--tenant", "someone-else"]]) {
      const r = await run(args, env);
      expect(r.code).toBe(1);
      expect(r.stderr.trim().split("\n")).toHaveLength(1);
      expect(r.stderr).toMatch(/^orderly: order: no order /);
    }
  });

  it("shows a dead letter with its audit trail, as text and as JSON, and lists letters as JSON", async () => {
    const letter = await h.services.deadLetters.record(h.services.database.db, {
      tenantId: "cli",
      source: "consumer",
      reference: "msg_cli",
      consumer: "shipping",
      topic: "shipping.create",
      payload: { orderId },
      reason: "label printer offline",
    });
    expect((await run(["dlq", "skip", letter], env)).code).toBe(0);
    const text = await run(["dlq", "show", letter], env);
    expect(text.code).toBe(0);
    expect(text.stdout).toContain(`dead letter ${letter}  skipped  tenant cli`);
    expect(text.stdout).toContain("reason     label printer offline");
    expect(text.stdout).toMatch(/^\S+Z\s+skip\s+ops-cli$/m);

    const json = JSON.parse((await run(["dlq", "show", letter, "--json"], env)).stdout);
    expect(json).toMatchObject({ id: letter, status: "skipped", consumer: "shipping", payload: { orderId }, actions: [{ action: "skip", actor: "ops-cli" }] });
    const listed = JSON.parse((await run(["dlq", "list", "--status", "all", "--json"], env)).stdout);
    expect(listed.map((l: { id: string }) => l.id)).toContain(letter);
    expect(JSON.parse((await run(["dlq", "list", "--json"], env)).stdout)).toEqual([]);

    const missing = await run(["dlq", "show", "dlq_missing"], env);
    expect([missing.code, missing.stderr.trim()]).toEqual([1, "orderly: dlq: no dead letter dlq_missing"]);
  });
});
