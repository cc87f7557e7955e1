import { setTimeout as sleep } from "node:timers/promises";
import { Client, InvalidCredentialsError } from "ldapts";
import { ok, type Outcome, refuse } from "../kit/outcome.ts";
import { type Identity, ROLES, type Role } from "./tokens.ts";

/** Where and how to look people up in a directory (ORDERLY_LDAP_*, config.ts). */
export interface LdapConfig {
  url: string;
  /** The service account that searches for the user; anonymous search when unset. */
  bindDn: string | undefined;
  bindPassword: string | undefined;
  /** Where users are, and the filter that finds one: `{username}` is replaced by the escaped name. */
  userBase: string;
  userFilter: string;
  /** The entry's attribute that is the user's id in Orderly (so `Alice` and `alice` are one user). */
  userIdAttribute: string;
  /** Where groups are, and the filter that finds a user's: `{dn}` is replaced by the user's escaped DN. */
  groupBase: string;
  groupFilter: string;
  /** Group `cn` → role. A user in no mapped group cannot sign in. */
  roleMap: Record<string, Role>;
  /** The user's attribute that names their tenant, or one tenant for the whole directory. */
  tenantAttribute: string | undefined;
  fixedTenant: string | undefined;
  timeoutMs: number;
  /** Every answer, right or wrong, takes at least this long, so timing tells nothing about users or passwords. */
  answerAfterMs: number;
}

export interface Credentials {
  tenantId: string;
  username: string;
  password: string;
}

export type SignInRefusal = "INVALID_CREDENTIALS" | "NO_ROLE" | "DIRECTORY_UNAVAILABLE";

/**
 * Escapes a value for an LDAP search filter (RFC 4515 §3): `*`, `(`, `)`, `\` and NUL become `\XX`,
 * so a username such as `*)(uid=*` is looked for literally and never widens the filter.
 */
export function escapeFilterValue(value: string): string {
  return value.replace(/[*()\\\0]/g, (c) => `\\${c.charCodeAt(0).toString(16).padStart(2, "0")}`);
}

const first = (value: string | string[] | Buffer | Buffer[] | undefined): string | undefined => {
  const one = Array.isArray(value) ? value[0] : value;
  return one === undefined ? undefined : one.toString();
};
const all = (value: string | string[] | Buffer | Buffer[] | undefined): string[] => (value === undefined ? [] : [value].flat().map((v) => v.toString()));

/**
 * Sign-in against an LDAP directory (api-contract.md §8), with ldapts: the service account finds the
 * user's entry by an escaped filter; a bind as that entry with the given password checks the
 * password (an empty password is refused first: a directory takes it as an anonymous bind); the
 * user's groups give the roles, an attribute (or configuration) the tenant. Any failure to reach or
 * read the directory is DIRECTORY_UNAVAILABLE, never a refusal of the user.
 */
export function createLdapSignIn(config: LdapConfig) {
  const connect = () => new Client({ url: config.url, timeout: config.timeoutMs, connectTimeout: config.timeoutMs, strictDN: true });

  // A template's placeholder replaced by a function: a string replacement would read `$&`, `$'` in the value.
  const fill = (template: string, placeholder: string, value: string) => template.replaceAll(placeholder, () => escapeFilterValue(value));

  async function lookUp(credentials: Credentials): Promise<Outcome<Identity, SignInRefusal>> {
    const search = connect();
    let userDn: string | undefined;
    let userId: string | undefined;
    let tenantId: string | undefined;
    let roles: Role[] = [];
    try {
      if (config.bindDn) await search.bind(config.bindDn, config.bindPassword ?? "");
      const { searchEntries: users } = await search.search(config.userBase, {
        scope: "sub",
        filter: fill(config.userFilter, "{username}", credentials.username),
        attributes: [config.userIdAttribute, ...(config.tenantAttribute ? [config.tenantAttribute] : [])],
        sizeLimit: 2,
      });
      // Exactly one (a filter that matches several people is never a sign-in).
      const user = users.length === 1 ? users[0] : undefined;
      if (user) {
        userDn = user.dn;
        userId = first(user[config.userIdAttribute]);
        tenantId = config.fixedTenant ?? (config.tenantAttribute ? first(user[config.tenantAttribute]) : undefined);
        const { searchEntries: groups } = await search.search(config.groupBase, {
          scope: "sub",
          filter: fill(config.groupFilter, "{dn}", user.dn),
          attributes: ["cn"],
        });
        const named = new Set(groups.flatMap((g) => all(g.cn)).flatMap((cn) => (config.roleMap[cn] ? [config.roleMap[cn]] : [])));
        roles = ROLES.filter((r) => named.has(r));
      }
    } finally {
      await search.unbind().catch(() => {});
    }

    // A bind either way, so an unknown user takes as long as a known one with a wrong password.
    const asUser = connect();
    let bound = false;
    try {
      await asUser.bind(userDn ?? `cn=orderly-no-such-user,${config.userBase}`, credentials.password);
      bound = true;
    } catch (error) {
      if (!(error instanceof InvalidCredentialsError)) throw error;
    } finally {
      await asUser.unbind().catch(() => {});
    }
    if (!bound || !userDn || !userId) return refuse("INVALID_CREDENTIALS");
    // A right password for another tenant's user is still the wrong credentials for this tenant.
    if (tenantId !== credentials.tenantId) return refuse("INVALID_CREDENTIALS");
    if (roles.length === 0) return refuse("NO_ROLE");
    return ok({ tenantId, userId, roles });
  }

  return {
    async signIn(credentials: Credentials): Promise<Outcome<Identity, SignInRefusal>> {
      // Real elapsed time (not the injectable clock): this is about what a caller can measure.
      const started = performance.now();
      let outcome: Outcome<Identity, SignInRefusal>;
      if (credentials.password === "") outcome = refuse("INVALID_CREDENTIALS");
      else {
        try {
          outcome = await lookUp(credentials);
        } catch {
          outcome = refuse("DIRECTORY_UNAVAILABLE");
        }
      }
      const left = started + config.answerAfterMs - performance.now();
      if (left > 0) await sleep(left);
      return outcome;
    },
  };
}

