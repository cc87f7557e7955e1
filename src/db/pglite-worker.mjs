// @ts-check
// The embedded database's thread (pglite-thread.ts starts it and is its client): PGlite runs here,
// off the thread that serves HTTP. Plain JavaScript because Node 20 runs a worker from a file and
// cannot run TypeScript; the build bundles it into dist/pglite-worker.js.
import { closeSync, existsSync, fdatasyncSync, fsyncSync, openSync, readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { createRequire } from "node:module";
import { parentPort, workerData } from "node:worker_threads";
import { PGlite } from "@electric-sql/pglite";
import { NodeFS } from "@electric-sql/pglite/nodefs";

/** @typedef {{ id: number, kind: "query", sql: string, params: unknown[], rowMode: "array" | "object" | undefined } | { id: number, kind: "listen" | "unlisten", channel: string } | { id: number, kind: "close" }} Request */

const port = /** @type {import("node:worker_threads").MessagePort} */ (parentPort);
const { dataDir, loadDataDir, textTypes } = workerData;

/**
 * PGlite's own start parameters with smaller buffers than PostgreSQL's defaults (128 MB of shared
 * buffers): one connection on one shop's data needs far less, and the embedded server's idle memory
 * went from 382 to under 300 MiB with these (bench footprint phase). And with fsync on, as a
 * commit's answer promises: PGlite's own parameters turn it off (-F); see SyncedNodeFS.
 */
const startParams = [
  ...PGlite.defaultStartParams.filter((param) => param !== "-F"),
  ...["-c", "fsync=on", "-c", "wal_sync_method=fsync", "-c", "shared_buffers=32MB", "-c", "wal_buffers=1MB"],
];

/** @param {string} path */
function syncPath(path) {
  const fd = openSync(path, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * PGlite's file system for a data directory on disk (Emscripten's NODEFS), with the sync it lacks.
 * NODEFS has no sync of its own and its fdatasync is an empty stub: PostgreSQL's writes went to the
 * operating system's cache and no further, so a crash of the machine (not only of the process)
 * could lose orders already confirmed, or leave the database corrupt. With wal_sync_method=fsync,
 * every sync PostgreSQL asks for (a commit's WAL flush, a checkpoint's files, pg_control, a
 * directory after a file is created or renamed in it) is done here, by Node; installed before
 * PostgreSQL starts, so that its start and any recovery sync too. A failed sync reaches PostgreSQL
 * as an errno (EIO when Node's error has none), and PostgreSQL stops rather than go on.
 */
class SyncedNodeFS extends NodeFS {
  /** @param {string} dataDir */
  constructor(dataDir) {
    super(dataDir);
    /** A directory PGlite is about to create (its initdb syncs nothing): synced whole once it has. */
    this.creating = !existsSync(join(dataDir, "PG_VERSION"));
  }

  /** @param {any} pg @param {any} emscriptenOptions */
  async init(pg, emscriptenOptions) {
    const { emscriptenOpts } = await super.init(pg, emscriptenOptions);
    return { emscriptenOpts: { ...emscriptenOpts, preRun: [...(emscriptenOpts.preRun ?? []), addSync] } };
  }

  /** After PGlite.create: a directory it has just created, synced whole, with the entry for it in its parent. */
  syncIfCreated() {
    if (!this.creating) return;
    for (const entry of readdirSync(this.rootDir, { recursive: true, withFileTypes: true })) syncPath(join(entry.parentPath, entry.name));
    syncPath(this.rootDir);
    syncPath(dirname(this.rootDir));
    this.creating = false;
  }
}

/** @param {any} mod the Emscripten module, before PostgreSQL runs */
function addSync(mod) {
  const { FS, NODEFS } = mod;
  // One object shared by every file and directory of the mount.
  NODEFS.stream_ops.fsync = (/** @type {{ nfd?: number, node: { mode: number } }} */ stream) => {
    try {
      if (stream.nfd === undefined) syncPath(NODEFS.realPath(stream.node));
      else if (FS.isDir(stream.node.mode)) fsyncSync(stream.nfd);
      else fdatasyncSync(stream.nfd);
      return 0;
    } catch (error) {
      throw new FS.ErrnoError(NODEFS.convertNodeCode(error) ?? 29);
    }
  };
}

/**
 * Compiled here unless an earlier thread of this process did (tests open many databases).
 * Synchronously, each function compiled at its first call: compiled asynchronously, all at once,
 * the server was ready no sooner (four starts each).
 */
const wasmModule = workerData.wasmModule ?? new WebAssembly.Module(readFileSync(createRequire(import.meta.url).resolve("@electric-sql/pglite/pglite.wasm")));

/** The error as plain fields (SQLSTATE code, constraint, detail...): an Error's own fields do not survive postMessage. */
function plain(error) {
  const fields = Object.fromEntries(Object.entries(error ?? {}).filter(([, value]) => typeof value === "string" || typeof value === "number"));
  return { ...fields, name: error?.name ?? "Error", message: error?.message ?? String(error) };
}

/** @type {Map<string, () => Promise<void>>} */
const unlisteners = new Map();

/** @param {PGlite} db @param {Request} request */
async function answer(db, request) {
  switch (request.kind) {
    case "query": {
      // The command tells a COMMIT that PostgreSQL answered with ROLLBACK.
      const { rows, fields, affectedRows, command } = await db.query(request.sql, request.params, { rowMode: request.rowMode });
      return { rows, fields, affectedRows, command };
    }
    case "listen":
      unlisteners.set(request.channel, await db.listen(request.channel, (payload) => port.postMessage({ kind: "notification", channel: request.channel, payload })));
      return undefined;
    case "unlisten":
      await unlisteners.get(request.channel)?.();
      unlisteners.delete(request.channel);
      return undefined;
    case "close":
      await db.close();
      return undefined;
  }
}

try {
  const fs = dataDir ? new SyncedNodeFS(dataDir) : undefined;
  const db = await PGlite.create({ ...(fs ? { fs } : { loadDataDir }), startParams, pgliteWasmModule: wasmModule });
  fs?.syncIfCreated();
  // textTypes (pglite-thread.ts) answered as text, set after create: PGlite sets the arrays' parsers as it opens.
  for (const type of textTypes) db.parsers[type] = (/** @type {string} */ value) => value;
  port.on("message", (/** @type {Request} */ request) => {
    answer(db, request).then(
      (result) => port.postMessage({ id: request.id, result }),
      (error) => port.postMessage({ id: request.id, error: plain(error) }),
    );
  });
  port.postMessage({ kind: "ready", wasmModule });
} catch (error) {
  port.postMessage({ kind: "failed", error: plain(error) });
}
