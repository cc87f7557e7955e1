import { spawnSync } from "node:child_process";
import { sql } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { newId } from "../src/kit/ids.ts";
import { refreshBacklogGauges } from "../src/ops/jobs.ts";
import { openTestPostgres } from "./support/databases.ts";
import { createHarness, type Harness } from "./support/harness.ts";

/** The value of one sample in Prometheus text, or undefined when the series is absent. */
function sample(text: string, series: string): number | undefined {
  for (const line of text.split("\n")) {
    if (line.startsWith("#")) continue;
    const space = line.lastIndexOf(" ");
    if (line.slice(0, space) === series) return Number(line.slice(space + 1));
  }
  return undefined;
}

/**
 * /metrics scraped over a real socket from an app on real PostgreSQL, running the saga strategy so
 * that steps, consumers and the relay all have something to report.
 */
describe("/metrics", () => {
  let h: Harness;
  let url: string;
  const scrape = async () => {
    const response = await fetch(`${url}/metrics`);
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
    return response.text();
  };

  beforeAll(async () => {
    h = await createHarness(await openTestPostgres({ max: 4 }), { strategy: "saga", env: { ORDERLY_RATE_LIMIT_RPS: "1", ORDERLY_RATE_LIMIT_BURST: "5" } });
    url = await h.app.listen({ port: 0, host: "127.0.0.1" });
    await h.seed("met", { products: [["MUG", 900, 10]], credits: [["ann", 1_000_000]] });
    const ann = await h.token("met", "ann");
    const placed = await h.call("POST", "/api/v1/orders", { token: ann, body: h.orderBody([["MUG", 1]]) });
    expect(placed.status).toBe(201);
    const refused = await h.call("POST", "/api/v1/orders", { token: ann, body: h.orderBody([["MUG", 50]]) });
    expect({ status: refused.status, code: refused.body.code }).toEqual({ status: 409, code: "OUT_OF_STOCK" });
    await h.quiesce();
    // One user past their burst of 5: two 429s.
    const bob = await h.token("met", "bob");
    const statuses = [];
    for (let i = 0; i < 7; i++) statuses.push((await h.call("GET", "/api/v1/products", { token: bob })).status);
    expect(statuses.filter((s) => s === 429)).toHaveLength(2);
    // A callback with no signature.
    const unsigned = await h.app.inject({ method: "POST", url: "/api/v1/payments/callback", headers: { "content-type": "application/json" }, payload: "{}" });
    expect(unsigned.statusCode).toBe(401);
  });
  afterAll(() => h?.close());

  it("names every contract metric once, with Node's process metrics unprefixed, and passes promtool check metrics", async () => {
    const text = await scrape();
    for (const name of [
      "orderly_http_request_duration_seconds",
      "orderly_order_placements_total",
      "orderly_outbox_pending",
      "orderly_outbox_oldest_age_seconds",
      "orderly_dead_letters_open",
      "orderly_sagas_active",
      "orderly_db_pool_connections",
      "process_cpu_seconds_total",
      "nodejs_eventloop_lag_seconds",
    ]) {
      expect(text).toContain(`# TYPE ${name} `);
    }
    expect(text).not.toMatch(/orderly_process_|process_process_/);
    const lint = spawnSync("promtool", ["check", "metrics"], { input: text, encoding: "utf8" });
    expect(lint.error).toBeUndefined();
    expect({ status: lint.status, output: lint.stdout + lint.stderr }).toEqual({ status: 0, output: "" });
  });

  it("counts placements, saga steps, consumers, publish lag, rate-limit rejections and callback outcomes", async () => {
    const text = await scrape();
    expect(text.split("\n").filter((l) => l.startsWith("orderly_order_placements_total"))).toEqual([
      'orderly_order_placements_total{outcome="placed"} 1',
      'orderly_order_placements_total{outcome="OUT_OF_STOCK"} 1',
    ]);
    expect(sample(text, 'orderly_order_placements_total{outcome="OUT_OF_STOCK"}')).toBe(1);
    expect(sample(text, 'orderly_http_request_duration_seconds_count{method="POST",route="/api/v1/orders",status_class="2xx"}')).toBe(1);
    expect(sample(text, 'orderly_http_request_duration_seconds_count{method="POST",route="/api/v1/orders",status_class="4xx"}')).toBe(1);
    // The stock step succeeded once and was refused once (the second order asked for 50 of 10).
    expect(sample(text, 'orderly_saga_step_duration_seconds_count{saga="place-order",step="reserve-stock",op="try",outcome="ok"}')).toBe(1);
    expect(sample(text, 'orderly_saga_step_duration_seconds_count{saga="place-order",step="reserve-stock",op="try",outcome="refused"}')).toBe(1);
    expect(text).toMatch(/orderly_message_handling_duration_seconds_count\{consumer="orders",topic="saga\.reply",outcome="ok"\} [1-9]/);
    expect(sample(text, "orderly_outbox_publish_lag_seconds_count")).toBeGreaterThan(3);
    expect(sample(text, 'orderly_rate_limit_rejections_total{scope="user"}')).toBe(2);
    expect(sample(text, 'orderly_payment_callbacks_total{outcome="bad_signature"}')).toBe(1);
  });

  it("reports the PostgreSQL pool from its own counters", async () => {
    const text = await scrape();
    expect(sample(text, "orderly_db_pool_max_connections")).toBe(4);
    const inUse = sample(text, 'orderly_db_pool_connections{state="in_use"}') as number;
    const idle = sample(text, 'orderly_db_pool_connections{state="idle"}') as number;
    expect(inUse + idle).toBeGreaterThan(0);
    expect(inUse + idle).toBeLessThanOrEqual(4);
    expect(sample(text, "orderly_db_pool_waiting_requests")).toBe(0);
  });

  it("never counts the backlog during a scrape: the gauges move when the background job refreshes them", async () => {
    const db = h.services.database.db;
    await refreshBacklogGauges(h.services);
    const before = await scrape();
    expect(sample(before, "orderly_dead_letters_open")).toBe(0);
    expect(sample(before, "orderly_outbox_pending")).toBe(0);
    expect(sample(before, "orderly_outbox_oldest_age_seconds")).toBe(0);
    expect(sample(before, "orderly_backlog_refresh_timestamp_seconds")).toBeGreaterThan(Date.now() / 1000 - 60);

    // Work appears: an open dead letter, a message waiting 2 minutes (due far ahead, so no relay takes it), a saga running for a minute.
    const twoMinutesAgo = new Date(Date.now() - 120_000).toISOString();
    const far = new Date(Date.now() + 3_600_000).toISOString();
    const now = new Date().toISOString();
    await db.execute(sql`insert into dead_letters (id, tenant_id, source, reference, reason, status, created_at, updated_at)
                         values (${newId("dlq")}, 'met', 'outbox', 'msg_x', 'test', 'open', ${now}::timestamptz, ${now}::timestamptz)`);
    await db.execute(sql`insert into outbox_messages (id, tenant_id, topic, payload, status, next_attempt_at, created_at)
                         values (${newId("msg")}, 'met', 'test.waiting', '{}'::jsonb, 'pending', ${far}::timestamptz, ${twoMinutesAgo}::timestamptz)`);
    await db.execute(sql`insert into sagas (id, tenant_id, type, status, context, steps, next_attempt_at, created_at, updated_at)
                         values (${newId("sag")}, 'met', 'test', 'running', '{}'::jsonb, '{}'::jsonb, ${far}::timestamptz, ${twoMinutesAgo}::timestamptz, ${now}::timestamptz)`);

    const stale = await scrape();
    expect(sample(stale, "orderly_dead_letters_open")).toBe(0);
    expect(sample(stale, "orderly_outbox_pending")).toBe(0);

    await refreshBacklogGauges(h.services);
    const fresh = await scrape();
    expect(sample(fresh, "orderly_dead_letters_open")).toBe(1);
    expect(sample(fresh, "orderly_outbox_pending")).toBe(1);
    expect(sample(fresh, "orderly_outbox_oldest_age_seconds")).toBeGreaterThanOrEqual(119);
    expect(sample(fresh, "orderly_sagas_active")).toBe(1);
    expect(sample(fresh, "orderly_sagas_stuck")).toBe(1);
  });
});
