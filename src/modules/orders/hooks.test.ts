import { describe, expect, it } from "vitest";
import { createTransitionHooks, type TransitionEvent } from "./hooks.ts";

const event = (from: TransitionEvent["from"], to: TransitionEvent["to"]): TransitionEvent => ({
  tenantId: "t",
  orderId: "ord_1",
  from,
  to,
  reason: null,
  version: 2,
  at: new Date(0),
});

describe("transition hooks", () => {
  it("lets a before-hook veto a matching move with its reason, and only that move", async () => {
    const hooks = createTransitionHooks(() => {});
    hooks.before("PAID->SHIPPED", (e) => (e.tenantId === "t" ? "warehouse closed" : undefined));
    expect(await hooks.vetoOf(event("PAID", "SHIPPED"))).toBe("warehouse closed");
    expect(await hooks.vetoOf(event("SHIPPED", "COMPLETED"))).toBeUndefined();
  });

  it("matches wildcards, runs after-hooks once per event, and never lets their errors escape", async () => {
    const errors: unknown[] = [];
    const hooks = createTransitionHooks((error) => errors.push(error));
    const seen: string[] = [];
    hooks.after("*->CANCELLED", (e) => {
      seen.push(`cancelled from ${e.from}`);
    });
    hooks.after("*->*", (e) => {
      seen.push(`any ${e.to}`);
    });
    hooks.after("CREATED->*", () => {
      throw new Error("boom");
    });
    await hooks.runAfter([event("CREATED", "CANCELLED"), event("PAID", "SHIPPED")]);
    expect(seen).toEqual(["cancelled from CREATED", "any CANCELLED", "any SHIPPED"]);
    expect(errors).toHaveLength(1);
  });
});
