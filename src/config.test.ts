import { describe, expect, it } from "vitest";
import { checkProduction, ConfigError, loadConfig, parseServices } from "./config.ts";

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
      dbPreparedStatements: true,
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
    ["ORDERLY_DB_PREPARED_STATEMENTS", "yes"],
    ["ORDERLY_PLACEMENT", "xa"],
    ["ORDERLY_2PC_IN_DOUBT_MS", "10"],
    ["ORDERLY_RETENTION_HOURS", "12"],
    ["ORDERLY_RETENTION_HOURS", "a week"],
    ["ORDERLY_TRUST_PROXY", "everyone"],
    ["ORDERLY_TRUST_PROXY", "10.0.0.0/8,proxy.example"],
    ["ORDERLY_JWT_ROLES_CLAIM", "realm access"],
    ["ORDERLY_JWT_ROLE_MAP", "shopper=root"],
    ["ORDERLY_JWT_TENANT", "\u0007"],
    ["ORDERLY_SHUTDOWN_TIMEOUT_MS", "10"],
  ])("refuses %s=%s with an error naming the variable", (variable, value) => {
    expect(() => loadConfig({ [variable]: value })).toThrow(ConfigError);
    expect(() => loadConfig({ [variable]: value })).toThrow(new RegExp(`^${variable}: `));
  });

  it("reads retry delays as a comma list of milliseconds", () => {
    expect(loadConfig({}).retryDelaysMs).toEqual([1000, 2000, 4000, 8000, 16000]);
    expect(loadConfig({ ORDERLY_RETRY_DELAYS_MS: "500,1500" }).retryDelaysMs).toEqual([500, 1500]);
  });

  it("chooses identity providers by ORDERLY_IDENTITY_PROVIDERS, each of them configured, and ldap only beside secret", () => {
    expect(loadConfig({}).identityProviders).toBeUndefined();
    expect(loadConfig({ ORDERLY_IDENTITY_PROVIDERS: "jwks, secret", ORDERLY_JWKS_URL: "https://idp.example/jwks.json" }).identityProviders).toEqual(["jwks", "secret"]);
    const refused = (env: Record<string, string>) => {
      try {
        loadConfig(env);
      } catch (error) {
        return error instanceof ConfigError ? error.variable : error;
      }
      return undefined;
    };
    expect(refused({ ORDERLY_IDENTITY_PROVIDERS: "kerberos" })).toBe("ORDERLY_IDENTITY_PROVIDERS");
    expect(refused({ ORDERLY_IDENTITY_PROVIDERS: "jwks" })).toBe("ORDERLY_IDENTITY_PROVIDERS");
    expect(refused({ ORDERLY_IDENTITY_PROVIDERS: "ldap" })).toBe("ORDERLY_IDENTITY_PROVIDERS");
    const ldap = { ORDERLY_LDAP_URL: "ldap://127.0.0.1:389", ORDERLY_LDAP_USER_BASE: "ou=people,dc=x", ORDERLY_LDAP_ROLE_MAP: "staff=admin", ORDERLY_LDAP_TENANT: "t" };
    expect(refused({ ...ldap, ORDERLY_IDENTITY_PROVIDERS: "ldap" })).toBe("ORDERLY_IDENTITY_PROVIDERS");
    expect(loadConfig({ ...ldap, ORDERLY_IDENTITY_PROVIDERS: "secret,ldap" }).identityProviders).toEqual(["secret", "ldap"]);
  });

  it("refuses production without a database server, a webhook secret, or a way to verify tokens", () => {
    const ready = { NODE_ENV: "production", DATABASE_URL: "postgres://db/orderly", ORDERLY_WEBHOOK_SECRET: "w".repeat(16), ORDERLY_JWT_SECRET: "x".repeat(32) };
    expect(() => checkProduction(loadConfig(ready))).not.toThrow();
    expect(() => checkProduction(loadConfig({ ...ready, DATABASE_URL: "" }))).toThrow(/^DATABASE_URL: is required when NODE_ENV=production/);
    expect(() => checkProduction(loadConfig({ ...ready, ORDERLY_WEBHOOK_SECRET: "" }))).toThrow(/^ORDERLY_WEBHOOK_SECRET: /);
    expect(() => checkProduction(loadConfig({ ...ready, ORDERLY_JWT_SECRET: "" }))).toThrow(/^ORDERLY_JWT_SECRET: /);
    expect(() => checkProduction(loadConfig({ ...ready, ORDERLY_JWT_SECRET: "", ORDERLY_JWKS_URL: "https://idp.example/jwks" }))).not.toThrow();
    // A service's own database serves that service alone; the all-in-one needs DATABASE_URL.
    const ordersOnly = { ...ready, DATABASE_URL: "", ORDERLY_ORDERS_DATABASE_URL: "postgres://db/orders" };
    expect(() => checkProduction(loadConfig(ordersOnly), ["orders"])).not.toThrow();
    expect(() => checkProduction(loadConfig(ordersOnly), ["inventory"])).toThrow(/^DATABASE_URL: /);
    expect(() => checkProduction(loadConfig(ordersOnly), ["orders", "payments"])).toThrow(/^DATABASE_URL: /);
    expect(() => checkProduction(loadConfig(ordersOnly))).toThrow(/^DATABASE_URL: /);
    expect(() => checkProduction(loadConfig({ ...ready, ORDERLY_REFUND_URL: "http://psp.example/refunds" }))).toThrow(/^ORDERLY_REFUND_URL: must be https:/);
    expect(() => loadConfig({ ...ready, ORDERLY_WEBHOOK_SECRET: "short" })).toThrow(/^ORDERLY_WEBHOOK_SECRET: must be at least 16 characters/);
    // Outside production nothing of this is required: the embedded database and dev secrets serve.
    expect(() => checkProduction(loadConfig({}))).not.toThrow();
  });

  it("reads the proxies to trust as Fastify does: a flag, a hop count, or addresses", () => {
    expect(loadConfig({}).trustProxy).toBeUndefined();
    expect(loadConfig({ ORDERLY_TRUST_PROXY: "true" }).trustProxy).toBe(true);
    expect(loadConfig({ ORDERLY_TRUST_PROXY: "2" }).trustProxy).toBe(2);
    expect(loadConfig({ ORDERLY_TRUST_PROXY: "10.0.0.0/8, 127.0.0.1,loopback" }).trustProxy).toBe("10.0.0.0/8,127.0.0.1,loopback");
  });

  it("maps an identity provider's claims: tenant and roles claims by path, a fixed tenant, provider roles", () => {
    expect(loadConfig({}).jwtClaims).toEqual({ tenantClaim: "tid", rolesClaim: "roles", fixedTenant: undefined, roleMap: {} });
    expect(
      loadConfig({ ORDERLY_JWT_ROLES_CLAIM: "realm_access.roles", ORDERLY_JWT_TENANT: "shop-1", ORDERLY_JWT_ROLE_MAP: "shopper=customer,ops=admin" }).jwtClaims,
    ).toEqual({ tenantClaim: "tid", rolesClaim: "realm_access.roles", fixedTenant: "shop-1", roleMap: { shopper: "customer", ops: "admin" } });
  });

  it("parses service lists and refuses unknown names", () => {
    expect(parseServices("all")).toHaveLength(5);
    expect(parseServices("orders,inventory")).toEqual(["orders", "inventory"]);
    expect(() => parseServices("orders,billing")).toThrow(/^--services: unknown service "billing"/);
  });
});
