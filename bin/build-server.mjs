#!/usr/bin/env node
// `npm run build`'s first half: the server, src/cli.ts and what it imports, bundled by esbuild into
// dist/cli.js and dist/chunks/ (the console is the second half, by Vite). A bundle starts faster
// than one file per module: Node reads, resolves and compiles a few large files instead of about a
// thousand small ones, which was about a quarter of an embedded server's time to ready. Each dynamic
// import stays a chunk of its own, so a command loads only what it uses. No type checking here:
// `npm run typecheck` does it.
import { rmSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const root = new URL("..", import.meta.url);

/**
 * Left to Node to load from node_modules, each for a reason: PGlite reads files beside its own
 * modules; OpenTelemetry's instrumentations patch pg and http as they load, which they cannot do to
 * code inside the bundle; pino starts its transports from its own files; ioredis, pg and the
 * RabbitMQ client load only for the processes that use them. (The Swagger UI is bundled and told
 * where its files are: src/app.ts.)
 */
const EXTERNAL = ["@electric-sql/pglite", "@opentelemetry/*", "pino", "pg", "pg-native", "ioredis", "rabbitmq-client"];

rmSync(new URL("dist", root), { recursive: true, force: true });
await build({
  absWorkingDir: fileURLToPath(root),
  // The embedded database's thread is started from a file of its own (workerFile in src/db/pglite-thread.ts).
  entryPoints: { cli: "src/cli.ts", "pglite-worker": "src/db/pglite-worker.mjs" },
  outdir: "dist",
  chunkNames: "chunks/[name]-[hash]",
  bundle: true,
  splitting: true,
  format: "esm",
  platform: "node",
  target: "node20.19",
  sourcemap: true,
  external: EXTERNAL,
  // The CommonJS packages in the bundle (fastify and its plugins) require Node's own modules.
  banner: { js: 'import { createRequire as __orderlyCreateRequire } from "node:module"; const require = __orderlyCreateRequire(import.meta.url);' },
  logLevel: "warning",
});
