// The reference side: pgbench running the textbook placement (bench/textbook, copied from
// ../shared/bench) on its own database, and the flush ceiling of the disk PostgreSQL writes to.
import { execFile, spawn } from "node:child_process";
import { accessSync, constants, existsSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { promisify } from "node:util";
import { databaseExists, databaseUrl, psqlFile, query, scratchDatabase, type ServerFacts } from "./databases.ts";
import { fmt, percentiles, sleep, type Throughput } from "./figures.ts";
import { onCleanup, progress, trackGroup } from "./lifecycle.ts";

const TEXTBOOK = resolve(import.meta.dirname, "textbook");
const REFERENCE = resolve(import.meta.dirname, "..", "..", "shared", "bench");
const FILES = ["schema.sql", "reset.sql", "order_uniform.sql", "order_hot.sql"];
/** The database pgbench keeps between runs with --keep-pgbench-db. */
const KEPT_NAME = "orderly_pgbench";

export type TextbookWorkload = "uniform" | "hot";

export interface PgbenchRun extends Throughput {
  /** Transactions pgbench counted as failed (none expected: the textbook refuses by ROLLBACK, not error). */
  failed: number;
}

/** The copies differ from ../shared/bench (one header line aside)? Undefined when the reference is not there. */
export function textbookDrift(): string[] | undefined {
  if (!existsSync(REFERENCE)) return undefined;
  const body = (file: string) => readFileSync(file, "utf8").split("\n").slice(1).join("\n");
  return FILES.filter((f) => body(join(TEXTBOOK, f)) !== readFileSync(join(REFERENCE, f), "utf8"));
}

/**
 * The textbook database, seeded by schema.sql (10k SKUs, 100k wallets, 100k coupons). Created for this
 * run and dropped at its end; with `keep`, one database kept between runs and seeded only when it is not.
 */
export async function preparePgbenchDatabase(base: string, keep: boolean, stamp: string): Promise<string> {
  if (!keep) {
    const url = await scratchDatabase(base, `orderly_pgbench_${stamp}`);
    await psqlFile(url, join(TEXTBOOK, "schema.sql"));
    return url;
  }
  const url = databaseUrl(base, KEPT_NAME);
  if (!(await databaseExists(base, KEPT_NAME))) await query(base, `create database ${KEPT_NAME}`);
  const seeded = await query<{ ok: boolean }>(url, "select (select count(*) from stock) = 10001 and (select count(*) from accounts) = 100000 as ok").then(
    (rows) => rows[0]?.ok === true,
    () => false,
  );
  if (seeded) progress(`pgbench: reusing database ${KEPT_NAME} (kept by --keep-pgbench-db)`);
  else await psqlFile(url, join(TEXTBOOK, "schema.sql"));
  return url;
}

/**
 * reset.sql, then `pgbench -n -M prepared -c C -j 2 -T S` on the workload's script, with a progress
 * line per second (tps per second) and a log of every transaction (latency percentiles).
 */
export async function runPgbench(url: string, workload: TextbookWorkload, options: { seconds: number; connections: number; workDir: string }): Promise<PgbenchRun> {
  const { seconds, connections, workDir } = options;
  await psqlFile(url, join(TEXTBOOK, "reset.sql"));
  await connectionsFree(url, connections);
  const logPrefix = join(workDir, `pgbench-${workload}`);
  const child = spawn(
    "pgbench",
    ["-n", "-M", "prepared", "-f", join(TEXTBOOK, `order_${workload}.sql`), "-c", String(connections), "-j", "2", "-T", String(seconds),
      "--progress=1", "-l", "--log-prefix", logPrefix, url],
    { detached: true, stdio: ["ignore", "pipe", "pipe"] },
  );
  const untrack = trackGroup(child.pid as number);
  const killer = setTimeout(() => child.kill("SIGKILL"), (seconds + 120) * 1000);
  let stdout = "";
  let stderr = "";
  const perSecond: number[] = [];
  child.stdout.on("data", (d) => (stdout += d));
  createInterface({ input: child.stderr }).on("line", (line) => {
    const tps = /^progress: [\d.]+ s, ([\d.]+) tps/.exec(line)?.[1];
    if (tps === undefined) {
      stderr += `${line}\n`;
      return;
    }
    perSecond.push(Number(tps));
    if (perSecond.length % 5 === 0 && perSecond.length < seconds) {
      progress(`  ${workload} · pgbench  ${perSecond.length}/${seconds} s  ${fmt(perSecond.reduce((a, b) => a + b, 0) / perSecond.length)} tps so far`);
    }
  });
  const code = await new Promise<number | null>((done) => child.once("close", done));
  clearTimeout(killer);
  untrack();
  // -l writes one file per thread: "client transaction latency_us script epoch_s epoch_us".
  const logs = readdirSync(workDir).filter((f) => f.startsWith(`pgbench-${workload}.`)).map((f) => join(workDir, f));
  const latencies = code === 0 ? logs.flatMap((f) => readFileSync(f, "utf8").trim().split("\n")).map((line) => Number(line.split(" ")[2]) / 1000) : [];
  for (const f of logs) rmSync(f);
  if (code !== 0) throw new Error(`pgbench ${workload} exited with ${code}:\n${stderr.trim().split("\n").slice(-10).join("\n")}`);

  const number = (pattern: RegExp) => Number(pattern.exec(stdout)?.[1] ?? Number.NaN);
  const orders = number(/number of transactions actually processed: (\d+)/);
  return {
    seconds,
    orders,
    ordersPerSecond: number(/tps = ([\d.]+)/),
    perSecond,
    latencyMs: percentiles(latencies),
    failed: number(/number of failed transactions: (\d+)/),
  };
}

/**
 * pgbench opens all its clients at once and gives up on the first refused one. On a server other
 * sessions share (test suites), wait up to 60 s for enough free connections rather than fail at once.
 */
async function connectionsFree(url: string, clients: number): Promise<void> {
  const until = Date.now() + 60_000;
  let told = 0;
  while (true) {
    const [row] = await query<{ free: number; max: number }>(
      url,
      `select current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int
                - (select count(*) from pg_stat_activity where backend_type = 'client backend' and pid <> pg_backend_pid())::int as free,
              current_setting('max_connections')::int as max`,
    );
    const free = row?.free ?? 0;
    if (free >= clients) return;
    if (Date.now() > until) throw new Error(`pgbench needs ${clients} connections; other sessions left only ${free} of max_connections ${row?.max} free for 60 s`);
    if (Date.now() - told >= 5_000) {
      told = Date.now();
      progress(`  waiting for ${clients} free connections for pgbench (${free} free: other sessions hold the rest)`);
    }
    await sleep(500);
  }
}

export interface FlushCeiling {
  /** Where pg_test_fsync wrote: a folder on the filesystem of PostgreSQL's data directory. */
  folder: string;
  walSyncMethod: string;
  /** ops/sec of each sync method, one 8 kB write each (pg_test_fsync's first section). */
  opsPerSecond: Record<string, number>;
  /** What the server's wal_sync_method achieves: commits per second one session could flush. */
  commitsPerSecond: number;
}

/**
 * A short `pg_test_fsync -s 2` on the filesystem of PostgreSQL's data directory: how many commits one
 * session could flush per second, the ceiling of a single hot row. The reason instead when it cannot
 * run here (data directory elsewhere or not writable).
 */
export async function flushCeiling(facts: ServerFacts): Promise<FlushCeiling | { skipped: string }> {
  const dataDir = facts.dataDirectory;
  let device: number;
  try {
    device = statSync(dataDir).dev;
  } catch {
    return { skipped: `PostgreSQL's data directory ${dataDir} is not on this machine` };
  }
  const writable = (folder: string) => {
    try {
      accessSync(folder, constants.W_OK);
      return statSync(folder).dev === device;
    } catch {
      return false;
    }
  };
  // Beside the data directory rather than inside it, when that is the same filesystem.
  const folder = [dirname(dataDir), dataDir].find(writable);
  if (!folder) return { skipped: `no write access to the filesystem of ${dataDir} (run as root or the postgres user)` };
  const major = facts.version.split(".")[0];
  const packaged = `/usr/lib/postgresql/${major}/bin/pg_test_fsync`; // Debian keeps it off PATH
  const bin = existsSync(packaged) ? packaged : "pg_test_fsync";
  const file = join(folder, `orderly-bench-fsync-${process.pid}.tmp`);
  const removeFile = onCleanup(`remove ${file}`, () => rmSync(file, { force: true }));
  try {
    const { stdout } = await promisify(execFile)(bin, ["-s", "2", "-f", file], { timeout: 120_000 });
    const section = stdout.split("using one 8kB write")[1]?.split("\n\n")[0] ?? "";
    const opsPerSecond = Object.fromEntries([...section.matchAll(/^\s+(\w+)\s+([\d.]+) ops\/sec/gm)].map((m) => [m[1] as string, Number(m[2])]));
    const commitsPerSecond = opsPerSecond[facts.walSyncMethod] ?? opsPerSecond.fdatasync ?? Number.NaN;
    return { folder, walSyncMethod: facts.walSyncMethod, opsPerSecond, commitsPerSecond };
  } catch (error) {
    return { skipped: `${bin} failed: ${(error as Error).message.split("\n")[0]}` };
  } finally {
    await removeFile();
  }
}
