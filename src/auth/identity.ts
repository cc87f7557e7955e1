import type { Outcome } from "../kit/outcome.ts";
import type { Credentials, SignInRefusal } from "./ldap.ts";
import type { Identity } from "./tokens.ts";

export const IDENTITY_PROVIDER_NAMES = ["secret", "jwks", "ldap"] as const;
export type IdentityProviderName = (typeof IDENTITY_PROVIDER_NAMES)[number];

/**
 * One way of telling who a caller is. A provider answers bearer tokens (Orderly's HS256 secret, an
 * identity provider's JWKS), or user names and passwords (an LDAP directory), or both; which
 * providers a process uses is configuration (ORDERLY_IDENTITY_PROVIDERS, config.ts).
 */
export interface IdentityProvider {
  readonly name: IdentityProviderName;
  /** Who a bearer token names; undefined when it is not a valid token of this provider's. */
  verifyToken?(token: string): Promise<Identity | undefined>;
  /** Who a user name and password name. */
  signIn?(credentials: Credentials): Promise<Outcome<Identity, SignInRefusal>>;
}

/** The providers a process uses, as the HTTP layer asks them. */
export interface Identities {
  readonly names: readonly IdentityProviderName[];
  /** The identity of the first provider that takes the token; undefined when none does. */
  verify(token: string): Promise<Identity | undefined>;
  /** Sign-in with a password, when a provider offers it (undefined: the route answers 404). */
  readonly signIn: ((credentials: Credentials) => Promise<Outcome<Identity, SignInRefusal>>) | undefined;
}

export function createIdentities(providers: readonly IdentityProvider[]): Identities {
  const verifiers = providers.flatMap((p) => (p.verifyToken ? [p.verifyToken.bind(p)] : []));
  const passwords = providers.find((p) => p.signIn);
  return {
    names: providers.map((p) => p.name),
    async verify(token) {
      // Each provider refuses at once a token signed with another's algorithm (tokens.ts), so asking in turn costs nothing.
      for (const verify of verifiers) {
        const identity = await verify(token);
        if (identity) return identity;
      }
      return undefined;
    },
    signIn: passwords?.signIn ? (credentials) => (passwords.signIn as NonNullable<IdentityProvider["signIn"]>)(credentials) : undefined,
  };
}
