import { createRemoteJWKSet, decodeProtectedHeader, errors, jwtVerify, SignJWT } from "jose";
import { z } from "zod";

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
  roles: z.array(z.string()).transform((roles) => ROLES.filter((r) => roles.includes(r))),
  exp: z.number(),
});

/** Parses `1h`, `30m`, `45s`, `7d` into seconds. */
export function parseTtl(text: string): number | undefined {
  const match = /^(\d+)([smhd])$/.exec(text);
  if (!match) return undefined;
  const unit = { s: 1, m: 60, h: 3600, d: 86400 }[match[2] as "s" | "m" | "h" | "d"];
  return Number(match[1]) * unit;
}

/**
 * Access tokens: HS256 with the shared secret, and/or RS256/ES256 keys from a JWKS URL (the
 * production alternative: the identity provider signs, Orderly only verifies). Signing (CLI, demo,
 * tests) needs the secret.
 */
export function createTokens(options: { secret?: string | undefined; jwksUrl?: string | undefined }) {
  const key = options.secret ? new TextEncoder().encode(options.secret) : undefined;
  const keySet = options.jwksUrl ? createRemoteJWKSet(new URL(options.jwksUrl), { cooldownDuration: 30_000, timeoutDuration: 5_000 }) : undefined;

  async function verifyAny(token: string) {
    const { alg } = decodeProtectedHeader(token);
    // Only these algorithms, each with its own kind of key: `alg: none` and confusions fail here.
    if (alg === "HS256" && key) return jwtVerify(token, key, { algorithms: ["HS256"], requiredClaims: ["exp", "sub"] });
    if ((alg === "RS256" || alg === "ES256") && keySet) return jwtVerify(token, keySet, { algorithms: ["RS256", "ES256"], requiredClaims: ["exp", "sub"] });
    return undefined;
  }

  return {
    async sign(identity: Identity, ttlSeconds = 3600): Promise<string> {
      if (!key) throw new Error("signing tokens needs ORDERLY_JWT_SECRET");
      return new SignJWT({ tid: identity.tenantId, roles: identity.roles })
        .setProtectedHeader({ alg: "HS256", typ: "JWT" })
        .setSubject(identity.userId)
        .setIssuedAt()
        .setExpirationTime(Math.floor(Date.now() / 1000) + ttlSeconds)
        .sign(key);
    },

    /** The identity of a valid token; undefined for a missing, expired, forged or malformed one. */
    async verify(token: string): Promise<Identity | undefined> {
      try {
        const verified = await verifyAny(token);
        if (!verified) return undefined;
        const claims = Claims.safeParse(verified.payload);
        if (!claims.success || claims.data.roles.length === 0) return undefined;
        return { tenantId: claims.data.tid, userId: claims.data.sub, roles: claims.data.roles };
      } catch (error) {
        if (error instanceof errors.JOSEError || error instanceof TypeError) return undefined;
        throw error;
      }
    },
  };
}

export type Tokens = ReturnType<typeof createTokens>;
