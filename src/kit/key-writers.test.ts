import { describe, expect, it } from "vitest";
import { createKeyWriters } from "./key-writers.ts";

/** A promise and its resolver, to hold a batch open while more items arrive. */
function gate() {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => (open = resolve));
  return { opened, open };
}

describe("key writers", () => {
  it("writes what queued meanwhile as the next batch, one batch per key at a time, results in order", async () => {
    const batches: { key: string; items: number[] }[] = [];
    const writing = new Map<string, number>();
    let maxAtOnce = 0;
    const first = gate();
    const writers = createKeyWriters<number, string>({
      maxBatch: 3,
      async write(key, items) {
        batches.push({ key, items });
        writing.set(key, (writing.get(key) ?? 0) + 1);
        maxAtOnce = Math.max(maxAtOnce, writing.get(key) ?? 0);
        if (batches.length === 1) await first.opened;
        else await new Promise((r) => setTimeout(r, 5));
        writing.set(key, (writing.get(key) ?? 1) - 1);
        return items.map((n) => `${key}:${n * 10}`);
      },
    });
    const a = [1, 2, 3, 4, 5].map((n) => writers.submit("a", n));
    const b = writers.submit("b", 7);
    expect(writers.busy("a")).toBe(true);
    expect(writers.pending).toBe(6);
    first.open();
    expect(await Promise.all(a)).toEqual(["a:10", "a:20", "a:30", "a:40", "a:50"]);
    expect(await b).toBe("b:70");
    // The first item went alone (nothing else had queued yet); the four behind it in batches of at most 3.
    expect(batches.filter((x) => x.key === "a").map((x) => x.items)).toEqual([[1], [2, 3, 4], [5]]);
    expect(maxAtOnce).toBe(1);
    expect(writers.busy("a")).toBe(false);
    expect(writers.pending).toBe(0);
  });

  it("rejects the items of a batch whose write failed, and goes on with the next batch", async () => {
    const first = gate();
    let calls = 0;
    const writers = createKeyWriters<number, number>({
      maxBatch: 10,
      async write(_key, items) {
        calls++;
        if (calls === 1) {
          await first.opened;
          throw new Error("the first batch failed");
        }
        return items;
      },
    });
    const failed = writers.submit("k", 1);
    const next = [2, 3].map((n) => writers.submit("k", n));
    first.open();
    await expect(failed).rejects.toThrow("the first batch failed");
    expect(await Promise.all(next)).toEqual([2, 3]);
  });

  it("refuses a write that answers a different number of results than items", async () => {
    const writers = createKeyWriters<number, number>({ maxBatch: 10, write: async () => [] });
    await expect(writers.submit("k", 1)).rejects.toThrow("a batch of 1 answered 0 results");
    expect(writers.pending).toBe(0);
  });
});
