// The figures judged against the issue's targets: a ratio table for the terminal, the figures as
// JSON for later comparison, and a self-contained HTML report with inline SVG charts.
import { writeFileSync } from "node:fs";
import { fmt, type HttpLoad, otherAnswers, type Percentiles, type Throughput } from "./figures.ts";
import type { AsyncResult, FootprintResult, HotResult, Reference, SplitResult, WorkloadResult } from "./phases.ts";

export interface Results {
  meta: {
    date: string;
    command: string;
    seconds: number;
    connections: number;
    phases: string[];
    machine: { cpus: number; cpuModel: string; memoryBytes: number; postgres: string; node: string; loadAverage: { start: number[]; end: number[] } };
    /** Whether bench/textbook still matches ../shared/bench. */
    textbook: string;
  };
  uniform?: WorkloadResult;
  hot?: HotResult;
  async?: AsyncResult;
  split?: SplitResult | { skipped: string };
  /** The split deployment placing by two-phase commit (ORDERLY_PLACEMENT=2pc): no target, beside saga and local. */
  split2pc?: SplitResult | { skipped: string };
  embedded?: WorkloadResult;
  footprint?: FootprintResult;
  /** Phases that could not finish, with why. */
  errors: Record<string, string>;
  /** Phases whose figures are void because something outside the bench disturbed them, with what. */
  disturbed: Record<string, string>;
}

export interface Verdict {
  what: string;
  measured: string;
  target: string;
  /** "—": a figure reported beside a target, not judged. */
  verdict: "PASS" | "FAIL" | "n/a" | "—";
  /** A correctness check (invariants, oversell, lost orders, a phase that failed or was disturbed) rather than a speed target. */
  correctness?: boolean;
}

/** Issue 8's targets: ratios (x), p99 latencies (ms), rates (orders/s), memory (MiB), ready time (ms). */
const TARGETS = {
  uniform: { ratio: 1.3, p99: 50 },
  hot: { ratio: 3, p99: 100 },
  split: { ratio: 0.4, p99: 150 },
  embedded: { ordersPerSecond: 300, p99: 250 },
  footprint: { postgresMiB: 120, embeddedMiB: 300, readyMs: 1000 },
  async: { p99: 20, ratio: 1 },
};
const MiB = 2 ** 20;
const judge = (ok: boolean) => (ok ? "PASS" : "FAIL");
const ms = (n: number) => `${fmt(n, n < 10 ? 1 : 0)} ms`;
const measuredRef = (ref: Reference | undefined): Throughput | undefined => (ref && !("error" in ref) ? ref : undefined);

function ratio(what: string, ours: number, theirs: number | undefined, minimum: number, why: string, note = ""): Verdict {
  if (theirs === undefined || !(theirs > 0)) return { what, measured: `${fmt(ours)}/s (${why})${note}`, target: `≥ ${minimum}x`, verdict: "n/a" };
  const r = ours / theirs;
  return { what, measured: `${fmt(r, 2)}x (${fmt(ours)} / ${fmt(theirs)})${note}`, target: `≥ ${minimum}x`, verdict: judge(r >= minimum) };
}

const atMost = (what: string, value: number, limit: number, show: (n: number) => string): Verdict => ({ what, measured: show(value), target: `≤ ${show(limit)}`, verdict: judge(value <= limit) });

/** A p99 target: without a single counted answer there is no latency to meet it with. */
const p99 = (what: string, load: HttpLoad, limit: number): Verdict =>
  load.orders > 0 ? atMost(what, load.latencyMs.p99, limit, ms) : { what, measured: "no successful answer to time", target: `≤ ${ms(limit)}`, verdict: "FAIL" };

const check = (what: string, problems: string[], none: string): Verdict => ({
  what,
  measured: problems.length === 0 ? none : `${problems.length}: ${problems.slice(0, 2).join("; ")}`,
  target: none,
  verdict: judge(problems.length === 0),
  correctness: true,
});

/** Every target of the issue that this run measured, judged. */
export function verdicts(results: Results): Verdict[] {
  const rows: Verdict[] = [];
  const { uniform, hot, split, embedded, footprint } = results;
  const asynchronous = results.async;
  if (uniform) {
    const ref = measuredRef(uniform.reference);
    rows.push(ratio("P1 uniform: orders/s vs pgbench", uniform.orderly.ordersPerSecond, ref?.ordersPerSecond, TARGETS.uniform.ratio, "pgbench did not run", otherAnswers(uniform.orderly)));
    rows.push(p99("P1 uniform: p99", uniform.orderly, TARGETS.uniform.p99));
    rows.push(check("P1 uniform: invariants 1-3", uniform.invariants, "hold"));
  }
  if (hot) {
    const ref = measuredRef(hot.reference);
    rows.push(ratio("P2 hot: successful orders/s vs pgbench-hot", hot.orderly.ordersPerSecond, ref?.ordersPerSecond, TARGETS.hot.ratio, "pgbench did not run", otherAnswers(hot.orderly)));
    rows.push(p99("P2 hot: p99", hot.orderly, TARGETS.hot.p99));
    rows.push(check("P2 hot: oversell of SKU-0", hot.oversell, "none"));
    rows.push(check("P2 hot: invariants 1-3", hot.invariants, "hold"));
    rows.push({
      what: "P2 flush ceiling (pg_test_fsync)",
      measured: "skipped" in hot.flush ? `not measured: ${hot.flush.skipped}` : `${fmt(hot.flush.commitsPerSecond)} commits/s one session could flush (${hot.flush.walSyncMethod})`,
      target: "",
      verdict: "—",
    });
  }
  if (split) {
    if ("skipped" in split) rows.push({ what: "P3 split", measured: `skipped: ${split.skipped}`, target: "", verdict: "n/a" });
    else {
      rows.push(ratio("P3 split: 201/s vs all-in-one uniform", split.orderly.ordersPerSecond, uniform?.orderly.ordersPerSecond, TARGETS.split.ratio, "uniform not run", otherAnswers(split.orderly)));
      rows.push(p99("P3 split: p99", split.orderly, TARGETS.split.p99));
      rows.push(check("P3 split: invariants 1-3", split.invariants, "hold"));
    }
  }
  const split2pc = results.split2pc;
  if (split2pc) {
    if ("skipped" in split2pc) rows.push({ what: "split 2pc", measured: `skipped: ${split2pc.skipped}`, target: "", verdict: "n/a" });
    else {
      // No target of its own: shown beside P3 (the saga's) for comparison.
      const beside = (row: Verdict): Verdict => ({ ...row, target: "", verdict: "—" });
      rows.push(beside(ratio("split 2pc: 201/s vs all-in-one uniform", split2pc.orderly.ordersPerSecond, uniform?.orderly.ordersPerSecond, 0, "uniform not run", otherAnswers(split2pc.orderly))));
      rows.push(beside(p99("split 2pc: p99", split2pc.orderly, TARGETS.split.p99)));
      rows.push(check("split 2pc: invariants 1-3", split2pc.invariants, "hold"));
    }
  }
  if (embedded) {
    const rate = embedded.orderly.ordersPerSecond;
    rows.push({ what: "P5 embedded: orders/s", measured: `${fmt(rate)}${otherAnswers(embedded.orderly)}`, target: `≥ ${TARGETS.embedded.ordersPerSecond}`, verdict: judge(rate >= TARGETS.embedded.ordersPerSecond) });
    rows.push(p99("P5 embedded: p99", embedded.orderly, TARGETS.embedded.p99));
    rows.push(check("P5 embedded: invariants 1-3", embedded.invariants, "hold"));
  }
  if (footprint) {
    const mib = (n: number) => `${fmt(n, 1)} MiB`;
    rows.push(atMost("P6 idle RSS, PostgreSQL", footprint.postgres.rssBytes / MiB, TARGETS.footprint.postgresMiB, mib));
    rows.push(atMost("P6 idle RSS, embedded", footprint.embedded.rssBytes / MiB, TARGETS.footprint.embeddedMiB, mib));
    rows.push(atMost("P6 ready, embedded, existing data dir", footprint.embedded.readyMs, TARGETS.footprint.readyMs, ms));
    rows.push({ what: "P6 ready, PostgreSQL, existing database", measured: ms(footprint.postgres.readyMs), target: "", verdict: "—" });
  }
  if (asynchronous) {
    rows.push(p99("async: 202 p99", asynchronous.accepted, TARGETS.async.p99));
    rows.push(ratio("async: drained orders/s vs synchronous", asynchronous.drainedPerSecond, uniform?.orderly.ordersPerSecond, TARGETS.async.ratio, "uniform not run"));
    const lost = [
      ...(asynchronous.drained ? [] : [`not drained within ${fmt(asynchronous.drainSeconds)} s`]),
      ...(asynchronous.lost > 0 ? [`${asynchronous.lost} accepted orders did not end PAID or CANCELLED`] : []),
    ];
    rows.push(check("async: every accepted order settled", lost, "all PAID or CANCELLED"));
    rows.push(check("async: invariants 1-3", asynchronous.invariants, "hold"));
  }
  for (const [phase, what] of Object.entries(results.disturbed)) rows.push({ what: `${phase}: disturbed`, measured: what, target: "", verdict: "FAIL", correctness: true });
  for (const [phase, error] of Object.entries(results.errors)) rows.push({ what: `${phase}: could not finish`, measured: error.split("\n")[0] as string, target: "", verdict: "FAIL", correctness: true });
  return rows;
}

/** The table printed at the end of a run. */
export function ratioTable(rows: Verdict[]): string {
  const width = (pick: (v: Verdict) => string, cap: number) => Math.min(cap, Math.max(...rows.map((r) => pick(r).length)));
  const [w1, w2, w3] = [width((r) => r.what, 44), width((r) => r.measured, 70), width((r) => r.target, 24)];
  const cut = (text: string, w: number) => (text.length > w ? `${text.slice(0, w - 1)}…` : text.padEnd(w));
  return rows.map((r) => `${cut(r.what, w1)}  ${cut(r.measured, w2)}  ${cut(r.target, w3)}  ${r.verdict}`).join("\n");
}

export function writeReport(results: Results, rows: Verdict[], basePath: string): { json: string; html: string } {
  const json = `${basePath}.json`;
  const html = `${basePath}.html`;
  writeFileSync(json, `${JSON.stringify({ ...results, verdicts: rows }, null, 2)}\n`);
  writeFileSync(html, htmlReport(results, rows));
  return { json, html };
}

// ---------------------------------------------------------------- HTML

const esc = (text: string) => text.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c] as string);
const ORDERLY = "#2563eb";
const PGBENCH = "#ea580c";
const SHADES = ["#bfdbfe", "#60a5fa", "#2563eb", "#1e3a8a"];
const SHADES_PGBENCH = ["#fed7aa", "#fb923c", "#ea580c", "#7c2d12"];

interface Workload {
  name: string;
  orderly: HttpLoad;
  pgbench?: Throughput;
  /** Orderly's p99 target, ms. */
  p99: number;
}

/** The Orderly and pgbench loads of each workload that ran, in report order. */
function workloads(results: Results): Workload[] {
  const list: Workload[] = [];
  const add = (name: string, result: WorkloadResult | undefined, p99: number) => {
    if (!result) return;
    const pgbench = measuredRef(result.reference);
    list.push({ name, orderly: result.orderly, p99, ...(pgbench ? { pgbench } : {}) });
  };
  add("uniform", results.uniform, TARGETS.uniform.p99);
  add("hot", results.hot, TARGETS.hot.p99);
  if (results.async) list.push({ name: "async (202 answers)", orderly: results.async.accepted, p99: TARGETS.async.p99 });
  if (results.split && !("skipped" in results.split)) add("split", results.split, TARGETS.split.p99);
  if (results.split2pc && !("skipped" in results.split2pc)) add("split 2pc", results.split2pc, TARGETS.split.p99);
  add("embedded", results.embedded, TARGETS.embedded.p99);
  return list;
}

/** A round step for about `count` grid lines up to `max`. */
function niceStep(max: number, count = 4): number {
  const raw = max / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  return ([1, 2, 2.5, 5, 10].find((m) => m * power >= raw) ?? 10) * power;
}

/** Orders per second over the run's seconds, one line per series. */
function lineChart(title: string, series: { name: string; color: string; values: number[] }[]): string {
  const [W, H, left, right, top, bottom] = [460, 230, 52, 110, 26, 34];
  const n = Math.max(2, ...series.map((s) => s.values.length));
  const step = niceStep(Math.max(1, ...series.flatMap((s) => s.values)));
  const ceiling = step * Math.ceil(Math.max(1, ...series.flatMap((s) => s.values)) / step);
  const x = (i: number) => left + (i / (n - 1)) * (W - left - right);
  const y = (v: number) => H - bottom - (v / ceiling) * (H - top - bottom);
  const grid: string[] = [];
  for (let v = 0; v <= ceiling + 1e-9; v += step) {
    grid.push(`<line x1="${left}" x2="${W - right}" y1="${y(v)}" y2="${y(v)}" stroke="#e5e7eb"/><text x="${left - 6}" y="${y(v) + 4}" font-size="10" text-anchor="end">${fmt(v)}</text>`);
  }
  const every = n <= 10 ? 1 : n <= 40 ? 5 : 10 * Math.ceil(n / 80);
  for (let second = 1; second <= n; second++) {
    if (second === 1 || second % every === 0) grid.push(`<text x="${x(second - 1)}" y="${H - bottom + 14}" font-size="10" text-anchor="middle">${second}</text>`);
  }
  const lines = series.map(
    (s) => `<polyline fill="none" stroke="${s.color}" stroke-width="2" points="${s.values.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ")}"/>`,
  );
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="system-ui, sans-serif">
<text x="${left}" y="16" font-size="13" font-weight="600">${esc(title)}</text>
${grid.join("")}
<line x1="${left}" x2="${left}" y1="${top}" y2="${H - bottom}" stroke="#9ca3af"/>
<text x="${(left + W - right) / 2}" y="${H - 4}" font-size="10" text-anchor="middle">second of the measured run</text>
${lines.join("")}
${series.map((item, i) => `<rect x="${W - right + 10}" y="${top + 1 + i * 16}" width="10" height="10" fill="${item.color}"/><text x="${W - right + 24}" y="${top + 10 + i * 16}" font-size="11">${esc(item.name)}</text>`).join("")}
</svg>`;
}

/** p50 / p90 / p99 / max of each load as grouped bars on a logarithmic millisecond scale; a dashed line marks a p99 target. */
function latencyChart(groups: { label: string; latency: Percentiles; shades: string[]; p99Target?: number }[]): string {
  const keys = ["p50", "p90", "p99", "max"] as const;
  const values = groups.flatMap((g) => [...keys.map((k) => g.latency[k]), g.p99Target ?? 0]).filter((v) => v > 0);
  const low = 10 ** Math.floor(Math.log10(Math.max(0.1, Math.min(...values, 1))));
  const high = 10 ** Math.ceil(Math.log10(Math.max(...values, 10)));
  const [groupWidth, barWidth, left, right, top, bottom, H] = [92, 16, 68, 100, 26, 46, 260];
  const W = Math.max(440, left + groups.length * groupWidth + right);
  const y = (v: number) => H - bottom - ((Math.log10(Math.max(v, low)) - Math.log10(low)) / (Math.log10(high) - Math.log10(low))) * (H - top - bottom);
  const parts: string[] = [];
  for (let v = low; v <= high * 1.0001; v *= 10) {
    parts.push(`<line x1="${left}" x2="${W - right}" y1="${y(v)}" y2="${y(v)}" stroke="#e5e7eb"/><text x="${left - 6}" y="${y(v) + 4}" font-size="10" text-anchor="end">${fmt(v, v < 1 ? 1 : 0)} ms</text>`);
  }
  groups.forEach((g, gi) => {
    const x0 = left + gi * groupWidth + 10;
    keys.forEach((k, ki) => {
      const v = g.latency[k];
      parts.push(
        `<rect x="${x0 + ki * barWidth}" y="${y(v)}" width="${barWidth - 2}" height="${H - bottom - y(v)}" fill="${g.shades[ki]}"><title>${esc(g.label)} ${k}: ${fmt(v, 1)} ms</title></rect>`,
      );
    });
    if (g.p99Target !== undefined) {
      const ty = y(g.p99Target);
      parts.push(`<line x1="${x0 - 4}" x2="${x0 + 4 * barWidth + 2}" y1="${ty}" y2="${ty}" stroke="#b91c1c" stroke-width="1.5" stroke-dasharray="4 3"><title>p99 target ${fmt(g.p99Target)} ms</title></line>`);
    }
    const [workload, side] = g.label.split(" · ");
    parts.push(`<text x="${x0 + 2 * barWidth}" y="${H - bottom + 14}" font-size="10" text-anchor="middle">${esc(workload ?? "")}</text>`);
    parts.push(`<text x="${x0 + 2 * barWidth}" y="${H - bottom + 27}" font-size="10" text-anchor="middle" fill="#6b7280">${esc(side ?? "")}</text>`);
  });
  // Each percentile's shade for Orderly (blue) and for pgbench (orange), then the target's mark.
  keys.forEach((k, i) => {
    const ky = top + 10 + i * 16;
    parts.push(`<rect x="${W - right + 10}" y="${ky - 9}" width="10" height="10" fill="${SHADES[i]}"/><rect x="${W - right + 22}" y="${ky - 9}" width="10" height="10" fill="${SHADES_PGBENCH[i]}"/>`);
    parts.push(`<text x="${W - right + 36}" y="${ky}" font-size="11">${k}</text>`);
  });
  const ty = top + 10 + keys.length * 16;
  parts.push(`<line x1="${W - right + 10}" x2="${W - right + 32}" y1="${ty - 4}" y2="${ty - 4}" stroke="#b91c1c" stroke-width="1.5" stroke-dasharray="4 3"/><text x="${W - right + 36}" y="${ty}" font-size="11">p99 target</text>`);
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="system-ui, sans-serif">
<text x="${left}" y="16" font-size="13" font-weight="600">Latency of successful orders (log scale)</text>
${parts.join("")}
</svg>`;
}

const table = (head: string[], body: string[][]) =>
  `<table><thead><tr>${head.map((h) => `<th>${esc(h)}</th>`).join("")}</tr></thead><tbody>${body.map((r) => `<tr>${r.map((c) => `<td>${c}</td>`).join("")}</tr>`).join("")}</tbody></table>`;

function htmlReport(results: Results, rows: Verdict[]): string {
  const { meta } = results;
  const loads = workloads(results);
  const charts = loads
    .map((w) =>
      lineChart(`${w.name}: orders/s`, [
        { name: "Orderly", color: ORDERLY, values: w.orderly.perSecond },
        ...(w.pgbench ? [{ name: "pgbench", color: PGBENCH, values: w.pgbench.perSecond }] : []),
      ]),
    )
    .join("\n");
  const latencyGroups = loads.flatMap((w) => [
    { label: `${w.name} · Orderly`, latency: w.orderly.latencyMs, shades: SHADES, p99Target: w.p99 },
    ...(w.pgbench ? [{ label: `${w.name} · pgbench`, latency: w.pgbench.latencyMs, shades: SHADES_PGBENCH }] : []),
  ]);
  const detail = loads.flatMap((w) => {
    const line = (side: string, t: Throughput, answers: string) => [
      esc(w.name),
      side,
      fmt(t.orders),
      fmt(t.ordersPerSecond),
      ...(["p50", "p90", "p99", "max"] as const).map((k) => fmt(t.latencyMs[k], 1)),
      answers,
    ];
    const answers = Object.entries(w.orderly.answers).map(([status, n]) => `${esc(status)}×${fmt(n)}`).join(", ");
    return [line("Orderly", w.orderly, answers), ...(w.pgbench ? [line("pgbench", w.pgbench, "")] : [])];
  });
  const extra: string[] = [];
  if (results.hot && !("skipped" in results.hot.flush)) {
    const f = results.hot.flush;
    extra.push(`<h3>Flush ceiling</h3><p>pg_test_fsync -s 2 in ${esc(f.folder)} (the data directory's filesystem), one 8 kB write: ${Object.entries(f.opsPerSecond).map(([m, n]) => `${esc(m)} ${fmt(n)}`).join(" · ")} ops/s. PostgreSQL flushes with <code>${esc(f.walSyncMethod)}</code>: <b>${fmt(f.commitsPerSecond)} commits/s one session could flush</b>, the ceiling of one hot row without batching.</p>`);
  }
  if (results.hot) {
    const s = results.hot.hotStock;
    extra.push(`<p>SKU-0 after the hot run: sold ${fmt(s.sold)} + reserved ${fmt(s.reserved)} + available ${fmt(s.available)} = ${fmt(s.sold + s.reserved + s.available)}; stock ${fmt(s.initial + s.adjusted)}.</p>`);
  }
  if (results.async) {
    const a = results.async;
    extra.push(`<h3>Asynchronous placement</h3><p>${fmt(a.accepted.orders)} orders accepted (202) in ${fmt(a.accepted.seconds, 1)} s; no order PENDING ${fmt(a.drainSeconds, 1)} s after the load stopped${a.drained ? "" : " (bound reached: NOT drained)"}; drained ${fmt(a.drainedPerSecond)} orders/s overall. Outcomes: ${Object.entries(a.outcomes).map(([s, n]) => `${esc(s)} ${fmt(n)}`).join(", ")}; lost ${a.lost}.</p>`);
  }
  for (const [name, split] of [["Split", results.split], ["Split 2pc", results.split2pc]] as const) {
    if (!split || "skipped" in split) continue;
    const cpu = Object.entries(split.cpuMsPerAnswer).map(([service, ms]) => `${esc(service)} ${fmt(ms, 1)} ms`).join(", ");
    extra.push(
      `<p>${name}: ${fmt(split.answersPerSecond)} answers/s of any status; CPU per answer ${cpu}; settled (no order PENDING, outbox and sagas idle, invariants checked) ${fmt(split.settleSeconds, 1)} s after the load stopped.</p>`,
    );
  }
  if (results.footprint) {
    const f = results.footprint;
    extra.push(`<h3>Footprint</h3>${table(
      ["database", "ready, second start", "ready, first start", "idle RSS, process tree", "server process alone"],
      ([["PostgreSQL", f.postgres], ["embedded (PGlite)", f.embedded]] as const).map(([name, start]) => [
        name,
        ms(start.readyMs),
        ms(start.firstReadyMs),
        `${fmt(start.rssBytes / MiB, 1)} MiB`,
        `${fmt(start.processRssBytes / MiB, 1)} MiB`,
      ]),
    )}`);
  }
  const problems = rows.filter((r) => r.correctness && r.verdict === "FAIL");
  const m = meta.machine;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Orderly bench ${esc(meta.date)}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #111827; padding: 0 1rem; }
table { border-collapse: collapse; margin: .5rem 0 1rem; font-size: 14px; }
th, td { border-bottom: 1px solid #e5e7eb; padding: 4px 10px; text-align: left; vertical-align: top; }
td.PASS { color: #15803d; font-weight: 600; } td.FAIL { color: #b91c1c; font-weight: 600; } td.n\\/a { color: #6b7280; }
.charts { display: flex; flex-wrap: wrap; gap: 12px; } code { background: #f3f4f6; padding: 1px 4px; }
.alert { background: #fef2f2; border: 1px solid #fecaca; padding: .5rem 1rem; }
</style></head><body>
<h1>Orderly bench</h1>
<p><code>${esc(meta.command)}</code><br>${esc(meta.date)} · ${meta.seconds} s per run at ${meta.connections} connections · phases: ${esc(meta.phases.join(", "))}</p>
<p>Machine: ${m.cpus} × ${esc(m.cpuModel)}, ${fmt(m.memoryBytes / 2 ** 30, 1)} GiB memory, PostgreSQL ${esc(m.postgres)}, Node ${esc(m.node)};
load average ${m.loadAverage.start.map((l) => fmt(l, 2)).join(" / ")} at the start, ${m.loadAverage.end.map((l) => fmt(l, 2)).join(" / ")} at the end (1 / 5 / 15 min). Textbook scripts: ${esc(meta.textbook)}.</p>
${problems.length > 0 ? `<p class="alert"><b>Correctness check failed, or figures void:</b> ${problems.map((p) => esc(`${p.what}: ${p.measured}`)).join("<br>")}</p>` : ""}
<h2>Targets</h2>
${table(["", "measured", "target", ""], rows.map((r) => [esc(r.what), esc(r.measured), esc(r.target), r.verdict])).replace(/<td>(PASS|FAIL|n\/a)<\/td>/g, '<td class="$1">$1</td>')}
<h2>Orders per second over time</h2>
<p>Successful orders completed in each second of the measured run (Orderly: 201 answers, 202 for async; pgbench: its <code>--progress=1</code> tps).</p>
<div class="charts">${charts}</div>
<h2>Latency percentiles</h2>
${latencyGroups.length > 0 ? latencyChart(latencyGroups) : "<p>No load ran.</p>"}
${table(["workload", "", "orders", "orders/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "all answers"], detail)}
${extra.join("\n")}
</body></html>
`;
}
