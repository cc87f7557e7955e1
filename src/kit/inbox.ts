import type { Database, Tx } from "../db/client.ts";
import type { BusHandler, BusMessage } from "./bus.ts";
import { inboxMessages } from "./schema.ts";

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
  return async (message) => {
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
  };
}
