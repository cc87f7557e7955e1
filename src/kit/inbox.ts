import type { Logger } from "pino";
import type { Database, Tx } from "../db/client.ts";
import { type BusHandler, type BusMessage, topicMatches } from "./bus.ts";
import { inboxMessages } from "./schema.ts";
import { inSpan } from "./trace-context.ts";

/** Work an effect asks to run once its transaction committed (e.g. after-hooks of order moves). */
export type AfterCommit = (work: () => Promise<void>) => void;

/**
 * A bus handler whose effect happens once per (consumer, message): the inbox row is inserted in the
 * same tenant transaction as the effect, and a repeat finds it and does nothing.
 */
export function inboxHandler(
  database: Database,
  consumer: string,
  effect: (tx: Tx, message: BusMessage, afterCommit: AfterCommit) => Promise<void>,
): BusHandler {
  // A CONSUMER span in the trace the message carries: the effect's queries, log lines and outbox rows belong to it.
  const attributes = (message: BusMessage) => ({ "messaging.destination.name": message.topic, "messaging.message.id": message.id, "messaging.consumer.group.name": consumer });
  return (message) =>
    inSpan(`${message.topic} process`, { kind: "consumer", traceparent: message.traceparent, attributes: attributes(message) }, async () => {
      const later: (() => Promise<void>)[] = [];
      await database.tenant(message.tenantId, async (tx) => {
        const fresh = await tx
          .insert(inboxMessages)
          .values({ consumer, messageId: message.id, tenantId: message.tenantId })
          .onConflictDoNothing()
          .returning({ id: inboxMessages.messageId });
        if (fresh.length === 1) await effect(tx, message, (work) => later.push(work));
      });
      for (const work of later) await work();
    });
}

/** What a consumer does with the messages of one topic pattern, in the transaction of their inbox row. */
export interface Route {
  topic: string;
  effect: (tx: Tx, message: BusMessage, afterCommit: AfterCommit) => Promise<void>;
  /** Asked first, outside any transaction: false when the effect would do nothing with this message. */
  wanted?: (message: BusMessage) => Promise<boolean>;
  /**
   * Messages with the same key are handled one after another in this process, each transaction
   * opened once the one before it ended. For effects that lock one row first (a saga's replies): the
   * later one waits here, not in PostgreSQL holding a connection. Other replicas still meet at the lock.
   */
  serialKey?: (message: BusMessage) => string;
}

/** Runs work one at a time per key, in the order asked; keys are independent. */
export function serialLanes() {
  const tails = new Map<string, Promise<void>>();
  return {
    async run(key: string, work: () => Promise<void>): Promise<void> {
      const before = tails.get(key) ?? Promise.resolve();
      const done = before.then(work, work);
      const tail = done.catch(() => {});
      tails.set(key, tail);
      try {
        await done;
      } finally {
        if (tails.get(key) === tail) tails.delete(key);
      }
    },
    /** Keys with work running or waiting (tests). */
    size: () => tails.size,
  };
}

/**
 * One bus handler for a service's consumer: each message applied once (inbox), by the effect of the
 * first route its topic matches; logged at debug level (in the message's span: with its traceId).
 */
export function topicRouter(database: Database, consumer: string, routes: readonly Route[], log?: Logger): BusHandler {
  const routeOf = (message: BusMessage) => routes.find((r) => topicMatches(r.topic, message.topic));
  const handle = inboxHandler(database, consumer, async (tx, message, afterCommit) => {
    const route = routeOf(message);
    if (!route) throw new Error(`${consumer} has no route for ${message.topic}`);
    log?.debug({ consumer, topic: message.topic, messageId: message.id, tenantId: message.tenantId }, "handling a message");
    await route.effect(tx, message, afterCommit);
  });
  const lanes = serialLanes();
  return async (message) => {
    const route = routeOf(message);
    // A message the route has nothing to do with costs no transaction (and leaves no inbox row: doing nothing twice is harmless).
    if (route?.wanted && !(await route.wanted(message))) return;
    const key = route?.serialKey?.(message);
    await (key === undefined ? handle(message) : lanes.run(`${route?.topic} ${key}`, () => handle(message)));
  };
}
