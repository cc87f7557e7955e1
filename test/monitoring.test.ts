import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { refreshBacklogGauges } from "../src/ops/jobs.ts";
import { openTestPostgres } from "./support/databases.ts";
import { createHarness, type Harness } from "./support/harness.ts";
import { freePort } from "./support/ports.ts";

const MONITORING = join(import.meta.dirname, "..", "deploy", "monitoring");
const RULES = join(MONITORING, "prometheus", "alerts.yml");

/** Runs a command to its end; a missing binary fails the test (never skips). */
function run(command: string, args: string[], cwd = MONITORING) {
  const result = spawnSync(command, args, { cwd, encoding: "utf8", timeout: 60_000 });
  if (result.error) throw new Error(`${command} could not run (apt-get install -y prometheus): ${result.error.message}`);
  return { status: result.status, output: `${result.stdout}${result.stderr}` };
}

/** Every metric family an expression names (histogram series reduced to their family). */
function metricNames(text: string): string[] {
  const names = text.match(/\b(?:orderly|process|nodejs)_[a-z0-9_]+/g) ?? [];
  return [...new Set(names.map((name) => name.replace(/_(bucket|count|sum)$/, "")))].sort();
}

/** How many alert rules the rules file holds. */
const ruleCount = () => [...readFileSync(RULES, "utf8").matchAll(/^\s+- alert: /gm)].length;

describe("monitoring files", () => {
  it("alert rules pass promtool check rules", () => {
    const r = run("promtool", ["check", "rules", RULES]);
    expect(r.output).toContain(`SUCCESS: ${ruleCount()} rules found`);
    expect(r.status).toBe(0);
  });

  it("every alert passes its promtool unit tests, and every alert has some", () => {
    const r = run("promtool", ["test", "rules", "alerts.test.yml"], join(MONITORING, "prometheus"));
    expect(r.output).toContain("SUCCESS");
    expect(r.status).toBe(0);
    const alerts = [...readFileSync(RULES, "utf8").matchAll(/- alert: (\w+)/g)].map((m) => m[1]);
    const tested = new Set([...readFileSync(join(MONITORING, "prometheus", "alerts.test.yml"), "utf8").matchAll(/alertname: (\w+)/g)].map((m) => m[1]));
    expect(alerts.filter((alert) => !tested.has(alert))).toEqual([]);
  });

  it("the example Prometheus configuration passes promtool check config", () => {
    const r = run("promtool", ["check", "config", "prometheus.yml"], join(MONITORING, "prometheus"));
    expect(r.status, r.output).toBe(0);
  });

  it("the Grafana dashboard is provisionable JSON: a uid, unique panel ids, a query on every panel", () => {
    const dashboard = JSON.parse(readFileSync(join(MONITORING, "grafana", "dashboards", "orderly.json"), "utf8"));
    expect(dashboard.uid).toBe("orderly-overview");
    const panels = dashboard.panels as { id: number; type: string; title: string; targets?: { expr: string }[] }[];
    expect(new Set(panels.map((p) => p.id)).size).toBe(panels.length);
    for (const panel of panels.filter((p) => p.type !== "row")) expect(panel.targets?.length, panel.title).toBeGreaterThan(0);
    const titles = panels.map((p) => p.title.toLowerCase()).join(" | ");
    for (const topic of ["placements", "latency", "refusals", "outbox", "sagas", "dead letters", "pool", "event loop"]) expect(titles).toContain(topic);
  });
});

/** A real Prometheus scrapes a running Orderly (on PostgreSQL, for the pool metrics) and answers queries. */
describe("Prometheus scraping Orderly", () => {
  let h: Harness;
  let orderly: string;
  let prometheus: ChildProcess | undefined;
  let promUrl: string;
  let promLog = "";
  const dir = mkdtempSync(join(tmpdir(), "orderly-prometheus-"));

  const query = async (expr: string) => {
    const response = await fetch(`${promUrl}/api/v1/query?query=${encodeURIComponent(expr)}`);
    const body = (await response.json()) as { status: string; data: { result: { metric: Record<string, string>; value: [number, string] }[] } };
    expect(body.status).toBe("success");
    return body.data.result;
  };
  const eventually = async <T>(what: string, probe: () => Promise<T | undefined>, ms = 30_000): Promise<T> => {
    const deadline = Date.now() + ms;
    for (;;) {
      const value = await probe().catch(() => undefined);
      if (value !== undefined) return value;
      if (Date.now() > deadline) throw new Error(`${what} within ${ms} ms; prometheus said: ${promLog.slice(-2000)}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  };

  beforeAll(async () => {
    h = await createHarness(await openTestPostgres({ max: 3 }));
    orderly = await h.app.listen({ port: 0, host: "127.0.0.1" });
    await h.seed("prom", { products: [["PEN", 300, 5]], credits: [["pia", 10_000]] });
    const pia = await h.token("prom", "pia");
    expect((await h.call("POST", "/api/v1/orders", { token: pia, body: h.orderBody([["PEN", 2]]) })).status).toBe(201);
    await refreshBacklogGauges(h.services);

    const port = await freePort();
    promUrl = `http://127.0.0.1:${port}`;
    const target = new URL(orderly).host;
    writeFileSync(
      join(dir, "prometheus.yml"),
      [
        "global: { scrape_interval: 1s, evaluation_interval: 1s }",
        `rule_files: [${JSON.stringify(RULES)}]`,
        "scrape_configs:",
        "  - job_name: orderly",
        `    static_configs: [{ targets: [${JSON.stringify(target)}] }]`,
        "",
      ].join("\n"),
    );
    prometheus = spawn(
      "prometheus",
      [`--config.file=${join(dir, "prometheus.yml")}`, `--storage.tsdb.path=${join(dir, "data")}`, `--web.listen-address=127.0.0.1:${port}`],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    prometheus.stdout?.on("data", (d) => (promLog += d));
    prometheus.stderr?.on("data", (d) => (promLog += d));
    prometheus.on("error", (error) => (promLog += `\n${error.message}`));
  });

  afterAll(async () => {
    if (prometheus && prometheus.exitCode === null) {
      const gone = new Promise((resolve) => prometheus?.once("exit", resolve));
      prometheus.kill("SIGTERM");
      await Promise.race([gone, new Promise((r) => setTimeout(r, 5_000))]);
      if (prometheus.exitCode === null) prometheus.kill("SIGKILL");
    }
    rmSync(dir, { recursive: true, force: true });
    await h?.close();
  });

  it("scrapes the target and answers a query on Orderly's series", async () => {
    const up = await eventually("the target is up", async () => {
      const result = await query('up{job="orderly"}');
      return result[0]?.value[1] === "1" ? result : undefined;
    });
    expect(up[0]?.metric.instance).toBe(new URL(orderly).host);
    const placed = await eventually("the placement counter is scraped", async () => {
      const result = await query('orderly_order_placements_total{job="orderly", outcome="placed"}');
      return result.length > 0 ? result : undefined;
    });
    expect(placed[0]?.value[1]).toBe("1");
    const pool = await query('orderly_db_pool_max_connections{job="orderly"}');
    expect(pool[0]?.value[1]).toBe("3");
  });

  it("evaluates every alert rule on the live series without error, none firing on a healthy Orderly", async () => {
    const groups = await eventually("the rules are evaluated", async () => {
      const response = await fetch(`${promUrl}/api/v1/rules`);
      const body = (await response.json()) as { data: { groups: { rules: { name: string; health: string; lastError?: string; state: string; lastEvaluation: string }[] }[] } };
      const rules = body.data.groups.flatMap((g) => g.rules);
      return rules.length === ruleCount() && rules.every((r) => !r.lastEvaluation.startsWith("0001")) ? rules : undefined;
    });
    expect(groups.map((r) => ({ name: r.name, health: r.health, error: r.lastError ?? "", state: r.state }))).toEqual(
      groups.map((r) => ({ name: r.name, health: "ok", error: "", state: "inactive" })),
    );
  });

  it("every metric the dashboard and the alert rules query is one Orderly exports", async () => {
    const exported = new Set(metricNames(await (await fetch(`${orderly}/metrics`)).text()));
    const queried = metricNames(readFileSync(join(MONITORING, "grafana", "dashboards", "orderly.json"), "utf8") + readFileSync(RULES, "utf8"));
    expect(queried.length).toBeGreaterThan(15);
    expect(queried.filter((name) => !exported.has(name))).toEqual([]);
  });
});
