import { execFile } from "node:child_process";
import { createServer, type Server } from "node:http";
import { join } from "node:path";
import type { AddressInfo } from "node:net";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { SERVICE_NAMES } from "../src/config.ts";
import { postgresUrl } from "./support/databases.ts";
import { launchChromium, pageProblems, SCREENSHOTS } from "./support/browser.ts";
import { CLI } from "./support/cli.ts";
import { ADDRESS } from "./support/harness.ts";
import { amqpUrl, type Deployment, startDeployment, tailOfLogs, waitFor } from "./support/split.ts";

// One order placed in the split deployment, followed end to end: the five services export their
// spans over OTLP/HTTP (JSON) to a receiver in this test, and the order's spans form ONE trace
// across all of them — the HTTP server span, database spans, a PRODUCER span per published outbox
// row and a CONSUMER span per handled message — with the same traceId in every service's log lines.

interface ReceivedSpan {
  service: string;
  traceId: string;
  spanId: string;
  parentSpanId: string;
  name: string;
  kind: number;
  attributes: Record<string, unknown>;
}

const KIND = { server: 2, producer: 4, consumer: 5 } as const;

/** An OTLP/HTTP receiver: POST /v1/traces with JSON bodies (what @opentelemetry/exporter-trace-otlp-http sends). */
function otlpReceiver(): { server: Server; spans: ReceivedSpan[]; requests: number } {
  const state = { server: undefined as unknown as Server, spans: [] as ReceivedSpan[], requests: 0 };
  state.server = createServer((request, response) => {
    let body = "";
    request.on("data", (chunk) => (body += chunk));
    request.on("end", () => {
      state.requests++;
      if (request.method !== "POST" || request.url !== "/v1/traces") return response.writeHead(404).end();
      const value = (v: any) => v?.stringValue ?? v?.intValue ?? v?.boolValue ?? v?.doubleValue;
      for (const resourceSpans of JSON.parse(body).resourceSpans ?? []) {
        const service = value(resourceSpans.resource?.attributes?.find((a: any) => a.key === "service.name")?.value);
        for (const scope of resourceSpans.scopeSpans ?? []) {
          for (const span of scope.spans ?? []) {
            state.spans.push({
              service,
              traceId: span.traceId,
              spanId: span.spanId,
              parentSpanId: span.parentSpanId ?? "",
              name: span.name,
              kind: span.kind,
              attributes: Object.fromEntries((span.attributes ?? []).map((a: any) => [a.key, value(a.value)])),
            });
          }
        }
      }
      response.writeHead(200, { "content-type": "application/json" }).end("{}");
    });
  });
  return state;
}

describe.runIf(postgresUrl() && amqpUrl())("traces across the split deployment", () => {
  const receiver = otlpReceiver();
  let d: Deployment;
  const callerTrace = "4bf92f3577b34da6a3ce929d0e0e4736";
  let order: { id: string; orderNumber: string; status: string } | undefined;

  beforeAll(async () => {
    await new Promise<void>((resolve) => receiver.server.listen(0, "127.0.0.1", resolve));
    const endpoint = `http://127.0.0.1:${(receiver.server.address() as AddressInfo).port}`;
    d = await startDeployment({ layout: "shared", env: { OTEL_EXPORTER_OTLP_ENDPOINT: endpoint, OTEL_BSP_SCHEDULE_DELAY: "200", LOG_LEVEL: "debug" } });
    for (const service of SERVICE_NAMES) await d.start(service);
  }, 120_000);
  afterEach((context) => {
    if (context.task.result?.state === "fail") process.stderr.write(`${tailOfLogs(d)}\n`);
  });
  afterAll(async () => {
    await d?.close();
    await new Promise<void>((resolve) => receiver.server.close(() => resolve()));
  });

  it("follows one order through the five services in one trace, and its traceId through their logs", { timeout: 90_000 }, async () => {
    const admin = await d.tokens.sign({ tenantId: "traced", userId: "root", roles: ["admin"] });
    const buyer = await d.tokens.sign({ tenantId: "traced", userId: "ann", roles: ["customer"] });
    expect((await d.call("inventory", "PUT", "/products/TRACE", admin, { name: "Traced", price: 1_000, stock: 5 })).status).toBe(201);
    expect((await d.call("payments", "POST", "/accounts/ann/credits", admin, { amount: 5_000 })).status).toBe(200);
    expect((await d.call("coupons", "PUT", "/coupons/TEN", admin, { discount: { type: "amount", value: 100 }, maxRedemptions: 5 })).status).toBe(201);
    await waitFor(async () => (await d.call("orders", "GET", "/orders", buyer)).status === 200, "orders", 5_000);
    await waitFor(() => d.quiet(), "the catalogue copy", 15_000);

    // The caller's own trace: the order's spans continue it.
    const placed = await fetch(d.url("orders", "/orders"), {
      method: "POST",
      headers: { authorization: `Bearer ${buyer}`, "content-type": "application/json", traceparent: `00-${callerTrace}-00f067aa0ba902b7-01`, prefer: "wait=10" },
      body: JSON.stringify({ items: [{ sku: "TRACE", quantity: 1 }], couponCode: "TEN", payment: { method: "balance" }, shippingAddress: ADDRESS }),
    });
    expect(placed.status).toBe(201);
    order = (await placed.json()) as { id: string; orderNumber: string; status: string };
    expect(order.status).toBe("PAID");
    expect(placed.headers.get("traceparent")).toMatch(new RegExp(`^00-${callerTrace}-[0-9a-f]{16}-01$`));
    await waitFor(() => d.quiet(), "the saga's messages all handled", 30_000);

    const trace = () => receiver.spans.filter((s) => s.traceId === callerTrace);
    const services = () => new Set(trace().map((s) => s.service));
    const serverSpan = () => trace().find((s) => s.kind === KIND.server && s.service === "orderly-orders" && s.parentSpanId === "00f067aa0ba902b7");
    // A parent span ends (and is exported) after its children: wait until none is missing, or fail below saying which.
    const orphans = () => {
      const ids = new Set(trace().map((s) => s.spanId));
      return trace().filter((s) => s.parentSpanId && !ids.has(s.parentSpanId) && s.parentSpanId !== "00f067aa0ba902b7");
    };
    await waitFor(
      async () => SERVICE_NAMES.every((s) => services().has(`orderly-${s}`)) && serverSpan() !== undefined && orphans().length === 0,
      "the order's whole trace from all five services",
      20_000,
    ).catch(() => {});
    expect([...services()].sort()).toEqual(SERVICE_NAMES.map((s) => `orderly-${s}`).sort());

    const spans = trace();
    // The HTTP server span of the placement, in the orders service, continuing the caller's span.
    expect(serverSpan(), JSON.stringify(spans.map((s) => [s.service, s.kind, s.name]))).toBeDefined();
    // Database spans from the pg instrumentation, in the orders service and in the participants.
    const database = spans.filter((s) => s.attributes["db.system"] === "postgresql" || s.attributes["db.system.name"] === "postgresql");
    expect(new Set(database.map((s) => s.service)).size).toBeGreaterThanOrEqual(2);
    // Each participant consumed a step command published by the orders service, in this trace.
    for (const service of SERVICE_NAMES.filter((s) => s !== "orders")) {
      const consumed = spans.filter((s) => s.service === `orderly-${service}` && s.kind === KIND.consumer);
      expect(consumed.length, service).toBeGreaterThan(0);
      for (const c of consumed) expect(spans.some((p) => p.spanId === c.parentSpanId && p.kind === KIND.producer), `${service} ${c.name} has its PRODUCER parent`).toBe(true);
    }
    // Every span's parent is in the trace, except the caller's own span: one tree.
    expect(orphans().map((s) => `${s.service} ${s.name}`)).toEqual([]);

    // The same traceId in the log lines the order caused, in every service.
    for (const service of SERVICE_NAMES) {
      const lines = (d.logs.get(service) ?? "").split("\n").filter((l) => l.includes(callerTrace));
      expect(lines.length, `${service} logged the order's traceId`).toBeGreaterThan(0);
    }
  });

  it("shows the same order and its trace id in the timeline of the API, the CLI and the console", { timeout: 90_000 }, async () => {
    expect(order, "the order of the test above").toBeDefined();
    const { id, orderNumber } = order!;
    const admin = await d.tokens.sign({ tenantId: "traced", userId: "root", roles: ["admin"] });

    // The API, at the orders service: the saga's steps, and the caller's trace id on its messages.
    const timeline = await d.call("orders", "GET", `/admin/orders/${id}/timeline`, admin);
    expect(timeline.status).toBe(200);
    const events = timeline.body.events as { kind: string; traceId: string | null; details: Record<string, unknown> }[];
    expect(events.filter((e) => e.kind === "saga-step").map((e) => e.details.step)).toEqual(expect.arrayContaining(["reserve-stock", "debit-wallet", "create-shipment"]));
    expect(events.some((e) => e.traceId === callerTrace)).toBe(true);

    // The CLI, on the orders service's database.
    const cli = await new Promise<{ code: number; stdout: string }>((resolve) =>
      execFile(process.execPath, [...CLI, "order", "show", id, "--tenant", "traced"], { env: { PATH: process.env.PATH, DATABASE_URL: d.databaseUrl("orders") } }, (error, stdout) =>
        resolve({ code: error ? Number(error.code ?? 1) : 0, stdout }),
      ),
    );
    expect(cli.code).toBe(0);
    expect(cli.stdout).toMatch(new RegExp(`^order ${id} \\(${orderNumber}\\)  PAID`));
    expect(cli.stdout).toContain(callerTrace);

    // The console, served by the orders service: find it by number, open its timeline.
    const browser = await launchChromium();
    try {
      const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
      const problems = pageProblems(page);
      await page.goto(`${new URL(d.url("orders", "")).origin}/console/`);
      await page.getByLabel("Admin token").fill(admin);
      await page.getByRole("button", { name: "Sign in" }).click();
      await page.getByRole("link", { name: "Orders", exact: true }).click();
      await page.getByPlaceholder(/Order id/).fill(orderNumber);
      await page.getByRole("button", { name: "Find" }).click();
      await page.getByRole("link", { name: orderNumber }).click();
      await expect.poll(() => page.getByTestId("traces").textContent()).toContain(callerTrace);
      await expect.poll(() => page.getByTestId("timeline").locator("tr.event.saga-step").count()).toBeGreaterThanOrEqual(3);
      await page.screenshot({ path: join(SCREENSHOTS, "split-timeline.png"), fullPage: true });
      expect(problems).toEqual([]);
    } finally {
      await browser.close();
    }
  });
});
