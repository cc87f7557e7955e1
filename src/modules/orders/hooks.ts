import type { OrderStatus } from "./schema.ts";

export interface TransitionEvent {
  tenantId: string;
  orderId: string;
  from: OrderStatus | null;
  to: OrderStatus;
  reason: string | null;
  version: number;
  at: Date;
}

/** Runs inside the move's transaction; returning a string vetoes the move with that reason. */
export type BeforeHook = (event: TransitionEvent) => string | undefined | Promise<string | undefined>;
/** Runs after the move committed; whatever it throws is logged and never reaches the caller. */
export type AfterHook = (event: TransitionEvent) => void | Promise<void>;

type Key = `${OrderStatus | "*"}->${OrderStatus | "*"}`;

/**
 * A small typed registry of transition hooks, keyed by `FROM->TO` with `*` as a wildcard.
 * Keeps side concerns (logs, metrics, notifications) out of the code that moves orders.
 */
export function createTransitionHooks(onAfterError: (error: unknown, event: TransitionEvent) => void) {
  const before = new Map<Key, BeforeHook[]>();
  const after = new Map<Key, AfterHook[]>();

  const keysOf = (e: TransitionEvent): Key[] => {
    const from = e.from ?? "*";
    return [`${from}->${e.to}`, `${from}->*`, `*->${e.to}`, "*->*"];
  };
  const add = <H>(map: Map<Key, H[]>, key: Key, hook: H) => map.set(key, [...(map.get(key) ?? []), hook]);

  return {
    before(key: Key, hook: BeforeHook) {
      add(before, key, hook);
    },
    after(key: Key, hook: AfterHook) {
      add(after, key, hook);
    },
    /** The first veto reason, if any hook refuses the move. */
    async vetoOf(event: TransitionEvent): Promise<string | undefined> {
      for (const key of new Set(keysOf(event))) {
        for (const hook of before.get(key) ?? []) {
          const reason = await hook(event);
          if (reason) return reason;
        }
      }
      return undefined;
    },
    async runAfter(events: TransitionEvent[]): Promise<void> {
      for (const event of events) {
        for (const key of new Set(keysOf(event))) {
          for (const hook of after.get(key) ?? []) {
            try {
              await hook(event);
            } catch (error) {
              onAfterError(error, event);
            }
          }
        }
      }
    },
  };
}

export type TransitionHooks = ReturnType<typeof createTransitionHooks>;
