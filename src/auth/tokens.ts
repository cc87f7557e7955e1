import { createRemoteJWKSet, decodeProtectedHeader, errors, jwtVerify, SignJWT } from "jose";
import { z } from "zod";
import { type Clock, systemClock } from "../kit/clock.ts";
import { boundedLru } from "../kit/lru.ts";

export const ROLES = ["customer", "admin"] as const;
export type Role = (typeof ROLES)[number];

export interface Identity {
  tenantId: string;
  userId: string;
  roles: Role[];
}

/** Tenant and user ids: 1..128 printable characters (api-contract.md §2). */
export const PrintableId = z.string().regex(/^[\x20-\x7e]{1,128}$/, "must be 1 to 128 printable characters");

const Claims = z.object({
  sub: PrintableId,
  tid: PrintableId,
  roles: z.array(z.string()),
  exp: z.number(),
});

/** Where tenant and roles are read from (config.ts ClaimMapping); Orderly's own tokens: `tid` and `roles`. */
export interface ClaimMapping {
  tenantClaim: string;
  rolesClaim: string;
  fixedTenant: string | undefined;
  roleMap: Record<string, Role>;
}

export const ORDERLY_CLAIMS: ClaimMapping = { tenantClaim: "tid", rolesClaim: "roles", fixedTenant: undefined, roleMap: {} };

/** A claim by dotted path (`realm_access.roles`), or undefined. */
function claimAt(payload: Record<string, unknown>, path: string): unknown {
  let value: unknown = payload;
  for (const part of path.split(".")) {
    if (typeof value !== "object" || value === null || Array.isArray(value)) return undefined;
    value = (value as Record<string, unknown>)[part];
  }
  return value;
}

/** Sets a claim by dotted path, making the objects on the way. */
function setClaim(payload: Record<string, unknown>, path: string, value: unknown): void {
  const parts = path.split(".");
  let at = payload;
  for (const part of parts.slice(0, -1)) at = (at[part] ??= {}) as Record<string, unknown>;
  at[parts.at(-1) as string] = value;
}

/** Parses `1h`, `30m`, `45s`, `7d` into seconds. */
export function parseTtl(text: string): number | undefined {
  const match = /^(\d+)([smhd])$/.exec(text);
  if (!match) return undefined;
  const unit = { s: 1, m: 60, h: 3600, d: 86400 }[match[2] as "s" | "m" | "h" | "d"];
  return Number(match[1]) * unit;
}

/** How many verified tokens are remembered, and for how long at most (a key the JWKS drops stops working within this). */
const CACHE_MAX_TOKENS = 10_000;
const CACHE_MAX_MS = 5 * 60_000;

/** What a caller gets: its own object, so nothing a request does to it reaches the remembered one. */
const copyOf = (identity: Identity): Identity => ({ tenantId: identity.tenantId, userId: identity.userId, roles: [...identity.roles] });

/**
 * Access tokens: HS256 with the shared secret, and/or RS256/ES256 keys from a JWKS URL (the
 * production alternative: the identity provider signs, Orderly only verifies). Signing (CLI, demo,
 * tests) needs the secret.
 *
 * Verifying is on every request, so the work that can be done once is: the secret is imported as a
 * CryptoKey once (jose would import raw bytes again on every call); jose's remote key set keeps the
 * fetched JWKS for 10 min, fetches once for any number of concurrent callers, and keeps the imported
 * keys. A token that verified is remembered by its exact text until its `exp` (5 min at most), read
 * on `clock`; any other text, a forged signature or `alg` included, is verified in full. A token that
 * failed is never remembered.
 */
export function createTokens(options: {
  secret?: string | undefined;
  jwksUrl?: string | undefined;
  /** When set, a token must carry this `iss` / `aud` (and tokens signed here carry them). */
  issuer?: string | undefined;
  audience?: string | undefined;
  claims?: ClaimMapping;
  clock?: Clock;
  cacheSize?: number;
}) {
  const clock = options.clock ?? systemClock;
  const mapping = options.claims ?? ORDERLY_CLAIMS;
  const secretKey = options.secret
    ? crypto.subtle.importKey("raw", new TextEncoder().encode(options.secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign", "verify"])
    : undefined;
  const keySet = options.jwksUrl ? createRemoteJWKSet(new URL(options.jwksUrl), { cooldownDuration: 30_000, timeoutDuration: 5_000 }) : undefined;
  const verified = boundedLru<string, { identity: Identity; untilMs: number }>(options.cacheSize ?? CACHE_MAX_TOKENS);

  async function verifyAny(token: string, currentDate: Date) {
    const { alg } = decodeProtectedHeader(token);
    // Only these algorithms, each with its own kind of key: `alg: none` and confusions fail here.
    const required = {
      requiredClaims: ["exp", "sub"],
      currentDate,
      ...(options.issuer ? { issuer: options.issuer } : {}),
      ...(options.audience ? { audience: options.audience } : {}),
    };
    if (alg === "HS256" && secretKey) return jwtVerify(token, await secretKey, { algorithms: ["HS256"], ...required });
    if ((alg === "RS256" || alg === "ES256") && keySet) return jwtVerify(token, keySet, { algorithms: ["RS256", "ES256"], ...required });
    return undefined;
  }

  async function verifyInFull(token: string, now: Date): Promise<Identity | undefined> {
    try {
      const result = await verifyAny(token, now);
      if (!result) return undefined;
      const claims = Claims.safeParse({
        sub: result.payload.sub,
        tid: mapping.fixedTenant ?? claimAt(result.payload, mapping.tenantClaim),
        roles: claimAt(result.payload, mapping.rolesClaim),
        exp: result.payload.exp,
      });
      if (!claims.success) return undefined;
      const named = claims.data.roles.map((r) => mapping.roleMap[r] ?? r);
      const roles = ROLES.filter((r) => named.includes(r));
      if (roles.length === 0) return undefined;
      const identity = { tenantId: claims.data.tid, userId: claims.data.sub, roles };
      verified.set(token, { identity, untilMs: Math.min(claims.data.exp * 1000, now.getTime() + CACHE_MAX_MS) });
      return copyOf(identity);
    } catch (error) {
      if (error instanceof errors.JOSEError || error instanceof TypeError) return undefined;
      throw error;
    }
  }

  return {
    async sign(identity: Identity, ttlSeconds = 3600): Promise<string> {
      if (!secretKey) throw new Error("signing tokens needs ORDERLY_JWT_SECRET");
      const nowS = Math.floor(clock.now().getTime() / 1000);
      // The claims where this deployment reads them, so its own tokens verify under any mapping.
      const payload: Record<string, unknown> = {};
      if (!mapping.fixedTenant) setClaim(payload, mapping.tenantClaim, identity.tenantId);
      setClaim(payload, mapping.rolesClaim, identity.roles);
      const jwt = new SignJWT(payload).setProtectedHeader({ alg: "HS256", typ: "JWT" }).setSubject(identity.userId).setIssuedAt(nowS).setExpirationTime(nowS + ttlSeconds);
      if (options.issuer) jwt.setIssuer(options.issuer);
      if (options.audience) jwt.setAudience(options.audience);
      return jwt.sign(await secretKey);
    },

    /** The identity of a valid token; undefined for a missing, expired, forged or malformed one. */
    async verify(token: string): Promise<Identity | undefined> {
      const now = clock.now();
      const known = verified.get(token);
      // jose refuses a token once `exp <= now` in whole seconds: the same instant as `now >= exp * 1000`.
      if (known && now.getTime() < known.untilMs) return copyOf(known.identity);
      if (known) verified.delete(token);
      return verifyInFull(token, now);
    },

    /** Whether this signs (and verifies) with a secret: the `secret` identity provider. */
    get canSign(): boolean {
      return secretKey !== undefined;
    },

    /** How many verified tokens are remembered now (never more than the cache's size). */
    get cachedTokens(): number {
      return verified.size;
    },
  };
}

export type Tokens = ReturnType<typeof createTokens>;
