import type { Logger } from "pino";
import { AMQPError, type AsyncMessage, type Channel, Connection, type Consumer, ConsumerStatus } from "rabbitmq-client";
import { isTransientDatabaseError } from "../db/errors.ts";
import { type Bus, type BusMessage, type BusTopologyEntry, MessageRejected, type Subscription } from "./bus.ts";

/** Failures of the message that counted toward its retry budget. */
const ATTEMPT = "x-orderly-attempt";
/** Retries because the consumer's database could not be reached: they pick the wait, never the budget. */
const OUTAGES = "x-orderly-outages";
const TOPIC = "x-orderly-topic";
const TENANT = "x-orderly-tenant";
const REDRIVE = "x-orderly-redrive";
/** W3C trace context, under its standard name. */
const TRACEPARENT = "traceparent";
/** Ties a returned (unroutable) message to the publish that sent it. */
const SEND = "x-orderly-send";
const waitQueue = (queue: string, delayMs: number) => `${queue}.retry.${delayMs}ms`;
const parkingQueue = (queue: string) => `${queue}.parking`;
/** Every queue a consumer has: its work queue, its parking queue and one wait queue per delay. */
const queuesOf = (queue: string, delays: readonly number[]) => [queue, parkingQueue(queue), ...delays.map((delay) => waitQueue(queue, delay))];
/** The longest a consumer holds a message it could not move to a wait queue before handing it back. */
const MAX_HOLD_MS = 2_000;

const reasonOf = (error: unknown) => (error instanceof Error ? error.message : String(error));
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The promise, or a rejection once `ms` passed (the promise itself keeps running: at least once). */
function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
  });
  promise.catch(() => {}); // a late failure after the timeout is not an unhandled rejection
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export interface RabbitBusOptions {
  url: string;
  log: Logger;
  /** Delay of each redelivery level; past the last the message is parked and dead-lettered. */
  retryDelaysMs: number[];
  /**
   * Records the dead letter of a message a consumer gave up on, in the consumer's own database.
   * When it fails (that database is down) the message is not parked: it waits and tries again.
   */
  onDeadLetter(message: BusMessage, consumer: string, reason: string): Promise<void>;
  /**
   * Every consumer of the deployment and its topics, whether or not this process runs it: their
   * queues, bindings, wait and parking queues are declared at every (re)connection, so a message
   * published before its consumer first started waits in its queue instead of being dropped.
   */
  topology: readonly BusTopologyEntry[];
  /** Names of the exchange and queues start with this (tests isolate themselves with it). */
  prefix?: string;
  prefetch?: number;
  /** A publish the broker has not confirmed within this long counts as an outage (default 5 s). */
  publishTimeoutMs?: number;
}

/**
 * RabbitMQ through rabbitmq-client, which re-connects and re-subscribes by itself.
 * A topic exchange; one durable queue per consumer; publisher confirms and `mandatory`, so a
 * message no queue takes is refused (MessageRejected) rather than silently dropped; manual acks
 * with prefetch. A re-drive goes through the default exchange to its one consumer's queue.
 *
 * A failed message goes to the wait queue of its retry level, whose queue-level TTL dead-letters it
 * back to the work queue (one queue per level: per-message TTLs on one queue block at its head);
 * past the last level it is recorded as a dead letter, then parked. A failure because the
 * consumer's database is unreachable is an outage: it waits at a growing, capped level and does not
 * count. The consumer callback never throws, so the client never requeues a message in a hot loop.
 */
export function createRabbitBus(options: RabbitBusOptions): Bus & { connection: Connection; purge(): Promise<void> } {
  const { log } = options;
  const delays = options.retryDelaysMs;
  if (delays.length === 0) throw new Error("retryDelaysMs needs at least one delay");
  const prefix = options.prefix ?? "orderly";
  const exchange = `${prefix}.events`;
  const publishTimeoutMs = options.publishTimeoutMs ?? 5_000;
  const queueOf = (consumer: string) => `${prefix}.${consumer}`;

  const connection = new Connection({ url: options.url, connectionName: prefix, retryLow: 200, retryHigh: 5_000 });
  connection.on("error", (error) => log.warn({ err: error }, "RabbitMQ connection error; reconnecting"));
  // One try per send: the relay and the consumers retry with their own stored or queued backoff.
  const publisher = connection.createPublisher({ confirm: true, maxAttempts: 1, exchanges: [{ exchange, type: "topic", durable: true }] });
  const consumers: Consumer[] = [];

  /** Topic patterns by consumer: what every (re)connection declares. */
  const topology = new Map<string, Set<string>>();
  const addToTopology = (consumer: string, topics: readonly string[]) => {
    const patterns = topology.get(consumer) ?? new Set<string>();
    for (const topic of topics) patterns.add(topic);
    topology.set(consumer, patterns);
  };
  for (const entry of options.topology) addToTopology(entry.consumer, entry.topics);

  async function declareConsumer(ch: Channel, consumer: string, topics: Iterable<string>) {
    const queue = queueOf(consumer);
    // Named by their delay: a queue's TTL cannot change, so new delays get new queues.
    for (const delay of delays) {
      await ch.queueDeclare({
        queue: waitQueue(queue, delay),
        durable: true,
        arguments: { "x-message-ttl": delay, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": queue },
      });
    }
    await ch.queueDeclare({ queue: parkingQueue(queue), durable: true });
    await ch.queueDeclare({ queue, durable: true });
    for (const routingKey of topics) await ch.queueBind({ exchange, queue, routingKey });
  }

  async function withChannel(work: (ch: Channel) => Promise<void>) {
    const ch = await connection.acquire();
    try {
      await work(ch);
    } finally {
      await ch.close().catch(() => {});
    }
  }

  const declareTopology = () =>
    withChannel(async (ch) => {
      await ch.exchangeDeclare({ exchange, type: "topic", durable: true });
      for (const [consumer, topics] of topology) await declareConsumer(ch, consumer, topics);
    });

  /**
   * The topology declaration of the current connection (true once it succeeded); publishes wait for
   * it. Until it succeeds a publish fails as an outage, never as a rejection: a message the broker
   * returns because a queue was not declared yet must wait, not be dead-lettered.
   */
  let declared: Promise<boolean> = Promise.resolve(true);
  const declare = () =>
    declareTopology().then(
      () => true,
      (error: unknown) => {
        log.error({ err: error }, "could not declare the RabbitMQ topology; publishes wait until it is declared");
        return false;
      },
    );
  const readyListeners = new Set<() => void>();
  connection.on("connection", () => {
    declared = declare().then((ok) => {
      for (const listener of readyListeners) listener();
      return ok;
    });
  });
  /** Declares the topology again if the last declaration failed (once for all publishes waiting on it), within the time left. */
  async function topologyDeclared(timeLeftMs: () => number): Promise<void> {
    const last = declared;
    if (await withTimeout(last, Math.max(timeLeftMs(), 1), "RabbitMQ topology declaration")) return;
    if (declared === last) declared = declare();
    if (!(await withTimeout(declared, Math.max(timeLeftMs(), 1), "RabbitMQ topology declaration"))) throw new Error("the RabbitMQ topology could not be declared");
  }

  // basic.return reaches us on a later tick than the confirm of the same message (the client emits
  // it from setImmediate); a send registers its key here, waits one tick after its confirm, then looks.
  const returns = new Map<string, string | undefined>();
  let sends = 0;
  publisher.on("basic.return", (returned) => {
    const key = String(returned.headers?.[SEND] ?? "");
    if (returns.has(key)) returns.set(key, `${returned.replyCode} ${returned.replyText}`);
  });

  /** Publishes with confirm and `mandatory`; MessageRejected when the broker nacks or returns it. */
  async function send(target: { exchange: string; routingKey: string }, message: BusMessage, headers: Record<string, unknown> = {}, timeoutMs = publishTimeoutMs) {
    const key = String(++sends);
    returns.set(key, undefined);
    try {
      const envelope = {
        ...target,
        mandatory: true,
        messageId: message.id,
        durable: true,
        contentType: "application/json",
        headers: {
          [TENANT]: message.tenantId,
          [TOPIC]: message.topic,
          ...(message.redriveId === undefined ? {} : { [REDRIVE]: message.redriveId }),
          ...(message.traceparent === undefined ? {} : { [TRACEPARENT]: message.traceparent }),
          ...headers,
          [SEND]: key,
        },
      };
      await withTimeout(publisher.send(envelope, message.payload), Math.max(timeoutMs, 1), "RabbitMQ publish confirm");
      await new Promise((resolve) => setImmediate(resolve));
      const returned = returns.get(key);
      if (returned !== undefined) {
        throw new MessageRejected(`RabbitMQ has no queue for ${target.exchange ? `${target.exchange} ${target.routingKey}` : `queue ${target.routingKey}`} (${returned})`);
      }
    } catch (error) {
      if (error instanceof AMQPError && error.code === "NACK") throw new MessageRejected(`RabbitMQ refused the message: ${error.message}`, { cause: error });
      throw error;
    } finally {
      returns.delete(key);
    }
  }

  const fromDelivery = (msg: AsyncMessage): BusMessage => {
    const message: BusMessage = {
      id: msg.messageId ?? "",
      tenantId: String(msg.headers?.[TENANT] ?? ""),
      topic: String(msg.headers?.[TOPIC] ?? msg.routingKey),
      payload: msg.body,
    };
    const redrive = msg.headers?.[REDRIVE];
    if (redrive !== undefined) message.redriveId = String(redrive);
    const traceparent = msg.headers?.[TRACEPARENT];
    if (traceparent !== undefined) message.traceparent = String(traceparent);
    return message;
  };

  /**
   * Moves a delivered message to another queue, then acks it. When the broker will not take it now,
   * hands it back after a pause: slower than a hot requeue loop, and nothing is lost.
   */
  async function moveTo(queue: string, message: BusMessage, headers: Record<string, unknown>, holdMs: number): Promise<ConsumerStatus> {
    try {
      await send({ exchange: "", routingKey: queue }, message, headers);
      return ConsumerStatus.ACK;
    } catch (error) {
      log.warn({ err: error, queue, messageId: message.id }, "could not move a message; handing it back to its queue after a pause");
      await sleep(holdMs);
      return ConsumerStatus.REQUEUE;
    }
  }

  /** What becomes of a message its handler failed on. */
  async function afterFailure(consumer: string, msg: AsyncMessage, message: BusMessage, error: unknown): Promise<ConsumerStatus> {
    const queue = queueOf(consumer);
    const counted = Number(msg.headers?.[ATTEMPT] ?? 0);
    const outages = Number(msg.headers?.[OUTAGES] ?? 0);
    const last = delays.length - 1;
    const wait = (level: number, headers: Record<string, unknown>) => {
      const delay = delays[level] as number;
      return moveTo(waitQueue(queue, delay), message, headers, Math.min(delay, MAX_HOLD_MS));
    };
    if (isTransientDatabaseError(error)) {
      // The database is down or busy, not the message wrong: wait longer each time, up to the last
      // level, for as long as it lasts, without using up the message's budget.
      return wait(Math.min(outages, last), { [ATTEMPT]: counted, [OUTAGES]: outages + 1 });
    }
    if (counted < delays.length) return wait(counted, { [ATTEMPT]: counted + 1, [OUTAGES]: outages });
    const reason = reasonOf(error);
    try {
      // First the dead letter (idempotent), then the parking: a message is never parked unrecorded.
      await options.onDeadLetter(message, consumer, reason);
    } catch (recordError) {
      log.warn({ err: recordError, consumer, messageId: message.id }, "could not record a dead letter; the message waits and tries again");
      return wait(last, { [ATTEMPT]: counted, [OUTAGES]: outages + 1 });
    }
    log.error({ consumer, messageId: message.id, topic: message.topic, reason }, "message dead-lettered and parked");
    return moveTo(parkingQueue(queue), message, { [ATTEMPT]: counted, "x-orderly-reason": reason }, MAX_HOLD_MS);
  }

  return {
    connection,

    async publish(message) {
      if (!connection.ready) throw new Error("RabbitMQ is not connected");
      // One deadline for both, shorter than a relay's claim on the row.
      const started = Date.now();
      await topologyDeclared(() => publishTimeoutMs - (Date.now() - started));
      // A re-drive goes to its one consumer's queue through the default exchange.
      const target = message.consumer === undefined ? { exchange, routingKey: message.topic } : { exchange: "", routingKey: queueOf(message.consumer) };
      await send(target, message, {}, publishTimeoutMs - (Date.now() - started));
    },

    async subscribe({ consumer, topics, handler }: Subscription) {
      addToTopology(consumer, topics);
      await withChannel((ch) => declareConsumer(ch, consumer, topics));
      const queue = queueOf(consumer);
      const sub = connection.createConsumer(
        {
          queue,
          queueOptions: { durable: true },
          qos: { prefetchCount: options.prefetch ?? 16 },
          exchanges: [{ exchange, type: "topic", durable: true }],
          queueBindings: topics.map((routingKey) => ({ exchange, queue, routingKey })),
        },
        async (msg) => {
          const message = fromDelivery(msg);
          try {
            await handler(message);
            return ConsumerStatus.ACK;
          } catch (error) {
            return afterFailure(consumer, msg, message, error);
          }
        },
      );
      sub.on("error", (error) => log.warn({ err: error, consumer }, "RabbitMQ consumer error"));
      consumers.push(sub);
    },

    async ping() {
      if (!connection.ready) throw new Error("RabbitMQ is not connected");
    },

    onReady(listener) {
      readyListeners.add(listener);
      return () => readyListeners.delete(listener);
    },

    async close() {
      await Promise.all(consumers.map((c) => c.close()));
      await publisher.close();
      await connection.close();
    },

    /** Deletes this bus's queues and exchange (tests). */
    async purge() {
      for (const consumer of topology.keys()) {
        for (const queue of queuesOf(queueOf(consumer), delays)) await connection.queueDelete({ queue }).catch(() => {});
      }
      await connection.exchangeDelete({ exchange }).catch(() => {});
    },
  };
}

/** Deletes the exchange and queues a deployment with this prefix declared (tests and benchmarks clean up). */
export async function deleteRabbitTopology(url: string, prefix: string, consumers: readonly string[], retryDelaysMs: readonly number[]): Promise<void> {
  const connection = new Connection({ url, connectionName: `${prefix}-cleanup` });
  try {
    await connection.onConnect(5_000);
    for (const consumer of consumers) {
      for (const queue of queuesOf(`${prefix}.${consumer}`, retryDelaysMs)) await connection.queueDelete({ queue }).catch(() => {});
    }
    await connection.exchangeDelete({ exchange: `${prefix}.events` }).catch(() => {});
  } finally {
    await connection.close();
  }
}
