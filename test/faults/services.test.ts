import pg from "pg";
import { describe, expect, it } from "vitest";
import { Connection } from "rabbitmq-client";
import { postgresUrl } from "../support/databases.ts";
import { cuttableProxy, withPostgresStopped, withRabbitStopped } from "../support/faults.ts";

function amqpUrl(): string | undefined {
  const url = process.env.AMQP_URL;
  if (!url && process.env.CI === "true") throw new Error("AMQP_URL is not set: the fault suites cannot run in CI");
  return url;
}

const pgAnswers = async (url: string) => {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2_000 });
  client.on("error", () => {});
  try {
    await client.connect();
    await client.query("select 1");
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => {});
  }
};

// The harness itself: an outage it makes must be real, and it must always end.
describe.runIf(postgresUrl() && amqpUrl())("fault harness", () => {
  it("stops PostgreSQL for real and always starts it again", async () => {
    const url = postgresUrl() as string;
    await withPostgresStopped(500, async () => {
      expect(await pgAnswers(url)).toBe(false);
    });
    expect(await pgAnswers(url)).toBe(true);
  });

  it("stops RabbitMQ for real and always starts it again", async () => {
    const url = amqpUrl() as string;
    const reachable = async () => {
      const connection = new Connection({ url, retryLow: 100, retryHigh: 200 });
      connection.on("error", () => {});
      try {
        await connection.onConnect(2_000); // closes the connection itself when it gives up
      } catch {
        return false;
      }
      await connection.close();
      return true;
    };
    await withRabbitStopped(500, async () => {
      expect(await reachable()).toBe(false);
    });
    expect(await reachable()).toBe(true);
  });

  it("cuts and restores a proxied connection", async () => {
    const proxy = await cuttableProxy(Number(new URL(postgresUrl() as string).port || 5432));
    try {
      const url = proxy.url(postgresUrl() as string);
      expect(await pgAnswers(url)).toBe(true);
      proxy.cut();
      expect(await pgAnswers(url)).toBe(false);
      proxy.restore();
      expect(await pgAnswers(url)).toBe(true);
    } finally {
      await proxy.close();
    }
  });
});
