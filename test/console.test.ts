import { join } from "node:path";
import { sql } from "drizzle-orm";
import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../src/config.ts";
import { rows } from "../src/db/client.ts";
import { newId } from "../src/kit/ids.ts";
import { type Running, startServer } from "../src/server.ts";
import { launchChromium, pageProblems, SCREENSHOTS } from "./support/browser.ts";
import { openTestPostgres, postgresUrl } from "./support/databases.ts";
import { ADDRESS } from "./support/harness.ts";

// The operations console (api-contract.md §6) in real headless Chromium, against an all-in-one
// Orderly on PostgreSQL over real HTTP: sign in with an admin token, health and backlog, find an
// order by number, id and user, its timeline, and a dead letter retried (and one that cannot be)
// with the audit trail naming the operator. Screenshots go to test-artifacts/console/. The global
// setup builds the console (test/support/browser.ts).

const JWT_SECRET = "console-secret-console-secret-console-0123";

describe.runIf(postgresUrl())("the operations console in Chromium", () => {
  let db: Awaited<ReturnType<typeof openTestPostgres>>;
  let running: Running;
  let browser: Browser;
  let page: Page;
  let problems: string[];
  const tokens = { admin: "", customer: "", otherAdmin: "" };
  const orders: { id: string; orderNumber: string }[] = [];
  const letters = { outbox: "", saga: "", message: "" };

  const api = async (method: string, path: string, token: string, body?: unknown, headers: Record<string, string> = {}) => {
    const response = await fetch(`${running.url}/api/v1${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { "content-type": "application/json" }), ...headers },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    return { status: response.status, body: (await response.json()) as Record<string, any> };
  };
  const shoot = (name: string) => page.screenshot({ path: join(SCREENSHOTS, `${name}.png`), fullPage: true });

  beforeAll(async () => {
    db = await openTestPostgres();
    running = await startServer(
      loadConfig({ PORT: "0", DATABASE_URL: db.url, LOG_LEVEL: "silent", ORDERLY_JWT_SECRET: JWT_SECRET, ORDERLY_WEBHOOK_SECRET: "console-webhook-secret-0123" }),
      { demo: false },
    );
    const sign = running.services.tokens.sign;
    tokens.admin = await sign({ tenantId: "shop", userId: "olga", roles: ["admin"] });
    tokens.customer = await sign({ tenantId: "shop", userId: "ada", roles: ["customer"] });
    tokens.otherAdmin = await sign({ tenantId: "elsewhere", userId: "eve", roles: ["admin"] });
    expect((await api("PUT", "/products/MUG", tokens.admin, { name: "Mug", price: 1_500, stock: 10 })).status).toBe(201);
    expect((await api("POST", "/accounts/ada/credits", tokens.admin, { amount: 10_000 })).status).toBe(200);
    // Paid before the pages are opened: a placement waits up to 30 s for its answer, not the default
    // 3 s, after which a busy machine would have it answered 202 and still pending.
    for (const quantity of [1, 2]) {
      const body = { items: [{ sku: "MUG", quantity }], payment: { method: "balance" }, shippingAddress: ADDRESS };
      const placed = await api("POST", "/orders", tokens.customer, body, { prefer: "wait=30" });
      expect(placed, JSON.stringify(placed.body)).toMatchObject({ status: 201, body: { status: "PAID" } });
      orders.push({ id: placed.body.id, orderNumber: placed.body.orderNumber });
    }
    // Two dead letters: an outbox message the broker refused (re-drivable), and a saga's (not).
    const database = running.services.database.db;
    letters.message = newId("msg");
    await database.execute(sql`insert into outbox_messages (id, tenant_id, topic, payload, status, attempts, next_attempt_at, created_at, last_error)
                               values (${letters.message}, 'shop', 'console.redrive', ${JSON.stringify({ orderId: orders[0]!.id })}::jsonb, 'dead', 6, now(), now(), 'nack')`);
    letters.outbox = await running.services.deadLetters.record(database, {
      tenantId: "shop",
      source: "outbox",
      reference: letters.message,
      topic: "console.redrive",
      payload: { orderId: orders[0]!.id },
      reason: "the broker refused it 6 times",
    });
    letters.saga = await running.services.deadLetters.record(database, { tenantId: "shop", source: "saga", reference: "saga_gone", reason: "a step timed out" });

    browser = await launchChromium();
    page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    problems = pageProblems(page);
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    await running?.close();
    await db?.close();
  });

  it("is served with a strict Content-Security-Policy, the page revalidated and its hashed assets cached for good", async () => {
    const html = await fetch(`${running.url}/console/`);
    expect(html.status).toBe(200);
    expect(html.headers.get("content-type")).toMatch(/^text\/html/);
    expect(html.headers.get("content-security-policy")).toMatch(/default-src 'none'; script-src 'self'/);
    expect(html.headers.get("content-security-policy")).toMatch(/frame-ancestors 'none'/);
    expect(html.headers.get("cache-control")).toBe("no-cache");
    const script = /src="(\/console\/assets\/[^"]+\.js)"/.exec(await html.text())?.[1];
    expect(script).toBeDefined();
    const asset = await fetch(`${running.url}${script}`);
    expect(asset.status).toBe(200);
    expect(asset.headers.get("cache-control")).toBe("public, max-age=31536000, immutable");
    expect((await fetch(`${running.url}/console`)).status).toBe(200);
    expect((await fetch(`${running.url}/console/assets/nothing-here.js`)).status).toBe(404);
  });

  it("refuses a forged token and a customer's, and signs an admin in", async () => {
    await page.goto(`${running.url}/console/`);
    const signIn = async (token: string) => {
      await page.getByLabel("Admin token").fill(token);
      await page.getByRole("button", { name: "Sign in" }).click();
    };
    await signIn(`${tokens.admin.slice(0, -4)}AAAA`);
    await expect.poll(() => page.getByRole("alert").textContent()).toMatch(/The token was not accepted/);
    await signIn(tokens.customer);
    await expect.poll(() => page.getByRole("alert").textContent()).toMatch(/no admin role/);
    await shoot("sign-in-refused");
    await signIn(tokens.admin);
    await expect.poll(() => page.getByTestId("operator").textContent()).toBe("olga · tenant shop");
  });

  it("shows the process's health and the tenant's backlog at a glance", async () => {
    await expect.poll(() => page.getByTestId("checks").textContent()).toContain("database: ok");
    const backlog = page.getByTestId("backlog");
    await expect.poll(() => backlog.getByText("Dead letters open").locator("..").textContent()).toBe("2Dead letters open");
    await shoot("overview");
  });

  it("finds an order by number, by id and by user, and opens its timeline", async () => {
    const [first, second] = orders as [(typeof orders)[0], (typeof orders)[0]];
    await page.getByRole("link", { name: "Orders", exact: true }).click();
    const search = page.getByPlaceholder(/Order id/);
    const find = async (text: string) => {
      await search.fill(text);
      await page.getByRole("button", { name: "Find" }).click();
    };
    await find(first.orderNumber);
    await expect.poll(() => page.getByTestId("orders").locator("tbody tr").count()).toBe(1);
    expect(await page.getByTestId("orders").textContent()).toContain(first.id);
    await find(second.id);
    await expect.poll(() => page.getByTestId("orders").textContent()).toContain(second.orderNumber);
    await find("ada");
    await expect.poll(() => page.getByTestId("orders").locator("tbody tr").count()).toBe(2);
    await find("nobody-at-all");
    await expect.poll(() => page.getByText("No order found.").count()).toBe(1);

    await find(first.orderNumber);
    await page.getByRole("link", { name: first.orderNumber }).click();
    await expect.poll(() => page.getByTestId("order").textContent()).toContain(first.id);
    const timeline = page.getByTestId("timeline");
    await expect.poll(() => timeline.locator("tr.event.state").last().textContent()).toMatch(/→ PAID/);
    // Each row opens to its details.
    await timeline.locator("tr.event.state").first().click();
    await expect.poll(() => timeline.locator("tr.details pre").count()).toBe(1);
    await shoot("timeline");
    expect(new URL(page.url()).hash).toBe(`#/orders/${first.id}`);
  });

  it("retries a dead letter, naming the operator in its audit trail, and says why one cannot be re-driven", async () => {
    await page.getByRole("link", { name: "Dead letters" }).click();
    await expect.poll(() => page.getByTestId("dead-letters").locator("tbody tr").count()).toBe(2);
    await page.getByRole("link", { name: letters.outbox }).click();
    await expect.poll(() => page.getByTestId("letter-status").textContent()).toBe("open");
    await page.getByRole("button", { name: "Retry" }).click();
    await expect.poll(() => page.getByTestId("letter-status").textContent()).toBe("retried");
    expect(await page.getByTestId("audit").locator("tbody tr").first().textContent()).toMatch(/retry\s*olga/);
    await shoot("dead-letter-retried");
    // The retry re-drove the message for real: the relay published it.
    await expect
      .poll(async () => (await rows<{ status: string }>(running.services.database.db, sql`select status from outbox_messages where id = ${letters.message}`))[0]?.status, { timeout: 10_000 })
      .toBe("published");

    await page.goto(`${running.url}/console/#/dead-letters/${letters.saga}`);
    await page.getByRole("button", { name: "Retry" }).click();
    await expect.poll(() => page.getByTestId("refusal").textContent()).toMatch(/a saga resends its own commands/);
    expect(await page.getByTestId("letter-status").textContent()).toBe("open");
    await page.getByLabel(/Resolved outside Orderly/).fill("step re-run by hand, ticket 7");
    await page.getByRole("button", { name: "Resolve with this note" }).click();
    await expect.poll(() => page.getByTestId("letter-status").textContent()).toBe("resolved");
    expect(await page.getByTestId("audit").textContent()).toMatch(/resolve\s*olga\s*step re-run by hand, ticket 7/);
    await shoot("dead-letter-resolved");

    // The API agrees with what the page showed, and another tenant's admin sees none of it.
    expect((await api("GET", `/admin/dead-letters/${letters.outbox}`, tokens.admin)).body).toMatchObject({ status: "retried", actions: [{ action: "retry", actor: "olga" }] });
    expect((await api("GET", `/admin/dead-letters/${letters.outbox}`, tokens.otherAdmin)).status).toBe(404);
  });

  it("lists sagas by state, runs the reconciliation, keeps the session in the tab, and signs out", async () => {
    await page.getByRole("link", { name: "Sagas" }).click();
    await expect.poll(() => page.getByText("No saga is running.").count()).toBe(1);
    await page.getByRole("link", { name: "stuck" }).click();
    await expect.poll(() => page.getByText("No saga is stuck.").count()).toBe(1);
    // The reconciliation, run on demand: everything holds in this shop.
    await page.getByRole("link", { name: "Reconciliation" }).click();
    await page.getByRole("button", { name: "Run now" }).click();
    await expect.poll(() => page.getByTestId("run").first().textContent()).toMatch(/All 12 checks hold\./);
    await shoot("reconciliation");
    await page.reload();
    await expect.poll(() => page.getByTestId("operator").textContent()).toBe("olga · tenant shop");
    await page.getByRole("button", { name: "Sign out" }).click();
    await expect.poll(() => page.getByLabel("Admin token").count()).toBe(1);
    expect(await page.evaluate(() => sessionStorage.length)).toBe(0);
    expect(problems).toEqual([]);
  });
});
