import { describe, expect, it } from "vitest";
import { decodeCursor, encodeCursor, page } from "./cursor.ts";

describe("cursors", () => {
  it("round-trips, and rejects anything it did not make", () => {
    const at = new Date("2026-01-02T03:04:05.678Z");
    expect(decodeCursor(encodeCursor(at, "ord_1"))).toEqual({ at, key: "ord_1" });
    for (const bad of ["", "garbage", Buffer.from("[1]").toString("base64url"), Buffer.from('{"t":"nope","k":"x"}').toString("base64url")]) {
      expect(decodeCursor(bad)).toBeUndefined();
    }
  });

  it("rejects a cursor whose key holds a NUL, a lone surrogate or other non-printable text", () => {
    const forged = (k: string) => Buffer.from(JSON.stringify({ t: "2026-01-02T03:04:05.678Z", k })).toString("base64url");
    expect(decodeCursor(forged("SKU-1"))).toBeDefined();
    for (const k of ["a\u0000b", "\u0000", "a\ud800", "\udc00", "a\u0007", "", "x".repeat(129)]) expect(decodeCursor(forged(k)), JSON.stringify(k)).toBeUndefined();
  });

  it("gives a next cursor only when there are more rows", () => {
    expect(page([1, 2], 2, String)).toEqual({ data: [1, 2], nextCursor: null });
    expect(page([1, 2, 3], 2, String)).toEqual({ data: [1, 2], nextCursor: "2" });
  });
});
