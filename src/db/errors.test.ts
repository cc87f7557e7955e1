import { describe, expect, it } from "vitest";
import { isDatabaseBusy, isDatabaseUnavailable, isTransientDatabaseError, sqlState } from "./errors.ts";

const pgError = (code: string, message = "boom") => Object.assign(new Error(message), { code });
const wrapped = (cause: unknown) => Object.assign(new Error("Failed query: select 1"), { cause });

describe("database error classification", () => {
  it("finds the SQLSTATE through drizzle's wrapper", () => {
    expect(sqlState(wrapped(pgError("23505")))).toBe("23505");
    expect(sqlState(new Error("plain"))).toBeUndefined();
  });

  it.each([
    ["a refused connection", pgError("ECONNREFUSED", "connect ECONNREFUSED 127.0.0.1:5432")],
    ["a server shutting down", wrapped(pgError("57P01", "terminating connection due to administrator command"))],
    ["a server still starting", pgError("57P03", "the database system is starting up")],
    ["a connection exception", pgError("08006")],
    ["a lost connection without a code", wrapped(new Error("Connection terminated unexpectedly"))],
    ["a pool that cannot connect in time", new Error("timeout exceeded when trying to connect")],
  ])("calls %s unavailable", (_name, error) => {
    expect(isDatabaseUnavailable(error)).toBe(true);
    expect(isTransientDatabaseError(error)).toBe(true);
  });

  it("calls lock waits, deadlocks and serialization failures busy, not unavailable", () => {
    for (const code of ["55P03", "40P01", "40001"]) {
      expect(isDatabaseBusy(wrapped(pgError(code)))).toBe(true);
      expect(isDatabaseUnavailable(wrapped(pgError(code)))).toBe(false);
    }
  });

  it("treats a statement the database refused as neither", () => {
    for (const error of [wrapped(pgError("23505")), wrapped(pgError("22021")), new TypeError("x is undefined")]) {
      expect(isTransientDatabaseError(error)).toBe(false);
    }
  });
});
