import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Database } from "../db/client.ts";
import { openTestPglite } from "../../test/support/databases.ts";
import { createBarrier } from "./barrier.ts";

describe("saga barrier", () => {
  let database: Database;
  const barrier = createBarrier();
  const effects: string[] = [];
  const step = (sagaId: string, op: "try" | "confirm" | "cancel", answer: unknown = { ok: true }) =>
    database.tenant("t", (tx) =>
      barrier.run(tx, { tenantId: "t", sagaId, step: "reserve" }, op, async () => {
        effects.push(`${sagaId}:${op}`);
        return answer;
      }),
    );

  beforeAll(async () => {
    database = await openTestPglite();
  });
  afterAll(() => database.close());

  it("runs a try once and answers a duplicate try with the first answer", async () => {
    expect(await step("s1", "try", { ok: false, reason: "OUT_OF_STOCK" })).toEqual({ kind: "ran", outcome: { ok: false, reason: "OUT_OF_STOCK" } });
    expect(await step("s1", "try", { ok: true })).toEqual({ kind: "duplicate", outcome: { ok: false, reason: "OUT_OF_STOCK" } });
    expect(effects.filter((e) => e === "s1:try")).toHaveLength(1);
  });

  it("skips a cancel that comes before its try, and the late try then does nothing", async () => {
    expect(await step("s2", "cancel")).toEqual({ kind: "skipped", why: "nothing_to_cancel" });
    expect(await step("s2", "try")).toEqual({ kind: "skipped", why: "cancelled_before_try" });
    expect(await step("s2", "try")).toEqual({ kind: "skipped", why: "cancelled_before_try" });
    expect(effects.filter((e) => e.startsWith("s2"))).toEqual([]);
  });

  it("cancels a try that ran, once however often the cancel comes", async () => {
    await step("s3", "try");
    expect(await step("s3", "cancel")).toMatchObject({ kind: "ran" });
    expect(await step("s3", "cancel")).toMatchObject({ kind: "duplicate" });
    expect(await step("s3", "try")).toMatchObject({ kind: "duplicate" });
    expect(effects.filter((e) => e.startsWith("s3"))).toEqual(["s3:try", "s3:cancel"]);
  });

  it("confirms once", async () => {
    await step("s4", "try");
    await step("s4", "confirm");
    expect(await step("s4", "confirm")).toMatchObject({ kind: "duplicate" });
    expect(effects.filter((e) => e === "s4:confirm")).toHaveLength(1);
  });

  it("leaves no barrier row behind when the step's transaction rolls back", async () => {
    await expect(
      database.tenant("t", (tx) =>
        barrier.run(tx, { tenantId: "t", sagaId: "s5", step: "reserve" }, "try", async () => {
          throw new Error("database hiccup");
        }),
      ),
    ).rejects.toThrow("database hiccup");
    expect(await step("s5", "try")).toMatchObject({ kind: "ran" });
  });
});
