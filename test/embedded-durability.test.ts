import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, describe, expect, it } from "vitest";

// A commit's answer promises the order survives a crash of the machine, not only of the process.
// PGlite starts PostgreSQL with fsync off, and its file system syncs nothing even with it on;
// src/db/pglite-worker.mjs has Node do PostgreSQL's syncs. Seen here as the kernel sees them: the
// syncs of a process that commits rows on the embedded database, traced by strace with the file
// each one was for (.ci/run installs strace; missing, this fails).
const ROOT = resolve(import.meta.dirname, "..");
const dir = mkdtempSync(join(tmpdir(), "orderly-durability-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** The files synced (fsync or fdatasync), in order, by a process committing `count` rows, one transaction each. */
function syncedWhileCommitting(from: number, count: number): string[] {
  const trace = join(dir, `strace-${from}.txt`);
  execFileSync(
    "strace",
    ["-f", "--seccomp-bpf", "-y", "-e", "trace=fsync,fdatasync", "-o", trace, process.execPath, "bin/tsx-run.mjs", "test/support/commit-rows.ts", join(dir, "data"), String(from), String(count)],
    { cwd: ROOT, stdio: ["ignore", "ignore", "inherit"], timeout: 90_000 },
  );
  // A line per call: "[pid N] fdatasync(23</…/pgdata/pg_wal/000000010000000000000001>) = 0".
  return [...readFileSync(trace, "utf8").matchAll(/\b(?:fsync|fdatasync)\(\d+<([^>]*)>\) = 0/g)].map((m) => m[1] as string);
}

describe("the embedded database on disk", () => {
  it("syncs the data directory it creates, pg_control as it starts, and every commit's WAL", () => {
    // The first start: PGlite's initdb writes the cluster, which is synced whole (hundreds of files).
    expect(syncedWhileCommitting(0, 10).length).toBeGreaterThan(500);
    // An existing directory: PostgreSQL's own start syncs pg_control before any commit, then every commit syncs the WAL.
    const synced = syncedWhileCommitting(10, 100);
    const wal = synced.filter((file) => file.includes("/pgdata/pg_wal/"));
    expect(wal.length).toBeGreaterThanOrEqual(100);
    const control = synced.findIndex((file) => file.endsWith("/pgdata/global/pg_control"));
    expect(control).toBeGreaterThanOrEqual(0);
    expect(control).toBeLessThan(synced.indexOf(wal[0] as string));
  }, 120_000);
});
