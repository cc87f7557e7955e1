// @ts-check
// The embedded database's thread (pglite-thread.ts starts it and is its client): PGlite runs here,
// off the thread that serves HTTP. Plain JavaScript because Node 20 runs a worker from a file and
// cannot run TypeScript; the build bundles it into dist/pglite-worker.js.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { parentPort, workerData } from "node:worker_threads";
import { PGlite } from "@electric-sql/pglite";

/** @typedef {{ id: number, kind: "query", sql: string, params: unknown[], rowMode: "array" | "object" | undefined } | { id: number, kind: "listen" | "unlisten", channel: string } | { id: number, kind: "close" }} Request */

const port = /** @type {import("node:worker_threads").MessagePort} */ (parentPort);
const { dataDir, loadDataDir, textTypes } = workerData;

/**
 * PGlite's own start parameters with smaller buffers than PostgreSQL's defaults (128 MB of shared
 * buffers): one connection on one shop's data needs far less, and the embedded server's idle memory
 * went from 382 to under 300 MiB with these (bench footprint phase).
 */
const startParams = [...PGlite.defaultStartParams, "-c", "shared_buffers=32MB", "-c", "wal_buffers=1MB"];

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
  const db = await PGlite.create({ ...(dataDir ? { dataDir } : { loadDataDir }), startParams, pgliteWasmModule: wasmModule });
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
