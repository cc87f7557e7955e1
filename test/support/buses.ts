import type { Bus, BusMessage, Subscription } from "../../src/kit/bus.ts";
import { topicMatches } from "../../src/kit/bus.ts";

/**
 * A bus that takes every message at once and delivers only when told, in whatever order the test
 * picks, as often as it likes: what RabbitMQ may do in the worst case (reordering, redelivery).
 */
export function shufflingBus(): Bus & {
  /** Messages published and not yet delivered. */
  waiting(): number;
  /** Delivers the waiting message at `pick` (modulo how many wait); one its handlers refuse stays waiting. */
  deliver(pick: number): Promise<void>;
  /** Queues again a message published earlier (at `pick`, modulo how many were published): a redelivery. */
  duplicate(pick: number): void;
} {
  const subscriptions: Subscription[] = [];
  const waiting: BusMessage[] = [];
  const published: BusMessage[] = [];
  return {
    async publish(message) {
      waiting.push(message);
      published.push(message);
    },
    async subscribe(subscription) {
      subscriptions.push(subscription);
    },
    ping: async () => {},
    async close() {
      subscriptions.length = 0;
    },
    waiting: () => waiting.length,
    async deliver(pick) {
      if (waiting.length === 0) return;
      const [message] = waiting.splice(pick % waiting.length, 1) as [BusMessage];
      try {
        for (const s of subscriptions.filter((s) => s.topics.some((t) => topicMatches(t, message.topic)))) await s.handler(message);
      } catch {
        waiting.push(message); // delivered again later, as a broker would
      }
    },
    duplicate(pick) {
      if (published.length > 0) waiting.push(published[pick % published.length] as BusMessage);
    },
  };
}
