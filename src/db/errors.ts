/** The SQLSTATE of a database error, unwrapping drizzle's wrapper. */
export function sqlState(error: unknown): string | undefined {
  for (let e: unknown = error; e && typeof e === "object"; e = (e as { cause?: unknown }).cause) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string" && /^[0-9A-Z]{5}$/.test(code)) return code;
  }
  return undefined;
}

// Socket errors a driver reports when the server is gone or refuses connections.
const NETWORK_CODES = new Set(["ECONNREFUSED", "ECONNRESET", "EPIPE", "ETIMEDOUT", "EHOSTUNREACH", "ENETUNREACH", "ENOTFOUND", "EAI_AGAIN"]);
// node-postgres reports a lost or refused connection with these messages and no code.
const LOST_CONNECTION = /Connection terminated|connection error and is not queryable|timeout exceeded when trying to connect|Client was closed|Cannot use a pool after calling end/i;

/**
 * Whether the error means the database cannot be reached right now (down, restarting, refusing
 * connections), as opposed to a statement it refused. Work that failed this way is retried later,
 * never dead-lettered, and a request that needs the database gets 503 with Retry-After.
 */
export function isDatabaseUnavailable(error: unknown): boolean {
  const state = sqlState(error);
  // Class 08: connection exception; 57P01-57P03: shut down, crashed, or not accepting connections yet.
  if (state && (state.startsWith("08") || state === "57P01" || state === "57P02" || state === "57P03")) return true;
  for (let e: unknown = error; e && typeof e === "object"; e = (e as { cause?: unknown }).cause) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string" && NETWORK_CODES.has(code)) return true;
    const message = (e as { message?: unknown }).message;
    if (typeof message === "string" && LOST_CONNECTION.test(message)) return true;
    if (e instanceof AggregateError && e.errors.some(isDatabaseUnavailable)) return true;
  }
  return false;
}

// 55P03 lock timeout, 40P01 deadlock, 40001 serialization failure, 57014 statement timeout, 53300 too many connections.
const BUSY_STATES = new Set(["55P03", "40P01", "40001", "57014", "53300"]);

/** Whether the database refused the work only because it is busy (a lock, a deadlock, a full pool): retrying may succeed. */
export function isDatabaseBusy(error: unknown): boolean {
  const state = sqlState(error);
  return state !== undefined && BUSY_STATES.has(state);
}

/** Either of the above: the work itself was not wrong, so it is retried rather than counted as a failure. */
export function isTransientDatabaseError(error: unknown): boolean {
  return isDatabaseUnavailable(error) || isDatabaseBusy(error);
}
