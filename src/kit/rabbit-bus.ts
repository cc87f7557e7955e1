import type { Logger } from "pino";
import { type AsyncMessage, Connection, type Consumer } from "rabbitmq-client";
import type { Bus, BusMessage, Subscription } from "./bus.ts";

const ATTEMPT = "x-orderly-attempt";
const waitQueue = (queue: string, delayMs: number) => `${queue}.retry.${delayMs}ms`;
const TOPIC = "x-orderly-topic";
const TENANT = "x-orderly-tenant";

export interface RabbitBusOptions {
  url: string;
  log: Logger;
  /** Delay of each redelivery level; past the last the message is parked and dead-lettered. */
  retryDelaysMs: number[];
  /** Called once a message is parked, to record the dead letter where operators see it. */
  onDeadLetter(message: BusMessage, consumer: string, reason: string): Promise<void>;
  /** Names of the exchange and queues start with this (tests isolate themselves with it). */
  prefix?: string;
  prefetch?: number;
}

/**
 * RabbitMQ through rabbitmq-client, which re-connects, re-declares and re-subscribes by itself.
 * A topic exchange; one durable queue per consumer; publisher confirms; manual acks with prefetch.
 * A failed message goes to the wait queue of its retry level, whose queue-level TTL dead-letters it
 * back to the work queue (one queue per level: per-message TTLs on one queue block at its head);
 * past the last level it is parked and recorded as a dead letter.
 */
export function createRabbitBus(options: RabbitBusOptions): Bus & { connection: Connection; purge(): Promise<void> } {
  const { log } = options;
  const prefix = options.prefix ?? "orderly";
  const exchange = `${prefix}.events`;
  const connection = new Connection({ url: options.url, connectionName: prefix, retryLow: 200, retryHigh: 5_000 });
  connection.on("error", (error) => log.warn({ err: error }, "RabbitMQ connection error; reconnecting"));
  const publisher = connection.createPublisher({ confirm: true, maxAttempts: 3, exchanges: [{ exchange, type: "topic", durable: true }] });
  const consumers: Consumer[] = [];
  const declared: string[] = [];

  const envelope = (message: BusMessage, extra: Record<string, unknown> = {}) => ({
    messageId: message.id,
    durable: true,
    contentType: "application/json",
    headers: { [TENANT]: message.tenantId, [TOPIC]: message.topic, ...extra },
  });

  const fromDelivery = (msg: AsyncMessage): BusMessage => ({
    id: msg.messageId ?? "",
    tenantId: String(msg.headers?.[TENANT] ?? ""),
    topic: String(msg.headers?.[TOPIC] ?? msg.routingKey),
    payload: msg.body,
  });

  return {
    connection,

    async publish(message) {
      await publisher.send({ exchange, routingKey: message.topic, ...envelope(message) }, message.payload);
    },

    async subscribe({ consumer, topics, handler }: Subscription) {
      const queue = `${prefix}.${consumer}`;
      const parking = `${queue}.parking`;
      // Named by their delay: a queue's TTL cannot change, so new delays get new queues.
      for (const delay of options.retryDelaysMs) {
        await connection.queueDeclare({
          queue: waitQueue(queue, delay),
          durable: true,
          arguments: { "x-message-ttl": delay, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": queue },
        });
        declared.push(waitQueue(queue, delay));
      }
      await connection.queueDeclare({ queue: parking, durable: true });
      declared.push(parking, queue);
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
          } catch (error) {
            const attempt = Number(msg.headers?.[ATTEMPT] ?? 0);
            const reason = error instanceof Error ? error.message : String(error);
            if (attempt < options.retryDelaysMs.length) {
              const delay = options.retryDelaysMs[attempt] as number;
              await publisher.send({ exchange: "", routingKey: waitQueue(queue, delay), ...envelope(message, { [ATTEMPT]: attempt + 1 }) }, message.payload);
            } else {
              await publisher.send({ exchange: "", routingKey: parking, ...envelope(message, { [ATTEMPT]: attempt, "x-orderly-reason": reason }) }, message.payload);
              await options.onDeadLetter(message, consumer, reason);
            }
          }
          // Returning acks: the message now lives in its wait or parking queue (sent with confirms).
        },
      );
      sub.on("error", (error) => log.warn({ err: error, consumer }, "RabbitMQ consumer error"));
      consumers.push(sub);
    },

    async ping() {
      if (!connection.ready) throw new Error("RabbitMQ is not connected");
    },

    async close() {
      await Promise.all(consumers.map((c) => c.close()));
      await publisher.close();
      await connection.close();
    },

    /** Deletes this bus's queues and exchange (tests). */
    async purge() {
      for (const queue of declared) await connection.queueDelete({ queue }).catch(() => {});
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
      const queue = `${prefix}.${consumer}`;
      for (const name of [queue, `${queue}.parking`, ...retryDelaysMs.map((delay) => waitQueue(queue, delay))]) {
        await connection.queueDelete({ queue: name }).catch(() => {});
      }
    }
    await connection.exchangeDelete({ exchange: `${prefix}.events` }).catch(() => {});
  } finally {
    await connection.close();
  }
}
