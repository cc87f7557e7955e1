// @ts-check
// The embedded database's thread (pglite-thread.ts starts it and is its client): PGlite runs here,
// off the thread that serves HTTP. Plain JavaScript because Node 20 runs a worker from a file and
// cannot run TypeScript; the build bundles it into dist/pglite-worker.js.
import { closeSync, existsSync, fdatasyncSync, fsyncSync, openSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { createRequire } from "node:module";
import { parentPort, workerData } from "node:worker_threads";
import { PGlite } from "@electric-sql/pglite";

/** @typedef {{ id: number, kind: "query", sql: string, params: unknown[], rowMode: "array" | "object" | undefined } | { id: number, kind: "listen" | "unlisten", channel: string } | { id: number, kind: "close" }} Request */

const port = /** @type {import("node:worker_threads").MessagePort} */ (parentPort);
const { dataDir, loadDataDir, textTypes } = workerData;

/**
 * PGlite's own start parameters with smaller buffers than PostgreSQL's defaults (128 MB of shared
 * buffers): one connection on one shop's data needs far less, and the embedded server's idle memory
 * went from 382 to under 300 MiB with these (bench footprint phase). And with fsync on, as a
 * commit's answer promises: PGlite's own parameters turn it off (-F); see flushToDisk.
 */
const startParams = [
  ...PGlite.defaultStartParams.filter((param) => param !== "-F"),
  ...["-c", "shared_buffers=32MB", "-c", "wal_buffers=1MB", "-c", "wal_sync_method=fsync"],
];

/**
 * Makes PostgreSQL's syncs reach the disk. The file system PGlite mounts a data directory with
 * (Emscripten's NODEFS) has no sync of its own, and its fdatasync is an empty stub: PostgreSQL's
 * writes went to the operating system's cache and no further, so a crash of the machine (not only
 * of the process) could lose orders already confirmed, or leave the database corrupt. With
 * wal_sync_method=fsync, each commit's WAL flush and each checkpoint's file syncs come here, and
 * are done by Node. A data directory just created (by PGlite's initdb, which syncs nothing) is
 * synced whole once. In memory there is nothing to sync.
 * @param {PGlite} db @param {boolean} created
 */
function flushToDisk(db, created) {
  const node = db.Module.FS.lookupPath(`${PGlite.paths.PGDATA}/PG_VERSION`).node;
  const nodefs = node.mount.type;
  if (typeof nodefs.realPath !== "function") return;
  const syncPath = (/** @type {string} */ path) => {
    const fd = openSync(path, "r");
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  };
  // Shared by every file and directory of the mount; tryFSOperation turns Node's errors into the errno PostgreSQL sees.
  node.stream_ops.fsync = (/** @type {{ nfd?: number, node: unknown }} */ stream) =>
    nodefs.tryFSOperation(() => {
      if (stream.nfd === undefined) syncPath(nodefs.realPath(stream.node)); // a directory (after a file is created or renamed in it)
      else fdatasyncSync(stream.nfd);
      return 0;
    });
  if (created) {
    const root = nodefs.realPath(db.Module.FS.lookupPath(PGlite.paths.PGDATA).node);
    for (const entry of readdirSync(root, { recursive: true, withFileTypes: true })) syncPath(join(entry.parentPath, entry.name));
    syncPath(root);
  }
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
  const created = Boolean(dataDir) && !existsSync(join(dataDir, "PG_VERSION"));
  const db = await PGlite.create({ ...(dataDir ? { dataDir } : { loadDataDir }), startParams, pgliteWasmModule: wasmModule });
  flushToDisk(db, created);
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
