import { join } from "node:path";

/**
 * How tests run the CLI: the sources through tsx, so a test always runs the code it sits beside
 * (the package's bin runs dist/, which is only as fresh as the last build; test/build.test.ts
 * checks that one).
 */
export const CLI = ["--import", "tsx", join(import.meta.dirname, "..", "..", "src", "cli.ts")];
