// What keeps a bench run honest with the machine it shares: progress a person can follow, and
// everything it started (servers, databases, folders, broker queues) undone on every exit path:
// finished, failed, interrupted, or past its time limit.

const started = Date.now();
const undo: { what: string; run: () => Promise<void> | void }[] = [];
/** Process groups of the servers still running: killed synchronously if the bench exits any other way. */
const groups = new Set<number>();

/** One progress line, stamped with the time since the bench started. */
export function progress(line: string): void {
  const s = Math.floor((Date.now() - started) / 1000);
  console.log(`[${String(Math.floor(s / 60)).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}] ${line}`);
}

/** Registers an undo step; calling the returned function runs it now (once) instead of at the end. */
export function onCleanup(what: string, run: () => Promise<void> | void): () => Promise<void> {
  const entry = { what, run };
  undo.push(entry);
  return async () => {
    const i = undo.indexOf(entry);
    if (i < 0) return;
    undo.splice(i, 1);
    await run();
  };
}

export function trackGroup(pid: number): () => void {
  groups.add(pid);
  return () => groups.delete(pid);
}

/** Runs every registered undo step, newest first; a failing step is reported and the others still run. */
export async function cleanUp(): Promise<void> {
  while (undo.length > 0) {
    const { what, run } = undo.pop()!;
    try {
      await run();
    } catch (error) {
      console.error(`cleanup: ${what} failed: ${(error as Error).message}`);
    }
  }
}

let stopping: { why: string; code: number } | undefined;

/** Why the run was told to stop (Ctrl-C, SIGTERM, time limit), if it was. */
export const stopRequested = () => stopping;

/** Throws once the run was told to stop: nothing new is started then. */
export function ensureRunning(): void {
  if (stopping) throw new Error(`${stopping.why}: not starting anything new`);
}

/**
 * Ctrl-C, SIGTERM and the time limit kill the servers at once, so the phase under way fails fast and
 * the run goes on to its own cleanup (and a partial report); if it does not get there within 60 s,
 * the cleanup runs here. A second Ctrl-C leaves at once. Any exit still kills the servers.
 */
export function guardExits(limitMs: number): void {
  const stop = (why: string, code: number) => {
    if (stopping) process.exit(stopping.code);
    stopping = { why, code };
    progress(`${why}: killing the servers, then cleaning up`);
    for (const pid of groups) signalGroup(pid, "SIGKILL");
    setTimeout(() => void cleanUp().finally(() => process.exit(code)), 60_000).unref();
  };
  process.on("SIGINT", () => stop("interrupted", 130));
  process.on("SIGTERM", () => stop("terminated", 143));
  setTimeout(() => stop(`time limit of ${Math.round(limitMs / 60_000)} min reached`, 124), limitMs).unref();
  process.on("exit", () => {
    for (const pid of groups) signalGroup(pid, "SIGKILL");
  });
}

export function signalGroup(group: number, name: NodeJS.Signals): void {
  try {
    process.kill(-group, name);
  } catch {
    /* the group is gone */
  }
}
