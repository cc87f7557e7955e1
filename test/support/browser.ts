import { existsSync, mkdirSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { type Browser, chromium, type Page } from "playwright-core";
import { build } from "vite";

/** Debian's chromium (`apt-get install chromium`; .ci/run installs it). Never a downloaded browser. */
export const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";

/** Where the console tests keep their screenshots (test artefacts, not committed). */
export const SCREENSHOTS = join(import.meta.dirname, "..", "..", "test-artifacts", "console");

/** Headless Chromium with the flags stack-notes.md names for this machine. A missing browser fails, never skips. */
export async function launchChromium(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium), as .ci/run does`);
  mkdirSync(SCREENSHOTS, { recursive: true });
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}

const ROOT = join(import.meta.dirname, "..", "..");
const newestUnder = (dir: string): number =>
  Math.max(0, ...readdirSync(dir, { withFileTypes: true }).map((e) => (e.isDirectory() ? newestUnder(join(dir, e.name)) : statSync(join(dir, e.name)).mtimeMs)));

/**
 * Builds the console bundle where the servers look for it (dist/console), as `npm run build` does,
 * unless it is newer than its sources. Once, in the global setup: the console tests and the split
 * deployment's servers read it, and two builds at once would empty it under each other.
 */
export async function ensureConsoleBuilt(): Promise<void> {
  const page = join(ROOT, "dist", "console", "index.html");
  const sources = Math.max(newestUnder(join(ROOT, "console")), newestUnder(join(ROOT, "client")));
  if (existsSync(page) && statSync(page).mtimeMs > sources) return;
  await build({ configFile: join(ROOT, "console", "vite.config.ts"), logLevel: "warn" });
}

/**
 * What went wrong in the page: uncaught errors, console errors (a Content-Security-Policy violation
 * is one) and failed requests. A test ends by expecting this list to be empty.
 */
export function pageProblems(page: Page): string[] {
  const problems: string[] = [];
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("console", (message) => {
    // A refusal the page shows (401, 403, 409) is logged by Chromium as a failed load: it is not a problem; a 5xx is.
    if (message.type() === "error" && !/the server responded with a status of 4\d\d/.test(message.text())) problems.push(`console: ${message.text()}`);
  });
  // A load cut short by the page moving on (a reload, another view) is aborted, not failed.
  page.on("requestfailed", (request) => {
    if (request.failure()?.errorText !== "net::ERR_ABORTED") problems.push(`request failed: ${request.url()} ${request.failure()?.errorText}`);
  });
  return problems;
}
