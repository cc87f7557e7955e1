import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { Worker } from "node:worker_threads";
import type { PGlite } from "@electric-sql/pglite";
import { parseArgs } from "node:util";
import { ConfigError, databaseFor, loadConfig, parseServices, SERVICE_NAMES } from "../config.ts";
import { PACKAGE_ROOT } from "../kit/package-root.ts";

// The embedded database's thread, and what starts it. Nothing of PGlite nor drizzle is loaded here,
// so that `serve` can start the thread before it loads the server's modules (bootAhead).

/**
 * Holds a lock file on an embedded data directory: two processes on one PGlite directory
 * silently lose writes (stack-notes.md), so the second one is refused.
 */
function lockDataDir(dir: string): () => void {
  const lockFile = join(dir, "orderly.lock");
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(lockFile, "wx");
      writeSync(fd, String(process.pid));
      closeSync(fd);
      return () => rmSync(lockFile, { force: true });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
      const holder = Number(readFileSync(lockFile, "utf8"));
      if (holder && holder !== process.pid && isAlive(holder)) {
        throw new ConfigError("ORDERLY_DATA_DIR", `${dir} is in use by process ${holder}; stop it or choose another ORDERLY_DATA_DIR`);
      }
      rmSync(lockFile, { force: true }); // left by a process that died
    }
  }
  throw new ConfigError("ORDERLY_DATA_DIR", `could not lock ${dir}`);
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

type QueryOptions = NonNullable<Parameters<PGlite["query"]>[2]>;
type Results = Awaited<ReturnType<PGlite["query"]>>;
type Rows<T> = Omit<Results, "rows"> & { rows: T[] };
type Waiting = { resolve: (result: unknown) => void; reject: (error: Error) => void };

let compiled: WebAssembly.Module | undefined;

/**
 * PGlite on a thread of its own (pglite-worker.mjs), answering what drizzle asks of a PGlite client:
 * `query`, and `transaction` whose queries no other caller's come between (PGlite has one
 * connection). The database boots and runs its statements on another core than the one serving
 * HTTP: a server's modules load while it starts, and a request is parsed while another's statement runs.
 */
export class PgliteThread {
  readonly #worker: Worker;
  readonly #waiting = new Map<number, Waiting>();
  readonly #listeners = new Map<string, Set<(payload: string) => void>>();
  #nextId = 1;
  /** The end of the last query or transaction asked for: each waits for the one before it. */
  #turn: Promise<unknown>;
  #stopped: Error | undefined;
  #closing: Promise<void> | undefined;
  closed = false;
  /** Resolves once the database is open; rejects with why it could not open. */
  readonly ready: Promise<void>;

  constructor(source: { dataDir: string } | { loadDataDir: Blob | undefined }) {
    this.#worker = new Worker(workerFile(), {
      workerData: { ...source, wasmModule: compiled, textTypes: TEXT_TYPES },
      // Its own memory limits are Node's defaults; its name shows in profiles and heap snapshots.
      name: "orderly-pglite",
    });
    this.ready = new Promise<void>((resolve, reject) => this.#waiting.set(0, { resolve: () => resolve(), reject }));
    this.#turn = this.ready;
    this.ready.catch(() => {}); // the failure is every statement's answer; nothing need wait for it

    this.#worker.on("message", (message: WorkerMessage) => this.#received(message));
    this.#worker.on("error", (error) => this.#stop(Object.assign(unavailable(`the embedded database's thread failed: ${error.message}`), { cause: error })));
    this.#worker.on("exit", (code) => this.#stop(unavailable(`the embedded database's thread stopped (exit code ${code})`)));
  }

  query<T>(sql: string, params: unknown[] = [], options: QueryOptions = {}): Promise<Rows<T>> {
    return this.#inTurn(() => this.#query(sql, params, options)) as Promise<Rows<T>>;
  }

  /**
   * As PGlite's own: BEGIN, the work with `tx`, COMMIT, or ROLLBACK if the work threw. A COMMIT that
   * PostgreSQL answered with ROLLBACK (the work went on after a statement failed) throws 25P02, and
   * `tx` is refused once the transaction ended: a late statement would run outside it.
   */
  transaction<T>(work: (tx: Pick<PgliteThread, "query">) => Promise<T>): Promise<T> {
    return this.#inTurn(async () => {
      await this.#query("begin");
      let ended = false;
      const tx = {
        query: <R>(sql: string, params: unknown[] = [], options: QueryOptions = {}) => {
          if (ended) return Promise.reject(new Error("the transaction has ended: a statement cannot run in it any more"));
          return this.#query(sql, params, options) as Promise<Rows<R>>;
        },
      };
      try {
        const result = await work(tx);
        ended = true;
        const committed = (await this.#query("commit")) as Results;
        if (committed.command === "ROLLBACK") throw Object.assign(new Error("the transaction was rolled back: a statement in it had failed"), { code: "25P02" });
        return result;
      } catch (error) {
        if (!ended) {
          ended = true;
          await this.#query("rollback").catch((rollbackFailed: unknown) => {
            // The connection's state is unknown now: nothing more runs on it.
            this.#stop(unavailable(`the embedded database could not roll back (${String(rollbackFailed)})`));
            void this.#worker.terminate();
          });
        }
        throw error;
      }
    });
  }

  async listen(channel: string, onNotify: (payload: string) => void): Promise<() => Promise<void>> {
    const listeners = this.#listeners.get(channel) ?? new Set();
    this.#listeners.set(channel, listeners);
    listeners.add(onNotify);
    const forget = () => {
      listeners.delete(onNotify);
      if (listeners.size > 0 || this.#listeners.get(channel) !== listeners) return false;
      this.#listeners.delete(channel);
      return true;
    };
    if (listeners.size === 1) {
      await this.#inTurn(() => this.#ask({ kind: "listen", channel })).catch((error: unknown) => {
        forget();
        throw error;
      });
    }
    return async () => {
      if (forget() && !this.closed) await this.#inTurn(() => this.#ask({ kind: "unlisten", channel }));
    };
  }

  /** Closes the database and ends its thread; every call waits for the same closing. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.closed = true;
      try {
        // One that never opened, or whose thread stopped, has nothing left to close.
        await this.#inTurn(() => this.#ask({ kind: "close" })).catch((error: unknown) => {
          if (!this.#stopped) throw error;
        });
      } finally {
        await this.#worker.terminate();
      }
    })();
    return this.#closing;
  }

  #query(sql: string, params: unknown[] = [], options: QueryOptions = {}): Promise<unknown> {
    checkOptions(options);
    return this.#ask({ kind: "query", sql, params, rowMode: options.rowMode });
  }

  #inTurn<T>(work: () => Promise<T>): Promise<T> {
    const result = this.#turn.then(work);
    this.#turn = result.catch(() => {});
    return result;
  }

  #ask(request: Record<string, unknown>): Promise<unknown> {
    if (this.#stopped) return Promise.reject(this.#stopped);
    const id = this.#nextId++;
    // The thread keeps the process alive while it boots or owes an answer, not while it idles (nor did PGlite).
    if (this.#waiting.size === 0) this.#worker.ref();
    return new Promise((resolve, reject) => {
      this.#waiting.set(id, { resolve, reject });
      try {
        this.#worker.postMessage({ ...request, id });
      } catch (error) {
        this.#answered(id); // e.g. a parameter that cannot be cloned
        reject(error);
      }
    });
  }

  #received(message: WorkerMessage): void {
    if (message.kind === "notification") {
      for (const onNotify of this.#listeners.get(message.channel) ?? []) onNotify(message.payload);
      return;
    }
    const waiting = this.#answered(message.kind === "ready" || message.kind === "failed" ? 0 : message.id);
    if (message.kind === "ready") compiled ??= message.wasmModule;
    if (message.kind === "failed") this.#stopped ??= Object.assign(new Error(message.error.message), message.error);
    if (message.kind === "failed" || "error" in message) waiting?.reject(Object.assign(new Error(message.error.message), message.error));
    else waiting?.resolve("result" in message ? message.result : undefined);
  }

  /** The caller waiting for answer `id`, no longer waiting. */
  #answered(id: number): Waiting | undefined {
    const waiting = this.#waiting.get(id);
    this.#waiting.delete(id);
    if (this.#waiting.size === 0) this.#worker.unref();
    return waiting;
  }

  #stop(error: Error): void {
    this.#stopped ??= error;
    this.closed = true;
    for (const waiting of this.#waiting.values()) waiting.reject(this.#stopped);
    this.#waiting.clear();
  }
}

/**
 * The thread is gone: as a lost connection to PostgreSQL (SQLSTATE 08006), the database unavailable,
 * so requests answer 503 and work is retried rather than dead-lettered (db/errors.ts).
 */
const unavailable = (message: string) => Object.assign(new Error(message), { code: "08006" });

type WorkerMessage =
  | { kind: "ready"; wasmModule: WebAssembly.Module }
  | { kind: "failed"; error: { message: string } }
  | { kind: "notification"; channel: string; payload: string }
  | { kind?: undefined; id: number; result: unknown }
  | { kind?: undefined; id: number; error: { message: string } };

/**
 * The types whose values the thread's database answers as PostgreSQL's text, whatever a statement
 * asks: timestamp, timestamptz, interval, date and the arrays of those and of numeric, as drizzle
 * asks on every statement (parsers that return their input). PGlite merges a statement's parsers
 * with its own 318 on every statement: 0.3-0.4 ms of a 0.5 ms query (a loop of 3,000 lookups), so
 * these are the database's own parsers instead (pglite-worker.mjs), set once.
 */
const TEXT_TYPES = [1114, 1184, 1186, 1082, 1231, 1115, 1185, 1187, 1182];

/** A statement's options: a row mode, and parsers only to keep TEXT_TYPES as text (functions cannot cross to the thread). */
function checkOptions(options: QueryOptions): void {
  const { rowMode: _rowMode, parsers = {}, ...rest } = options;
  if (Object.keys(rest).length > 0) throw new Error(`the embedded database's thread takes no query options but rowMode and parsers (given ${Object.keys(rest).join(", ")})`);
  for (const [type, parse] of Object.entries(parsers)) {
    if (!TEXT_TYPES.includes(Number(type)) || parse("text", Number(type)) !== "text") {
      throw new Error(`the embedded database's thread keeps the values of types ${TEXT_TYPES.join(", ")} as text and parses the others itself: no other parser for type ${type}`);
    }
  }
}

/** pglite-worker.mjs beside this file when running the sources; dist/pglite-worker.js in the build. */
function workerFile(): URL {
  const beside = new URL("./pglite-worker.mjs", import.meta.url);
  return existsSync(beside) ? beside : new URL("pglite-worker.js", pathToFileURL(join(PACKAGE_ROOT, "dist/")));
}

/** An embedded database being opened: its thread, and the release of its data directory's lock. */
export interface OpeningPglite {
  client: PgliteThread;
  unlock: () => void;
}

/** Locks the data directory (when there is one) and starts the database's thread; `ready` tells when it is open. */
export function startPglite(dataDir: string | undefined, loadDataDir?: Blob): OpeningPglite {
  if (!dataDir) return { client: new PgliteThread({ loadDataDir }), unlock: () => {} };
  mkdirSync(dataDir, { recursive: true });
  const unlock = lockDataDir(dataDir);
  try {
    return { client: new PgliteThread({ dataDir: join(dataDir, "pgdata") }), unlock };
  } catch (error) {
    unlock();
    throw error;
  }
}

let ahead: { dataDir: string; opening: OpeningPglite | Error } | undefined;

/**
 * Starts opening the embedded database in `dataDir` now, for the next openPglite of that directory
 * to take: `serve` calls it before loading the commands and the server, so the database boots on
 * its thread meanwhile (README, "Between L and M": the server's time to ready). An error (the
 * directory in use) is thrown when it is taken.
 */
export function bootAhead(dataDir: string): void {
  try {
    const opening = startPglite(dataDir);
    ahead = { dataDir, opening };
    // A command that fails before it takes the database (a setting it refuses) exits with the lock released.
    process.once("exit", () => {
      if (ahead?.opening === opening) opening.unlock();
    });
  } catch (error) {
    ahead = { dataDir, opening: error as Error };
  }
}

/**
 * For `orderly serve ARGS`: boots ahead the database the command is to open, when that is the
 * embedded one (the all-in-one, no database URL, not production). Whatever is wrong with the
 * arguments or the environment is left to the command to report, and nothing is booted then.
 */
export function bootAheadToServe(args: string[], env: NodeJS.ProcessEnv): void {
  try {
    const { values } = parseArgs({ args, options: { services: { type: "string", default: "all" }, help: { type: "boolean", short: "h" } }, strict: false });
    if (values.help) return;
    const config = loadConfig(env);
    const services = parseServices(String(values.services));
    if (!config.production && services.length === SERVICE_NAMES.length && !databaseFor(config, services).url) bootAhead(config.dataDir);
  } catch {
    // the command reports it
  }
}

/** The opening bootAhead started for `dataDir`, once; undefined if there is none. */
export function takeAhead(dataDir: string | undefined): OpeningPglite | undefined {
  if (!ahead || ahead.dataDir !== dataDir) return undefined;
  const { opening } = ahead;
  ahead = undefined;
  if (opening instanceof Error) throw opening;
  return opening;
}
