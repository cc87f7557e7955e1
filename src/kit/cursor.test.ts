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

  it("gives a next cursor only when there are more rows", () => {
    expect(page([1, 2], 2, String)).toEqual({ data: [1, 2], nextCursor: null });
    expect(page([1, 2, 3], 2, String)).toEqual({ data: [1, 2], nextCursor: "2" });
  });
});
