#!/usr/bin/env node
// The package's `bin`: the compiled CLI, with no TypeScript toolchain at run time. `npm ci` builds
// dist/ (the `prepare` script); after changing src/, `npm run build` (npm start does it itself).
import { existsSync } from "node:fs";

const cli = new URL("../dist/cli.js", import.meta.url);
if (!existsSync(cli)) {
  process.stderr.write("orderly: dist/ is missing: run npm run build (npm ci does it)\n");
  process.exit(1);
}
await import(cli.href);
