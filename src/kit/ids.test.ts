import { describe, expect, it } from "vitest";
import { newId, randomBytesPooled, randomHex } from "./ids.ts";

describe("ids from pooled random bytes", () => {
  it("never repeats an id across many pool refills", () => {
    // 100,000 ids take 1,000,000 random bytes: about 245 refills of the 4 KiB pool.
    const ids = new Set(Array.from({ length: 100_000 }, () => newId("ord")));
    expect(ids.size).toBe(100_000);
    for (const id of [...ids].slice(0, 100)) expect(id).toMatch(/^ord_[0-9a-hjkmnp-tv-z]{26}$/);
  });

  it("orders ids of different milliseconds by time", async () => {
    const first = newId("ord");
    await new Promise((resolve) => setTimeout(resolve, 5));
    const second = newId("ord");
    expect(first < second).toBe(true);
    expect(first.slice(0, 4 + 10)).not.toBe(second.slice(0, 4 + 10)); // the first 50 bits are milliseconds
  });

  it("hands out bytes that a later refill does not overwrite", () => {
    const early = randomBytesPooled(16);
    const copy = Uint8Array.from(early);
    for (let i = 0; i < 1_000; i++) randomBytesPooled(100); // many refills
    expect(early).toEqual(copy);
  });

  it("gives trace ids of the asked length, all different, spread over every hex digit", () => {
    const traces = Array.from({ length: 10_000 }, () => randomHex(16));
    expect(new Set(traces).size).toBe(10_000);
    for (const trace of traces.slice(0, 100)) expect(trace).toMatch(/^[\da-f]{32}$/);
    expect(randomHex(8)).toMatch(/^[\da-f]{16}$/);
    // Each of the 16 digits turns up in the first position about 1/16 of the time (a stuck byte would not).
    const counts = new Map<string, number>();
    for (const trace of traces) counts.set(trace[0] as string, (counts.get(trace[0] as string) ?? 0) + 1);
    expect(counts.size).toBe(16);
    for (const n of counts.values()) expect(n).toBeGreaterThan(400);
  });

  it("refuses to hand out more than the pool holds at once", () => {
    expect(() => randomBytesPooled(4097)).toThrow(RangeError);
  });
});
