import { describe, expect, it } from "vitest";
import { boundedLru } from "./lru.ts";

describe("bounded LRU", () => {
  it("keeps at most max entries, forgetting the least recently used first", () => {
    const lru = boundedLru<string, number>(3);
    for (const [key, value] of [["a", 1], ["b", 2], ["c", 3]] as const) lru.set(key, value);
    expect(lru.get("a")).toBe(1); // a is now the most recently used
    lru.set("d", 4);
    expect([...lru.keys()].sort()).toEqual(["a", "c", "d"]);
    lru.set("e", 5);
    lru.set("f", 6);
    expect(lru.size).toBe(3);
    expect([...lru.keys()].sort()).toEqual(["d", "e", "f"]);
  });

  it("honours each entry's TTL on the clock it is given", () => {
    let now = 1_000;
    const lru = boundedLru<string, string>(10, { ttlResolution: 0, perf: { now: () => now } });
    lru.set("short", "x", { ttl: 50 });
    lru.set("long", "y", { ttl: 500 });
    now += 100;
    expect(lru.get("short")).toBeUndefined();
    expect(lru.get("long")).toBe("y");
  });

  it("allocates nothing for its slots when built, however large its bound", () => {
    const before = process.memoryUsage().arrayBuffers;
    const lru = boundedLru<string, number>(1_000_000);
    // lru-cache given max: 1,000,000 allocates two Uint32Arrays of that length here (8 MB).
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(1_000_000);
    lru.set("a", 1);
    expect(lru.get("a")).toBe(1);
  });
});
