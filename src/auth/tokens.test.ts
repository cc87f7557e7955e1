import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { manualClock } from "../kit/clock.ts";
import { createTokens, type Identity } from "./tokens.ts";

const SECRET = "tokens-test-secret-tokens-test-secret-0123";
const sam: Identity = { tenantId: "north", userId: "sam", roles: ["customer"] };

const b64 = (value: object) => Buffer.from(JSON.stringify(value)).toString("base64url");
const parts = (token: string) => token.split(".") as [string, string, string];

describe("verified tokens are remembered, forged ones never pass", () => {
  it("refuses a changed signature, a changed payload and alg none after the genuine token was remembered", async () => {
    const tokens = createTokens({ secret: SECRET });
    const genuine = await tokens.sign(sam);
    expect(await tokens.verify(genuine)).toEqual(sam);
    expect(await tokens.verify(genuine)).toEqual(sam); // from the cache
    expect(tokens.cachedTokens).toBe(1);

    const [header, payload, signature] = parts(genuine);
    // Flip one character in the middle of the signature (the last one may only carry padding bits).
    const i = Math.floor(signature.length / 2);
    const flipped = signature.slice(0, i) + (signature[i] === "A" ? "B" : "A") + signature.slice(i + 1);
    expect(await tokens.verify(`${header}.${payload}.${flipped}`)).toBeUndefined();

    const claims = JSON.parse(Buffer.from(payload, "base64url").toString()) as Record<string, unknown>;
    const promoted = b64({ ...claims, roles: ["admin"] });
    expect(await tokens.verify(`${header}.${promoted}.${signature}`)).toBeUndefined();

    const none = b64({ alg: "none", typ: "JWT" });
    expect(await tokens.verify(`${none}.${payload}.`)).toBeUndefined();
    expect(await tokens.verify(`${none}.${payload}.${signature}`)).toBeUndefined();

    // A token signed with another secret, for the same identity.
    const stranger = await createTokens({ secret: `${SECRET}-other` }).sign(sam);
    expect(await tokens.verify(stranger)).toBeUndefined();
    // None of the refused ones was remembered; the genuine one still works.
    expect(tokens.cachedTokens).toBe(1);
    expect(await tokens.verify(genuine)).toEqual(sam);
  });

  it("stops accepting a remembered token the moment its exp passes on the clock", async () => {
    const clock = manualClock(new Date("2026-03-01T12:00:00Z"));
    const tokens = createTokens({ secret: SECRET, clock });
    const token = await tokens.sign(sam, 60);
    expect(await tokens.verify(token)).toEqual(sam);
    clock.advance(59_999);
    expect(await tokens.verify(token)).toEqual(sam);
    expect(tokens.cachedTokens).toBe(1);
    clock.advance(1);
    expect(await tokens.verify(token)).toBeUndefined();
    expect(tokens.cachedTokens).toBe(0);
    // Not remembered as a failure either: jose refuses it again on its own clock reading.
    expect(await tokens.verify(token)).toBeUndefined();
  });

  it("re-verifies a long-lived token after five minutes instead of trusting the cache until exp", async () => {
    const clock = manualClock(new Date("2026-03-01T12:00:00Z"));
    const tokens = createTokens({ secret: SECRET, clock });
    const token = await tokens.sign(sam, 24 * 3600);
    await tokens.verify(token);
    clock.advance(5 * 60_000);
    // Verified in full again (and remembered again): still valid.
    expect(await tokens.verify(token)).toEqual(sam);
    expect(tokens.cachedTokens).toBe(1);
  });

  it("never remembers more tokens than its size", async () => {
    const tokens = createTokens({ secret: SECRET, cacheSize: 50 });
    const many = await Promise.all(Array.from({ length: 200 }, (_, i) => tokens.sign({ ...sam, userId: `user-${i}` })));
    for (const token of many) expect(await tokens.verify(token)).toBeDefined();
    expect(tokens.cachedTokens).toBe(50);
    // The forgotten ones still verify, in full.
    expect((await tokens.verify(many[0] as string))?.userId).toBe("user-0");
  });

  it("hands out a copy: a caller changing its identity does not change the next caller's", async () => {
    const tokens = createTokens({ secret: SECRET });
    const token = await tokens.sign(sam);
    const first = (await tokens.verify(token)) as Identity;
    first.roles.push("admin");
    first.userId = "mallory";
    expect(await tokens.verify(token)).toEqual(sam);
  });
});

describe("the JWKS key set", () => {
  let server: Server;
  let url: string;
  let fetches = 0;
  const keys = {} as Record<"RS256" | "ES256", CryptoKeyPair>;

  beforeAll(async () => {
    keys.RS256 = await generateKeyPair("RS256");
    keys.ES256 = await generateKeyPair("ES256");
    const jwks = {
      keys: [
        { ...(await exportJWK(keys.RS256.publicKey)), kid: "rsa-1", alg: "RS256", use: "sig" },
        { ...(await exportJWK(keys.ES256.publicKey)), kid: "ec-1", alg: "ES256", use: "sig" },
      ],
    };
    server = createServer((_req, res) => {
      fetches++;
      // Slow enough that concurrent first callers all wait on the same fetch.
      setTimeout(() => res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(jwks)), 100);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/.well-known/jwks.json`;
  });
  afterAll(() => new Promise<void>((done) => server.close(() => done())));

  const token = (alg: "RS256" | "ES256", kid: string, key: CryptoKey, userId: string) =>
    new SignJWT({ tid: "idp", roles: ["customer"] }).setProtectedHeader({ alg, kid }).setSubject(userId).setExpirationTime("5m").sign(key);

  it("is fetched once for many concurrent first verifications, then served from memory", async () => {
    fetches = 0;
    const tokens = createTokens({ jwksUrl: url });
    const signed = await Promise.all(
      Array.from({ length: 40 }, (_, i) => (i % 2 ? token("RS256", "rsa-1", keys.RS256.privateKey, `u${i}`) : token("ES256", "ec-1", keys.ES256.privateKey, `u${i}`))),
    );
    const identities = await Promise.all(signed.map((t) => tokens.verify(t)));
    expect(identities.map((id) => id?.userId)).toEqual(signed.map((_, i) => `u${i}`));
    expect(fetches).toBe(1);
    // New tokens (not in the token cache) verify against the kept key set.
    expect((await tokens.verify(await token("RS256", "rsa-1", keys.RS256.privateKey, "later")))?.userId).toBe("later");
    expect(fetches).toBe(1);
  });

  it("refuses a token of an unknown key, asking the provider again at most once per cooldown", async () => {
    fetches = 0;
    const tokens = createTokens({ jwksUrl: url });
    expect(await tokens.verify(await token("RS256", "rsa-1", keys.RS256.privateKey, "sam"))).toBeDefined();
    const stranger = await generateKeyPair("RS256");
    const forged = await Promise.all(Array.from({ length: 10 }, (_, i) => token("RS256", `rogue-${i}`, stranger.privateKey, "sam")));
    for (const t of forged) expect(await tokens.verify(t)).toBeUndefined();
    // Signed by a stranger under a known kid: refused without any fetch.
    expect(await tokens.verify(await token("RS256", "rsa-1", stranger.privateKey, "sam"))).toBeUndefined();
    expect(fetches).toBe(1);
    expect(tokens.cachedTokens).toBe(1);
  });
});

describe("an identity provider's tokens", () => {
  let idp: CryptoKeyPair;
  let server: Server;
  let url: string;
  beforeAll(async () => {
    idp = await generateKeyPair("RS256");
    const jwks = { keys: [{ ...(await exportJWK(idp.publicKey)), kid: "idp-1", alg: "RS256", use: "sig" }] };
    server = createServer((_req, res) => res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(jwks)));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks`;
  });
  afterAll(() => new Promise<void>((done) => server.close(() => done())));

  /** A token as a Keycloak-like provider issues it: roles under realm_access, no tenant claim. */
  const issued = (claims: Record<string, unknown>, iss = "https://idp.example/realms/shop", aud: string | string[] = "orderly") =>
    new SignJWT(claims).setProtectedHeader({ alg: "RS256", kid: "idp-1" }).setSubject("kc-user-1").setIssuer(iss).setAudience(aud).setExpirationTime("5m").sign(idp.privateKey);

  it("are read through the claim mapping: roles by path and by the provider's names, a fixed tenant", async () => {
    const tokens = createTokens({
      jwksUrl: url,
      issuer: "https://idp.example/realms/shop",
      audience: "orderly",
      claims: { tenantClaim: "tid", rolesClaim: "realm_access.roles", fixedTenant: "shop-1", roleMap: { shopper: "customer", "shop-ops": "admin" } },
    });
    expect(await tokens.verify(await issued({ realm_access: { roles: ["offline_access", "shopper"] } }))).toEqual({ tenantId: "shop-1", userId: "kc-user-1", roles: ["customer"] });
    expect((await tokens.verify(await issued({ realm_access: { roles: ["shop-ops", "shopper"] } }, undefined, ["account", "orderly"])))?.roles).toEqual(["customer", "admin"]);
    // No role Orderly knows, roles where the mapping does not look, another issuer or audience: refused.
    expect(await tokens.verify(await issued({ realm_access: { roles: ["offline_access"] } }))).toBeUndefined();
    expect(await tokens.verify(await issued({ roles: ["shopper"] }))).toBeUndefined();
    expect(await tokens.verify(await issued({ realm_access: { roles: ["shopper"] } }, "https://evil.example/realms/shop"))).toBeUndefined();
    expect(await tokens.verify(await issued({ realm_access: { roles: ["shopper"] } }, undefined, "another-api"))).toBeUndefined();
  });

  it("sign and verify alike under a mapping: Orderly's own tokens carry the claims where it reads them", async () => {
    const tokens = createTokens({
      secret: SECRET,
      issuer: "orderly-test",
      audience: "orderly",
      claims: { tenantClaim: "org.id", rolesClaim: "access.roles", fixedTenant: undefined, roleMap: {} },
    });
    const signed = await tokens.sign(sam);
    const payload = JSON.parse(Buffer.from(parts(signed)[1], "base64url").toString()) as Record<string, unknown>;
    expect(payload).toMatchObject({ org: { id: "north" }, access: { roles: ["customer"] }, iss: "orderly-test", aud: "orderly", sub: "sam" });
    expect(await tokens.verify(signed)).toEqual(sam);
    // A token of the default shape (tid, roles, no iss/aud) is refused by this deployment.
    expect(await tokens.verify(await createTokens({ secret: SECRET }).sign(sam))).toBeUndefined();
  });
});
