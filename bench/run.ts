// `npm run bench`: Orderly's orders/s and latency in every shape, beside pgbench running the textbook
// placement (bench/textbook) on the same machine in the same run, judged against issue 8's targets.
// Writes bench/results/<stamp>.html and .json and prints the ratio table; see README "Benchmark".
//
// Env: DATABASE_URL (PostgreSQL server; default postgres://postgres@127.0.0.1:5432/postgres),
// AMQP_URL (split phase, skipped when unreachable), REDIS_URL (passed to the servers on PostgreSQL),
// BENCH_SECONDS (default 20), BENCH_CONNECTIONS (default 64), BENCH_ONLY=uniform,hot,async,split,split-2pc,embedded,footprint;
// ORDERLY_* settings (ORDERLY_DB_POOL_MAX, …) are passed on to every server. BENCH_CPU_PROF=1 has
// every server write a CPU profile beside its log (read them with bench/cpu-profile.ts; the ready
// times of P6 then include the profiler).
// Flag: --keep-pgbench-db keeps pgbench's seeded database (orderly_pgbench) between runs.
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { cpus, freemem, loadavg, tmpdir, totalmem } from "node:os";
import { join, relative, resolve } from "node:path";
import { parseArgs } from "node:util";
import { postgresStartedAt, serverFacts, type ServerFacts } from "./databases.ts";
import { cleanUp, guardExits, onCleanup, progress, stopRequested } from "./lifecycle.ts";
import { asyncPhase, type BenchConfig, embeddedPhase, footprintPhase, hotPhase, openShop, POSTGRES_CATALOGUE, splitPhase, uniformPhase } from "./phases.ts";
import { preparePgbenchDatabase, textbookDrift } from "./pgbench.ts";
import { buildServer, passedSettings } from "./servers.ts";
import { ratioTable, type Results, verdicts, writeReport } from "./report.ts";
import { customerTokens } from "./workloads.ts";

const PHASES = ["uniform", "hot", "async", "split", "split-2pc", "embedded", "footprint"] as const;
type Phase = (typeof PHASES)[number];
const ROOT = resolve(import.meta.dirname, "..");
const RESULTS = join(ROOT, "bench", "results");

function settings() {
  // Positionals allowed: bin/tsx-run.mjs leaves the entry file in argv.
  const { values } = parseArgs({ allowPositionals: true, options: { "keep-pgbench-db": { type: "boolean", default: false } } });
  const whole = (name: string, fallback: number) => {
    const value = Number(process.env[name] ?? fallback);
    if (!Number.isInteger(value) || value < 1) throw new Error(`${name} must be a whole number ≥ 1 (got ${process.env[name]})`);
    return value;
  };
  const only = (process.env.BENCH_ONLY ?? PHASES.join(",")).split(",").map((p) => p.trim()).filter(Boolean);
  const unknown = only.filter((p) => !(PHASES as readonly string[]).includes(p));
  if (unknown.length > 0) throw new Error(`BENCH_ONLY: unknown phase ${unknown.join(", ")}; use ${PHASES.join(",")}`);
  return {
    seconds: whole("BENCH_SECONDS", 20),
    connections: whole("BENCH_CONNECTIONS", 64),
    databaseUrl: process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres",
    amqpUrl: process.env.AMQP_URL ?? "amqp://guest:guest@127.0.0.1:5672",
    redisUrl: process.env.REDIS_URL || undefined,
    keepPgbenchDb: values["keep-pgbench-db"] as boolean,
    phases: PHASES.filter((p) => only.includes(p)),
  };
}

/** The command as a person would type it again: the variables that were set, without passwords or secrets. */
function commandLine(keep: boolean): string {
  const hide = (value: string) => value.replace(/\/\/([^:@/]+):[^@/]*@/, "//$1:***@");
  const variables = [
    ...["DATABASE_URL", "AMQP_URL", "REDIS_URL", "BENCH_SECONDS", "BENCH_CONNECTIONS", "BENCH_ONLY"].flatMap((name) => (process.env[name] ? [[name, process.env[name]] as const] : [])),
    ...passedSettings(),
  ].map(([name, value]) => `${name}=${/SECRET|PASSWORD/.test(name) ? "***" : hide(value)}`);
  return [...variables, "npm run bench", ...(keep ? ["-- --keep-pgbench-db"] : [])].join(" ");
}

/** An error in one line: a database error's own message first (drizzle wraps it in "Failed query: …"). */
function describe(error: unknown): string {
  const { message, cause } = error as Error;
  const first = message.split("\n")[0] as string;
  return cause instanceof Error ? `${cause.message} (${first})` : message;
}

async function main(): Promise<number> {
  const s = settings();
  const stamp = new Date().toISOString().slice(0, 19).replace(/[-:]/g, "").replace("T", "_");
  const workDir = join(RESULTS, stamp);
  mkdirSync(workDir, { recursive: true });
  const scratchDir = mkdtempSync(join(tmpdir(), "orderly-bench-"));
  // A bound on the whole run, generous for a busy machine: it stops by itself whatever happens.
  const limitMs = (15 * 60 + 30 * s.seconds) * 1000;
  guardExits(limitMs);
  onCleanup(`remove ${scratchDir}`, () => rmSync(scratchDir, { recursive: true, force: true }));

  progress("building the server (npm run build): the bench runs dist/, as production does");
  buildServer();
  const started = { loadAverage: loadavg() };
  progress(`bench ${stamp}: ${s.phases.join(", ")}; ${s.seconds} s per load at ${s.connections} connections; stops by itself within ${Math.round(limitMs / 60_000)} min`);
  progress(`  logs in ${relative(ROOT, workDir)}/; free memory ${Math.round(freemem() / 2 ** 20)} MiB; load average ${loadavg().map((l) => l.toFixed(2)).join(" ")}`);
  const drift = textbookDrift();
  const textbook = drift === undefined ? "../shared/bench not found, not compared" : drift.length === 0 ? "identical to ../shared/bench" : `DIFFER from ../shared/bench: ${drift.join(", ")}`;
  if (drift?.length) progress(`  WARNING: bench/textbook ${textbook}`);

  const needsPostgres = s.phases.some((p) => p !== "embedded");
  let facts: ServerFacts | undefined;
  if (needsPostgres) {
    facts = await serverFacts(s.databaseUrl).catch((error: Error) => {
      throw new Error(`DATABASE_URL: cannot reach PostgreSQL at ${new URL(s.databaseUrl).host}: ${error.message}`);
    });
    progress(`  PostgreSQL ${facts.version} (max_connections ${facts.maxConnections}; pgbench alone opens ${s.connections})`);
  }
  const tenant = `bench-${stamp}`;
  const config: BenchConfig = { ...s, stamp, tenant, workDir, scratchDir, tokens: await customerTokens(tenant, POSTGRES_CATALOGUE.users) };

  const results: Results = {
    meta: {
      date: new Date().toISOString(),
      command: commandLine(s.keepPgbenchDb),
      seconds: s.seconds,
      connections: s.connections,
      phases: s.phases,
      machine: {
        cpus: cpus().length,
        cpuModel: cpus()[0]?.model.trim() ?? "unknown",
        memoryBytes: totalmem(),
        postgres: facts?.version ?? "not used",
        node: process.version,
        loadAverage: { start: started.loadAverage, end: [] },
      },
      textbook,
    },
    errors: {},
    disturbed: {},
  };
  const selected = (phase: Phase) => s.phases.includes(phase);
  const startedAt = () => postgresStartedAt(s.databaseUrl).catch(() => "unreachable");
  /**
   * Runs one part of the run; one that fails is reported and the others still run. PostgreSQL
   * restarted meanwhile (fault suites on a shared machine do that) voids the part's figures.
   */
  const attempt = async <T>(part: string, work: () => Promise<T>): Promise<T | undefined> => {
    if (stopRequested()) return undefined;
    const before = needsPostgres ? await startedAt() : "";
    try {
      return await work();
    } catch (error) {
      results.errors[part] = describe(error);
      progress(`${part} FAILED: ${describe(error)}`);
      return undefined;
    } finally {
      const after = needsPostgres ? await startedAt() : "";
      if (after !== before) {
        results.disturbed[part] = `PostgreSQL restarted during it (up since ${after}): its figures are void`;
        progress(`  WARNING: ${part}: ${results.disturbed[part]}`);
      }
    }
  };

  try {
    if (selected("uniform") || selected("hot") || selected("async")) {
      let pgbenchUrl: string | undefined;
      if (selected("uniform") || selected("hot")) {
        progress(`pgbench: ${s.keepPgbenchDb ? "kept database" : "database for this run"}, seeded by textbook schema.sql (10k SKUs, 100k wallets)`);
        pgbenchUrl = await attempt("pgbench database", () => preparePgbenchDatabase(s.databaseUrl, s.keepPgbenchDb, stamp));
      }
      const shop = await attempt("all-in-one server", () => openShop(config));
      if (shop) {
        if (selected("uniform")) results.uniform = await attempt("uniform", () => uniformPhase(config, shop, pgbenchUrl));
        if (selected("hot")) results.hot = await attempt("hot", () => hotPhase(config, shop, pgbenchUrl, facts as ServerFacts));
        if (selected("async")) results.async = await attempt("async", () => asyncPhase(config, shop));
        await shop.server.stop();
      }
    }
    if (selected("split")) results.split = await attempt("split", () => splitPhase(config));
    if (selected("split-2pc")) results.split2pc = await attempt("split-2pc", () => splitPhase(config, "2pc"));
    if (selected("embedded")) results.embedded = await attempt("embedded", () => embeddedPhase(config));
    if (selected("footprint")) results.footprint = await attempt("footprint", () => footprintPhase(config));
  } finally {
    progress("cleaning up: stopping servers, dropping databases, deleting queues");
    await cleanUp();
  }
  const stopped = stopRequested();
  if (stopped) results.errors.run = `${stopped.why}: the phases after it did not run`;

  results.meta.machine.loadAverage.end = loadavg();
  const rows = verdicts(results);
  const written = writeReport(results, rows, join(RESULTS, stamp));
  console.log(`\n${ratioTable(rows)}\n`);
  console.log(`report: ${relative(process.cwd(), written.html)}  figures: ${relative(process.cwd(), written.json)}`);
  // Speed targets inform; a broken invariant, an oversell, a lost order or a phase that failed is an error.
  return stopped?.code ?? (rows.some((r) => r.correctness && r.verdict === "FAIL") ? 1 : 0);
}

main().then(
  (code) => process.exit(code),
  async (error: unknown) => {
    console.error(`bench: ${describe(error)}`);
    await cleanUp();
    process.exit(1);
  },
);
