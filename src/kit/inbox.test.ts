import { describe, expect, it } from "vitest";
import { serialLanes } from "./inbox.ts";

const tick = () => new Promise((resolve) => setTimeout(resolve, 5));

describe("serial lanes", () => {
  it("run the work of one key one at a time, in the order asked, and of different keys side by side", async () => {
    const lanes = serialLanes();
    const log: string[] = [];
    let running = 0;
    let most = 0;
    const work = (name: string) => async () => {
      running++;
      most = Math.max(most, running);
      log.push(`${name} start`);
      await tick();
      log.push(`${name} end`);
      running--;
    };
    await Promise.all([lanes.run("saga-1", work("a1")), lanes.run("saga-1", work("a2")), lanes.run("saga-1", work("a3")), lanes.run("saga-2", work("b1"))]);
    const ofSaga1 = log.filter((line) => line.startsWith("a"));
    expect(ofSaga1).toEqual(["a1 start", "a1 end", "a2 start", "a2 end", "a3 start", "a3 end"]);
    // b1 ran beside a1: two at once, never more, since saga-1's works waited for each other.
    expect(most).toBe(2);
    expect(log.indexOf("b1 start")).toBeLessThan(log.indexOf("a1 end"));
    expect(lanes.size()).toBe(0);
  });

  it("go on after a failure, which only its caller sees", async () => {
    const lanes = serialLanes();
    const done: string[] = [];
    const failing = lanes.run("k", async () => {
      await tick();
      throw new Error("refused");
    });
    const next = lanes.run("k", async () => {
      done.push("next");
    });
    await expect(failing).rejects.toThrow("refused");
    await next;
    expect(done).toEqual(["next"]);
    expect(lanes.size()).toBe(0);
  });
});
