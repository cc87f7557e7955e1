import { isTransientDatabaseError } from "../db/errors.ts";

/** A message as it travels between services: the outbox row's id is its identity everywhere. */
export interface BusMessage {
  id: string;
  tenantId: string;
  topic: string;
  payload: unknown;
  /**
   * For one consumer only: a dead letter re-driven to the consumer that failed it. Nobody else sees
   * it, and it travels under the original message's id so that consumer's inbox still de-duplicates.
   */
  consumer?: string;
  /** The outbox row that re-drives the message (its own id), when it is a re-drive. */
  redriveId?: string;
  /** W3C trace context of the publish (the relay's PRODUCER span): the consumer's span continues the trace. */
  traceparent?: string;
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

/** A consumer and the topics it takes: what a broker must hold for it, whether or not this process runs it. */
export interface BusTopologyEntry {
  consumer: string;
  topics: readonly string[];
}

/**
 * A healthy bus refused the message: the broker nacked it, had no queue for it (an unroutable
 * mandatory message), or a local handler failed on it. The relay counts these toward the message's
 * retry budget. Any other error from publish() means the bus could not be reached: an outage, which
 * delays the message but never dead-letters it.
 */
export class MessageRejected extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "MessageRejected";
  }
}

/**
 * Moves messages from the outbox relay to subscribers. Two implementations pass one contract
 * suite: in-process and RabbitMQ. Neither is a shortcut around the outbox: both are fed by the relay.
 */
export interface Bus {
  /**
   * Resolves once the message is safely handed over (broker confirm, or every local handler succeeded).
   * Rejects with MessageRejected when a healthy bus refused it, with any other error when it could not be reached.
   */
  publish(message: BusMessage): Promise<void>;
  subscribe(subscription: Subscription): Promise<void>;
  /** Rejects when the broker cannot be reached (readiness; the relay claims nothing meanwhile). */
  ping(): Promise<void>;
  /**
   * Calls the listener each time the bus is connected and ready, at start and after every reconnect
   * (the relay then sends at once what waited for it). Returns a function that stops listening.
   * A bus that never disconnects need not implement it.
   */
  onReady?(listener: () => void): () => void;
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
 * Delivery inside one process. publish() runs every matching handler (or, for a re-drive, the one
 * consumer it is for) and fails if any failed, so the relay keeps the outbox row and retries it with
 * its stored backoff; handlers that already succeeded skip the repeat through their inbox.
 * A handler failure is a consumer failure and counts toward the row's retry budget, except when
 * every failure was a transient database error (down, or busy with locks): that is an outage, and
 * the row waits for the database without being dead-lettered.
 */
export function createInProcessBus(): Bus {
  const subscriptions: Subscription[] = [];
  return {
    async publish(message) {
      const targets =
        message.consumer === undefined
          ? subscriptions.filter((s) => s.topics.some((pattern) => topicMatches(pattern, message.topic)))
          : subscriptions.filter((s) => s.consumer === message.consumer);
      if (message.consumer !== undefined && targets.length === 0) {
        throw new MessageRejected(`no consumer ${message.consumer} is subscribed in this process`);
      }
      const failures: unknown[] = [];
      for (const s of targets) {
        try {
          await s.handler(message);
        } catch (error) {
          failures.push(error);
        }
      }
      if (failures.length > 0) {
        const reasons = failures.map((f) => (f instanceof Error ? f.message : String(f))).join("; ");
        const failure = new AggregateError(failures, `${failures.length} handler(s) failed: ${reasons}`);
        if (failures.every(isTransientDatabaseError)) throw failure;
        throw new MessageRejected(failure.message, { cause: failure });
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
