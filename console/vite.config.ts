import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

// The operations console (api-contract.md §6): Preact, bundled by Vite into dist/console, which
// the all-in-one and the orders service serve at /console/ (src/http/routes/console.ts).
export default defineConfig({
  root: fileURLToPath(new URL(".", import.meta.url)),
  base: "/console/",
  logLevel: "warn",
  oxc: { jsx: { runtime: "automatic", importSource: "preact" } },
  build: {
    outDir: fileURLToPath(new URL("../dist/console", import.meta.url)),
    emptyOutDir: true,
    // Served under a Content-Security-Policy without 'unsafe-inline': nothing may be inlined.
    modulePreload: { polyfill: false },
    assetsInlineLimit: 0,
    sourcemap: true,
  },
});
