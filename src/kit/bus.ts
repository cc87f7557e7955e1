/** A message as it travels between services: the outbox row's id is its identity everywhere. */
export interface BusMessage {
  id: string;
  tenantId: string;
  topic: string;
  payload: unknown;
}

/** What a subscriber does with a message; throwing asks for a later redelivery. */
export type BusHandler = (message: BusMessage) => Promise<void>;

export interface Subscription {
  /** The consumer's name: its queue, and its key in the inbox. */
  consumer: string;
  /** Topic patterns: `order.placed`, `inventory.*` (one word), `payments.#` (any words). */
  topics: string[];
  handler: BusHandler;
}

/**
 * Moves messages from the outbox relay to subscribers. Two implementations pass one contract
 * suite: in-process and RabbitMQ. Neither is a shortcut around the outbox: both are fed by the relay.
 */
export interface Bus {
  /** Resolves once the message is safely handed over (broker confirm, or every local handler succeeded). */
  publish(message: BusMessage): Promise<void>;
  subscribe(subscription: Subscription): Promise<void>;
  /** Rejects when the broker cannot be reached (readiness). */
  ping(): Promise<void>;
  close(): Promise<void>;
}

/** Whether a topic matches an AMQP-style pattern (`*` one word, `#` zero or more words). */
export function topicMatches(pattern: string, topic: string): boolean {
  const p = pattern.split(".");
  const t = topic.split(".");
  const match = (i: number, j: number): boolean => {
    if (i === p.length) return j === t.length;
    if (p[i] === "#") return match(i + 1, j) || (j < t.length && match(i, j + 1));
    return j < t.length && (p[i] === "*" || p[i] === t[j]) && match(i + 1, j + 1);
  };
  return match(0, 0);
}

/**
 * Delivery inside one process. publish() runs every matching handler and fails if any failed, so
 * the relay keeps the outbox row and retries it with its stored backoff; handlers that already
 * succeeded skip the repeat through their inbox.
 */
export function createInProcessBus(): Bus {
  const subscriptions: Subscription[] = [];
  return {
    async publish(message) {
      const failures: unknown[] = [];
      for (const s of subscriptions.filter((s) => s.topics.some((pattern) => topicMatches(pattern, message.topic)))) {
        try {
          await s.handler(message);
        } catch (error) {
          failures.push(error);
        }
      }
      if (failures.length > 0) {
        const reasons = failures.map((f) => (f instanceof Error ? f.message : String(f))).join("; ");
        throw new AggregateError(failures, `${failures.length} handler(s) failed: ${reasons}`);
      }
    },
    async subscribe(subscription) {
      subscriptions.push(subscription);
    },
    ping: async () => {},
    async close() {
      subscriptions.length = 0;
    },
  };
}
