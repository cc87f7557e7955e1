import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, describe, expect, it } from "vitest";

// A commit's answer promises the order survives a crash of the machine, not only of the process.
// PGlite starts PostgreSQL with fsync off, and its file system syncs nothing even with it on;
// src/db/pglite-worker.mjs has Node do PostgreSQL's syncs. Counted here as the kernel sees them:
// the sync calls of a process that commits rows on the embedded database, by strace (.ci/run
// installs it; missing, this fails).
const ROOT = resolve(import.meta.dirname, "..");
const dir = mkdtempSync(join(tmpdir(), "orderly-durability-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** The syncs (fsync and fdatasync) of a process committing `count` rows, one transaction each. */
function syncsWhileCommitting(from: number, count: number): number {
  const report = join(dir, `strace-${from}.txt`);
  execFileSync("strace", ["-f", "-c", "-e", "trace=fsync,fdatasync", "-o", report, process.execPath, "bin/tsx-run.mjs", "test/support/commit-rows.ts", join(dir, "data"), String(from), String(count)], {
    cwd: ROOT,
    stdio: ["ignore", "ignore", "inherit"],
  });
  // strace -c: a row per system call, "% time  seconds  usecs/call  calls  [errors]  syscall".
  return readFileSync(report, "utf8")
    .split("\n")
    .filter((line) => /\s(fsync|fdatasync)$/.test(line))
    .reduce((sum, line) => sum + Number(line.trim().split(/\s+/)[3]), 0);
}

describe("the embedded database on disk", () => {
  it("syncs the data directory it creates, and every commit after", () => {
    // The first start: PGlite's initdb writes the cluster, which is synced whole (hundreds of files).
    expect(syncsWhileCommitting(0, 10)).toBeGreaterThan(500);
    // An existing directory: at least one sync per commit (the WAL's), more at the checkpoint of the close.
    const syncs = syncsWhileCommitting(10, 100);
    expect(syncs).toBeGreaterThanOrEqual(100);
    expect(syncs).toBeLessThan(500);
  }, 120_000);
});
