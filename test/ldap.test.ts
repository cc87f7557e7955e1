import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { escapeFilterValue } from "../src/auth/ldap.ts";
import { checkProduction, ConfigError, loadConfig } from "../src/config.ts";
import { openTestPglite } from "./support/databases.ts";
import { createHarness, type Harness } from "./support/harness.ts";
import { type Directory, READER, startDirectory, SUFFIX } from "./support/slapd.ts";

// Sign-in through a directory (api-contract.md §8) against a real slapd the test starts with its own
// configuration: group-to-role mapping, the tenant from an attribute, wrong passwords and unknown
// users answered alike and after the same delay, LDAP-injection attempts in the username, and a
// directory that is down (503, never 500).

const ANSWER_AFTER_MS = 300;
const PEOPLE = [
  { uid: "alice", password: "alice-pw", tenant: "acme", groups: ["shop-admins", "customers"] },
  { uid: "bob", password: "bob-pw", tenant: "acme", groups: ["customers"] },
  { uid: "carol", password: "carol-pw", tenant: "acme", groups: ["staff"] },
  { uid: "dave", password: "dave-pw", tenant: "globex", groups: ["customers"] },
];

const ldapEnv = (url: string): Record<string, string> => ({
  ORDERLY_LDAP_URL: url,
  ORDERLY_LDAP_BIND_DN: READER.dn,
  ORDERLY_LDAP_BIND_PASSWORD: READER.password,
  ORDERLY_LDAP_USER_BASE: `ou=people,${SUFFIX}`,
  ORDERLY_LDAP_GROUP_BASE: `ou=groups,${SUFFIX}`,
  ORDERLY_LDAP_ROLE_MAP: "shop-admins=admin,customers=customer",
  ORDERLY_LDAP_TENANT_ATTRIBUTE: "o",
  ORDERLY_LDAP_TIMEOUT_MS: "2000",
  ORDERLY_LDAP_ANSWER_AFTER_MS: String(ANSWER_AFTER_MS),
});

describe("sign-in through LDAP against a real slapd", () => {
  let directory: Directory;
  let h: Harness;

  const signIn = async (tenantId: string, username: string, password: string) => {
    const started = performance.now();
    const r = await h.call("POST", "/api/v1/auth/token", { body: { tenantId, username, password } });
    return { ...r, ms: performance.now() - started };
  };

  beforeAll(async () => {
    directory = await startDirectory(PEOPLE);
    h = await createHarness(await openTestPglite(), { env: ldapEnv(directory.url) });
  });
  afterAll(async () => {
    await h?.close();
    await directory?.close();
  });

  it("answers a token whose roles come from the user's groups and whose tenant from the user's entry", async () => {
    const r = await signIn("acme", "alice", "alice-pw");
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ tokenType: "Bearer", expiresIn: 3600 });
    expect(await h.services.tokens.verify(r.body.accessToken)).toEqual({ tenantId: "acme", userId: "alice", roles: ["customer", "admin"] });
    // The token works like any other: alice is an admin of acme.
    expect((await h.call("GET", "/api/v1/admin/status", { token: r.body.accessToken })).status).toBe(200);

    const bob = await signIn("acme", "bob", "bob-pw");
    expect(await h.services.tokens.verify(bob.body.accessToken)).toEqual({ tenantId: "acme", userId: "bob", roles: ["customer"] });
    expect((await h.call("GET", "/api/v1/admin/status", { token: bob.body.accessToken })).status).toBe(403);
  });

  it("refuses a wrong password, an unknown user, an empty password and another tenant's user alike, after the same delay as a right one", async () => {
    const right = await signIn("acme", "bob", "bob-pw");
    const refused = [
      await signIn("acme", "bob", "not-bobs"),
      await signIn("acme", "nobody", "whatever"),
      // An empty password is an anonymous bind to a directory: it must never sign anyone in.
      await signIn("acme", "bob", ""),
      // dave's right password, but dave is globex's.
      await signIn("acme", "dave", "dave-pw"),
    ];
    for (const r of refused) {
      expect([r.status, r.body.code]).toEqual([401, "INVALID_CREDENTIALS"]);
      expect(r.body.detail).toBe("the user name or the password is wrong");
      expect(r.ms).toBeGreaterThanOrEqual(ANSWER_AFTER_MS - 5);
    }
    expect(right.ms).toBeGreaterThanOrEqual(ANSWER_AFTER_MS - 5);
    expect((await signIn("globex", "dave", "dave-pw")).status).toBe(200);
  });

  it("names the user by the directory's uid, however the name was typed", async () => {
    const r = await signIn("acme", "BOB", "bob-pw");
    expect(r.status).toBe(200);
    expect((await h.services.tokens.verify(r.body.accessToken))?.userId).toBe("bob");
  });

  it("refuses a user the directory gives no role with 403", async () => {
    const r = await signIn("acme", "carol", "carol-pw");
    expect([r.status, r.body.code]).toEqual([403, "FORBIDDEN"]);
  });

  it("looks the username up literally: filter syntax in it never widens the search", async () => {
    // `$'` and `$&` would be read by a string replacement as "the text after / the match".
    for (const username of ["*", "al*", "*)(uid=*", "alice)(|(uid=*", "alice)(o=acme", "(uid=alice)", "alice\\", "a\\2a", "$'", "$&", "$`", "alice$'"]) {
      const r = await signIn("acme", username, "alice-pw");
      expect([username, r.status, r.body.code]).toEqual([username, 401, "INVALID_CREDENTIALS"]);
    }
    expect(escapeFilterValue("*)(uid=*\\")).toBe("\\2a\\29\\28uid=\\2a\\5c");
  });

  it("validates the body before asking the directory", async () => {
    expect((await h.call("POST", "/api/v1/auth/token", { body: { tenantId: "acme", username: "alice" } })).status).toBe(400);
    expect((await h.call("POST", "/api/v1/auth/token", { body: { tenantId: "acme", username: "bad\u0000name", password: "x" } })).status).toBe(400);
    expect((await h.call("POST", "/api/v1/auth/token", { body: { tenantId: "acme", username: "alice", password: "alice-pw", roles: ["admin"] } })).status).toBe(400);
  });

  it("answers 503 while the directory is down, and signs in again once it is back", async () => {
    await directory.stop();
    try {
      const r = await signIn("acme", "alice", "alice-pw");
      expect([r.status, r.body.code]).toEqual([503, "SERVICE_UNAVAILABLE"]);
      expect(r.headers["retry-after"]).toBeDefined();
    } finally {
      await directory.start();
    }
    expect((await signIn("acme", "alice", "alice-pw")).status).toBe(200);
  });

  it("answers 503, not 500, when the directory's address answers nothing at all", async () => {
    const unreachable = await createHarness(await openTestPglite(), { env: ldapEnv("ldap://127.0.0.1:9") });
    try {
      const r = await unreachable.call("POST", "/api/v1/auth/token", { body: { tenantId: "acme", username: "alice", password: "alice-pw" } });
      expect([r.status, r.body.code]).toEqual([503, "SERVICE_UNAVAILABLE"]);
    } finally {
      await unreachable.close();
    }
  });
});

describe("LDAP configuration", () => {
  it("answers 404 saying so when no directory is configured", async () => {
    const h = await createHarness(await openTestPglite());
    try {
      const r = await h.call("POST", "/api/v1/auth/token", { body: { tenantId: "acme", username: "alice", password: "alice-pw" } });
      expect([r.status, r.body.code, r.body.detail]).toEqual([404, "NOT_FOUND", "sign-in through a directory is not offered here (ORDERLY_LDAP_URL, ORDERLY_IDENTITY_PROVIDERS)"]);
    } finally {
      await h.close();
    }
  });

  it("is off without ORDERLY_LDAP_URL, and names what is missing with it", () => {
    expect(loadConfig({}).ldap).toBeUndefined();
    const base = ldapEnv("ldap://127.0.0.1:389");
    expect(loadConfig(base).ldap).toMatchObject({ userFilter: "(uid={username})", roleMap: { "shop-admins": "admin", customers: "customer" }, tenantAttribute: "o" });
    const without = (variable: string) => Object.fromEntries(Object.entries(base).filter(([k]) => k !== variable));
    expect(() => loadConfig(without("ORDERLY_LDAP_USER_BASE"))).toThrow(/^ORDERLY_LDAP_USER_BASE: is required/);
    expect(() => loadConfig(without("ORDERLY_LDAP_ROLE_MAP"))).toThrow(/^ORDERLY_LDAP_ROLE_MAP: is required/);
    expect(() => loadConfig(without("ORDERLY_LDAP_TENANT_ATTRIBUTE"))).toThrow(/^ORDERLY_LDAP_TENANT_ATTRIBUTE: or ORDERLY_LDAP_TENANT is required/);
    expect(loadConfig({ ...without("ORDERLY_LDAP_TENANT_ATTRIBUTE"), ORDERLY_LDAP_TENANT: "acme" }).ldap?.fixedTenant).toBe("acme");
    expect(() => loadConfig({ ...base, ORDERLY_LDAP_URL: "http://directory" })).toThrow(ConfigError);
    expect(() => loadConfig({ ...base, ORDERLY_LDAP_USER_FILTER: "(uid=alice)" })).toThrow(/must contain \{username\}/);
    // A fixed token tenant would put every directory user in it.
    expect(() => loadConfig({ ...base, ORDERLY_JWT_TENANT: "acme" })).toThrow(/^ORDERLY_JWT_TENANT: with ORDERLY_LDAP_URL/);
    expect(loadConfig({ ...without("ORDERLY_LDAP_TENANT_ATTRIBUTE"), ORDERLY_LDAP_TENANT: "acme", ORDERLY_JWT_TENANT: "acme" }).ldap?.fixedTenant).toBe("acme");
    // Production: passwords only over TLS, and a secret to sign with.
    const production = { ...base, NODE_ENV: "production", DATABASE_URL: "postgres://db/orderly", ORDERLY_WEBHOOK_SECRET: "w".repeat(16), ORDERLY_JWT_SECRET: "s".repeat(32) };
    expect(() => checkProduction(loadConfig(production))).toThrow(/^ORDERLY_LDAP_URL: must be ldaps:\/\//);
    expect(() => checkProduction(loadConfig({ ...production, ORDERLY_LDAP_URL: "ldaps://directory:636" }))).not.toThrow();
  });
});
