import { describe, expect, it } from "vitest";
import { ConfigError, loadConfig, parseServices } from "./config.ts";

describe("configuration", () => {
  it("has the contract's defaults", () => {
    expect(loadConfig({})).toMatchObject({
      port: 3000,
      host: "127.0.0.1",
      databaseUrl: undefined,
      dataDir: "./.orderly",
      paymentTimeoutMs: 900_000,
      rateLimitRps: 50,
      rateLimitBurst: 100,
      currency: "CNY",
      demo: undefined,
      dbPoolMax: 10,
      retentionHours: 168,
    });
  });

  it.each([
    ["PORT", "eighty"],
    ["PORT", "70000"],
    ["DATABASE_URL", "mysql://x"],
    ["DATABASE_URL", "not a url"],
    ["REDIS_URL", "http://x"],
    ["AMQP_URL", "::"],
    ["ORDERLY_PAYMENT_TIMEOUT_MS", "-5"],
    ["ORDERLY_CURRENCY", "yuan"],
    ["ORDERLY_DEMO", "yes"],
    ["ORDERLY_JWT_SECRET", "short"],
    ["ORDERLY_RETRY_DELAYS_MS", "1s,2s"],
    ["ORDERLY_DB_POOL_MAX", "0"],
    ["ORDERLY_RETENTION_HOURS", "12"],
    ["ORDERLY_RETENTION_HOURS", "a week"],
  ])("refuses %s=%s with an error naming the variable", (variable, value) => {
    expect(() => loadConfig({ [variable]: value })).toThrow(ConfigError);
    expect(() => loadConfig({ [variable]: value })).toThrow(new RegExp(`^${variable}: `));
  });

  it("reads retry delays as a comma list of milliseconds", () => {
    expect(loadConfig({}).retryDelaysMs).toEqual([1000, 2000, 4000, 8000, 16000]);
    expect(loadConfig({ ORDERLY_RETRY_DELAYS_MS: "500,1500" }).retryDelaysMs).toEqual([500, 1500]);
  });

  it("refuses production without a JWT secret", () => {
    expect(() => loadConfig({ NODE_ENV: "production" })).toThrow(/^ORDERLY_JWT_SECRET: /);
    expect(loadConfig({ NODE_ENV: "production", ORDERLY_JWT_SECRET: "x".repeat(32) }).production).toBe(true);
  });

  it("parses service lists and refuses unknown names", () => {
    expect(parseServices("all")).toHaveLength(5);
    expect(parseServices("orders,inventory")).toEqual(["orders", "inventory"]);
    expect(() => parseServices("orders,billing")).toThrow(/^--services: unknown service "billing"/);
  });
});
