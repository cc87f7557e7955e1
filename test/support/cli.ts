import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";

/**
 * How tests run the CLI: the sources through tsx, so a test always runs the code it sits beside
 * (the package's bin runs dist/, which is only as fresh as the last build; test/build.test.ts
 * checks that one).
 */
export const CLI = ["--import", "tsx", join(import.meta.dirname, "..", "..", "src", "cli.ts")];

/** The environment a CLI child gets: PATH and HOME from the test's, nothing else inherited. */
export function baseEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  return { PATH: process.env.PATH, HOME: process.env.HOME, LOG_LEVEL: "info", ...extra };
}

/**
 * Starts `orderly serve` and resolves once it logged that it is ready, with its URL. `started` hears
 * of the child at once, so a caller can kill it even if it never becomes ready.
 */
export function serve(args: string[], env: Record<string, string>, started: (child: ChildProcess) => void = () => {}): Promise<{ child: ChildProcess; url: string; output: () => string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...CLI, "serve", ...args], { env: baseEnv({ PORT: "0", ...env }) });
    started(child);
    let output = "";
    const timer = setTimeout(() => reject(new Error(`serve did not become ready: ${output}`)), 30_000);
    const onData = (d: Buffer) => {
      output += d;
      const ready = /"url":"([^"]+)"[^\n]*"msg":"orderly is ready"/.exec(output);
      if (ready) {
        clearTimeout(timer);
        resolve({ child, url: ready[1] as string, output: () => output });
      }
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.on("exit", (code) => reject(new Error(`serve exited with ${code}: ${output}`)));
  });
}
