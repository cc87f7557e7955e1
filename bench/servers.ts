// Orderly servers as real processes (`node dist/cli.js serve`, built by buildServer()), each in its own process group
// so that stopping one stops everything it started, on every exit path.
import { execFileSync, spawn } from "node:child_process";
import { closeSync, openSync, readdirSync, readFileSync } from "node:fs";
import { createServer } from "node:net";
import { join, resolve } from "node:path";
import { sleep } from "./figures.ts";
import { ensureRunning, onCleanup, signalGroup, trackGroup } from "./lifecycle.ts";

const ROOT = resolve(import.meta.dirname, "..");
/** The servers run as in production: the compiled CLI, no TypeScript toolchain (buildServer() first). */
const BIN = resolve(ROOT, "dist", "cli.js");

/** `npm run build`: the benchmarks measure dist/, so it must be the code of this checkout. */
export function buildServer(): void {
  execFileSync("npm", ["run", "--silent", "build"], { cwd: ROOT, stdio: "inherit" });
}
export const JWT_SECRET = "bench-secret-bench-secret-bench-secret-0123";

export interface Server {
  url: string;
  /** The server's process (the leader of its process group). */
  pid: number;
  /** Wall time from spawn to the first 200 from /readyz. */
  readyMs: number;
  /** VmRSS of the server's process, and of it with every process under it (a child-process database, tsx's esbuild service). */
  memory(): { processBytes: number; treeBytes: number };
  /** SIGTERM to the process group (graceful: in-flight work drains), SIGKILL after 15 s. */
  stop(): Promise<void>;
}

/** A server's CPU time so far (user + system), from its /metrics: on a shared machine its own cost per order moves much less than its rate. */
export async function cpuSeconds(url: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const line = /^process_cpu_seconds_total (\S+)$/m.exec(text);
  if (!line) throw new Error(`${url}/metrics has no process_cpu_seconds_total`);
  return Number(line[1]);
}

/** A port on loopback nothing listens on now. */
export function freePort(): Promise<number> {
  return new Promise((found) => {
    const probe = createServer().listen(0, "127.0.0.1", () => {
      const address = probe.address();
      probe.close(() => found(typeof address === "object" && address ? address.port : 0));
    });
  });
}

/** ORDERLY_* settings in the bench's own environment (ORDERLY_DB_POOL_MAX, …) reach every server: how to tune a run. */
export const passedSettings = () => Object.entries(process.env).filter(([name]) => name.startsWith("ORDERLY_")) as [string, string][];

/**
 * Starts `orderly serve` with the given environment (plus PATH, HOME, TMPDIR, passedSettings(), a free
 * port on loopback, the bench's secrets and no rate limit), logging to `<logDir>/<name>.log`, and waits
 * for /readyz. Registered for cleanup at once, so a server that never gets ready is killed too.
 */
export async function startServer(options: {
  name: string;
  args?: string[];
  /** Options for Node itself, e.g. `--cpu-prof` (which NODE_OPTIONS does not take). */
  nodeArgs?: string[];
  env: Record<string, string | undefined>;
  logDir: string;
  readyWithinMs?: number;
}): Promise<Server> {
  const { name, logDir } = options;
  ensureRunning();
  const port = await freePort();
  const logFile = join(logDir, `${name}.log`);
  const log = openSync(logFile, "a");
  const spawnedAt = performance.now();
  // BENCH_CPU_PROF=1: each server writes a V8 CPU profile into a folder beside its log when it stops.
  const profiling = process.env.BENCH_CPU_PROF ? ["--cpu-prof", `--cpu-prof-dir=${join(logDir, `profile-${name}`)}`] : [];
  const child = spawn(process.execPath, [...profiling, ...(options.nodeArgs ?? []), BIN, "serve", ...(options.args ?? [])], {
    detached: true,
    stdio: ["ignore", log, log],
    env: {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      TMPDIR: process.env.TMPDIR,
      ...Object.fromEntries(passedSettings()),
      HOST: "127.0.0.1",
      PORT: String(port),
      ORDERLY_JWT_SECRET: JWT_SECRET,
      ORDERLY_WEBHOOK_SECRET: JWT_SECRET,
      ORDERLY_RATE_LIMIT_RPS: "1000000",
      ORDERLY_RATE_LIMIT_BURST: "1000000",
      LOG_LEVEL: "warn",
      ...options.env,
    },
  });
  closeSync(log);
  const pid = child.pid as number;
  const untrack = trackGroup(pid);
  const exited = new Promise<void>((done) => child.once("exit", () => done()));
  let alive = true;
  void exited.then(() => {
    alive = false;
    untrack();
  });
  const stop = onCleanup(`stop ${name}`, async () => {
    if (!alive) return;
    signalGroup(pid, "SIGTERM");
    const killer = setTimeout(() => signalGroup(pid, "SIGKILL"), 15_000);
    await exited;
    clearTimeout(killer);
    signalGroup(pid, "SIGKILL"); // anything the server itself started and left behind
  });

  const url = `http://127.0.0.1:${port}`;
  const until = Date.now() + (options.readyWithinMs ?? 60_000);
  while (true) {
    const ready = await fetch(`${url}/readyz`).then((r) => r.ok, () => false);
    if (ready) break;
    if (!alive || Date.now() > until) {
      await stop();
      const tail = readFileSync(logFile, "utf8").trim().split("\n").slice(-15).join("\n");
      throw new Error(`${name} ${alive ? "was not ready in time" : "exited before it was ready"}; last lines of ${logFile}:\n${tail}`);
    }
    await sleep(20);
  }
  return { url, pid, readyMs: performance.now() - spawnedAt, memory: () => ({ processBytes: rss(pid), treeBytes: treeRss(pid) }), stop };
}

/** A process and all its descendants, from /proc. */
export function processTree(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      // The command name in parentheses may hold spaces: the parent pid is the 2nd field after it.
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      children.set(ppid, [...(children.get(ppid) ?? []), Number(entry)]);
    } catch {
      /* exited meanwhile */
    }
  }
  const tree: number[] = [];
  const pending = [root];
  while (pending.length > 0) {
    const pid = pending.pop() as number;
    tree.push(pid);
    pending.push(...(children.get(pid) ?? []));
  }
  return tree;
}

/** VmRSS of a process and all its descendants. */
const treeRss = (root: number) => processTree(root).reduce((bytes, pid) => bytes + rss(pid), 0);

/** A field in kB of a /proc file (`VmRSS` of `status`, `Pss` of `smaps_rollup`), in bytes; 0 once the process has exited. */
export function procBytes(pid: number, file: string, field: string): number {
  try {
    return Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(readFileSync(`/proc/${pid}/${file}`, "utf8"))?.[1] ?? 0) * 1024;
  } catch {
    return 0; // exited meanwhile
  }
}

const rss = (pid: number) => procBytes(pid, "status", "VmRSS");
