import { describe, expect, it } from "vitest";
import { parsePrefer } from "./orders.ts";

describe("Prefer header", () => {
  it("reads respond-async and wait=N (seconds, capped at 30), defaulting to a 3 s wait", () => {
    expect(parsePrefer(undefined)).toEqual({ respondAsync: false, waitMs: 3000 });
    expect(parsePrefer("respond-async")).toEqual({ respondAsync: true, waitMs: 3000 });
    expect(parsePrefer("wait=10, respond-async")).toEqual({ respondAsync: true, waitMs: 10_000 });
    expect(parsePrefer(["wait=999"])).toEqual({ respondAsync: false, waitMs: 30_000 });
    expect(parsePrefer("wait=0")).toEqual({ respondAsync: false, waitMs: 3000 });
    expect(parsePrefer("handling=lenient, wait=abc")).toEqual({ respondAsync: false, waitMs: 3000 });
  });
});
