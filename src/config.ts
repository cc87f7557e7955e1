import { z } from "zod";
import { IDENTITY_PROVIDER_NAMES, type IdentityProviderName } from "./auth/identity.ts";
import type { LdapConfig } from "./auth/ldap.ts";
import type { ClaimMapping } from "./auth/tokens.ts";

export const SERVICE_NAMES = ["orders", "inventory", "payments", "coupons", "shipping"] as const;
export type ServiceName = (typeof SERVICE_NAMES)[number];

/** A configuration value that stops start-up: the message is one line naming the variable. */
export class ConfigError extends Error {
  constructor(
    readonly variable: string,
    problem: string,
  ) {
    super(`${variable}: ${problem}`);
    this.name = "ConfigError";
  }
}

export interface Config {
  port: number;
  host: string;
  databaseUrl: string | undefined;
  /** ORDERLY_<SERVICE>_DATABASE_URL: a split service's own database. */
  serviceDatabaseUrls: Partial<Record<ServiceName, string>>;
  dataDir: string;
  redisUrl: string | undefined;
  amqpUrl: string | undefined;
  /** Names of the exchange and queues start with this, so deployments can share a broker. */
  amqpPrefix: string;
  jwtSecret: string | undefined;
  jwksUrl: string | undefined;
  /** ORDERLY_JWT_ISSUER / ORDERLY_JWT_AUDIENCE: when set, tokens must carry this `iss` / `aud`. */
  jwtIssuer: string | undefined;
  jwtAudience: string | undefined;
  /**
   * Where an identity provider's tokens carry what Orderly's carry as `tid` and `roles`:
   * ORDERLY_JWT_TENANT_CLAIM and ORDERLY_JWT_ROLES_CLAIM name the claims (a dotted path such as
   * `realm_access.roles`), ORDERLY_JWT_TENANT fixes the tenant for a provider with none, and
   * ORDERLY_JWT_ROLE_MAP (`provider-role=customer|admin,…`) names the provider's roles; a role already
   * called customer or admin needs no entry.
   */
  jwtClaims: ClaimMapping;
  /**
   * ORDERLY_IDENTITY_PROVIDERS (`secret,jwks,ldap`, any of them): who may tell Orderly who a caller is.
   * Undefined: every one configured. Production with an identity provider can leave out `secret`,
   * so that no token signed with a shared secret is taken.
   */
  identityProviders: IdentityProviderName[] | undefined;
  /** ORDERLY_LDAP_URL and the rest of ORDERLY_LDAP_*: sign-in against a directory (api-contract.md §8); undefined when unset. */
  ldap: LdapConfig | undefined;
  /** ORDERLY_TRUST_PROXY: Fastify's trustProxy (true, a hop count, or addresses and CIDRs); undefined trusts none. */
  trustProxy: boolean | number | string | undefined;
  webhookSecret: string | undefined;
  /**
   * ORDERLY_REFUND_URL: the payment provider's refund endpoint; money kept as refund_pending is given
   * back through it (src/flows/refunds.ts). Unset: nothing is refunded, and reconciliation flags it.
   */
  refundUrl: string | undefined;
  /** ORDERLY_REFUND_TIMEOUT_MS: how long one refund request may take. */
  refundTimeoutMs: number;
  paymentTimeoutMs: number;
  /**
   * ORDERLY_PLACEMENT: how the orders service of the split deployment places an order. `saga` (steps as
   * messages to their owners, each in its own transaction, compensated on a refusal) or `2pc` (the
   * coordinator runs every step on its owner's database, prepares each transaction and commits them
   * all after logging its decision: src/flows/two-phase-placement.ts). The all-in-one places in one
   * local transaction whatever this says.
   */
  placement: "saga" | "2pc";
  /** ORDERLY_2PC_IN_DOUBT_MS: a transaction prepared this long ago with no decision logged is rolled back by recovery. */
  twoPhaseInDoubtMs: number;
  /** Delays between retries of saga steps and outbox messages (split deployment). */
  retryDelaysMs: number[];
  /** ORDERLY_RETENTION_HOURS: how long sent messages, inbox rows, barriers and finished sagas are kept. */
  retentionHours: number;
  rateLimitRps: number;
  rateLimitBurst: number;
  /** ORDERLY_DB_POOL_MAX: connections per process to PostgreSQL. */
  dbPoolMax: number;
  /** ORDERLY_DB_PREPARED_STATEMENTS: statements with parameters prepared once per connection (off behind a pooler that cannot keep them). */
  dbPreparedStatements: boolean;
  /** ORDERLY_SETTLEMENT_BACKLOG: PENDING orders a process settles in the background before a request that adds one waits for room. */
  settlementBacklog: number;
  currency: string;
  /** ORDERLY_DEMO: undefined when unset, so `--demo` decides. */
  demo: boolean | undefined;
  production: boolean;
  logLevel: string;
  /** ORDERLY_SHUTDOWN_DELAY_MS: after SIGTERM, how long /readyz answers 503 before the server stops accepting. */
  shutdownDelayMs: number;
  /** ORDERLY_SHUTDOWN_TIMEOUT_MS: how long a shutdown may take in all before the process exits anyway. */
  shutdownTimeoutMs: number;
}


type Env = Record<string, string | undefined>;

const CLAIM_PATH = z.string().regex(/^[A-Za-z_][\w:-]*(\.[A-Za-z_][\w:-]*){0,4}$/, "must be a claim name or a dotted path such as realm_access.roles");

const ROLE_MAP = z
  .string()
  .regex(/^[^=,\s]+=(customer|admin)(,[^=,\s]+=(customer|admin))*$/, "must be a comma list of provider-role=customer|admin")
  .transform((list) => Object.fromEntries(list.split(",").map((pair) => pair.split("=") as [string, "customer" | "admin"])));

const LDAP_ROLE_MAP = z
  .string()
  .regex(/^[^=,]+=(customer|admin)(,[^=,]+=(customer|admin))*$/, "must be a comma list of group-cn=customer|admin")
  .transform((list) => Object.fromEntries(list.split(",").map((pair) => pair.split("=").map((part) => part.trim()) as [string, "customer" | "admin"])));

const PRINTABLE = z.string().regex(/^[\x20-\x7e]{1,1024}$/, "must be printable characters");

/** ORDERLY_LDAP_*: undefined without ORDERLY_LDAP_URL; otherwise complete, or a ConfigError naming what is missing. */
function ldapConfig(env: Env): LdapConfig | undefined {
  const url = parse(env, "ORDERLY_LDAP_URL", urlOf(["ldap:", "ldaps:"]), undefined);
  if (!url) return undefined;
  const userBase = parse(env, "ORDERLY_LDAP_USER_BASE", PRINTABLE, undefined);
  if (!userBase) throw new ConfigError("ORDERLY_LDAP_USER_BASE", "is required with ORDERLY_LDAP_URL (where to look users up, such as ou=people,dc=example,dc=com)");
  const roleMap = parse(env, "ORDERLY_LDAP_ROLE_MAP", LDAP_ROLE_MAP, undefined);
  if (!roleMap) throw new ConfigError("ORDERLY_LDAP_ROLE_MAP", "is required with ORDERLY_LDAP_URL (which groups give which role, such as shop-admins=admin,customers=customer)");
  const tenantAttribute = parse(env, "ORDERLY_LDAP_TENANT_ATTRIBUTE", z.string().regex(/^[A-Za-z][\w-]{0,63}$/, "must be an attribute name"), undefined);
  const fixedTenant = parse(env, "ORDERLY_LDAP_TENANT", z.string().regex(/^[\x20-\x7e]{1,128}$/, "must be 1 to 128 printable characters"), undefined);
  if (!tenantAttribute && !fixedTenant) throw new ConfigError("ORDERLY_LDAP_TENANT_ATTRIBUTE", "or ORDERLY_LDAP_TENANT is required with ORDERLY_LDAP_URL (where a user's tenant comes from)");
  const template = (placeholder: string) => z.string().regex(/^\(.*\)$/, "must be a filter in parentheses").refine((f) => f.includes(placeholder), `must contain ${placeholder}`);
  return {
    url,
    bindDn: parse(env, "ORDERLY_LDAP_BIND_DN", PRINTABLE, undefined),
    bindPassword: parse(env, "ORDERLY_LDAP_BIND_PASSWORD", z.string().min(1), undefined),
    userBase,
    userFilter: parse(env, "ORDERLY_LDAP_USER_FILTER", template("{username}"), "(uid={username})"),
    userIdAttribute: parse(env, "ORDERLY_LDAP_USER_ID_ATTRIBUTE", z.string().regex(/^[A-Za-z][\w-]{0,63}$/, "must be an attribute name"), "uid"),
    groupBase: parse(env, "ORDERLY_LDAP_GROUP_BASE", PRINTABLE, userBase),
    groupFilter: parse(env, "ORDERLY_LDAP_GROUP_FILTER", template("{dn}"), "(|(member={dn})(uniqueMember={dn}))"),
    roleMap,
    tenantAttribute,
    fixedTenant,
    timeoutMs: parse(env, "ORDERLY_LDAP_TIMEOUT_MS", integer(100, 60_000), 5_000),
    answerAfterMs: parse(env, "ORDERLY_LDAP_ANSWER_AFTER_MS", integer(0, 10_000), 400),
  };
}

// Fastify's trustProxy: true/false, a number of hops, or a comma list of addresses and CIDRs.
const TRUST_PROXY = z.string().transform((value, context) => {
  if (value === "true") return true;
  if (value === "false") return false;
  if (/^\d{1,2}$/.test(value)) return Number(value);
  const entries = value.split(",").map((e) => e.trim());
  if (entries.every((e) => /^[0-9a-fA-F.:]+(\/\d{1,3})?$/.test(e) || ["loopback", "linklocal", "uniquelocal"].includes(e))) return entries.join(",");
  context.addIssue({ code: "custom", message: "must be true, false, a hop count, or a comma list of addresses and CIDRs (or loopback, linklocal, uniquelocal)" });
  return z.NEVER;
});

function parse<T>(env: Env, variable: string, schema: z.ZodType<T>, fallback: T): T {
  const raw = env[variable];
  if (raw === undefined || raw === "") return fallback;
  const result = schema.safeParse(raw);
  if (!result.success) {
    throw new ConfigError(variable, `${result.error.issues[0]?.message ?? "invalid value"} (got ${JSON.stringify(raw)})`);
  }
  return result.data;
}

const integer = (min: number, max: number) =>
  z
    .string()
    .regex(/^\d+$/, `must be a whole number from ${min} to ${max}`)
    .transform(Number)
    .pipe(z.number().int().min(min, `must be at least ${min}`).max(max, `must be at most ${max}`));

const urlOf = (protocols: string[]) =>
  z.string().refine((value) => {
    try {
      return protocols.includes(new URL(value).protocol);
    } catch {
      return false;
    }
  }, `must be a URL starting with ${protocols.map((p) => `${p}//`).join(" or ")}`);

/** Reads the contract's environment (api-contract.md §1). Throws ConfigError on the first bad value. */
export function loadConfig(env: Env = process.env, overrides: Partial<Config> = {}): Config {
  const config: Config = {
    port: parse(env, "PORT", integer(0, 65535), 3000),
    host: parse(env, "HOST", z.string().min(1), "127.0.0.1"),
    databaseUrl: parse(env, "DATABASE_URL", urlOf(["postgres:", "postgresql:"]), undefined),
    serviceDatabaseUrls: Object.fromEntries(
      SERVICE_NAMES.flatMap((service) => {
        const value = parse(env, serviceDatabaseVariable(service), urlOf(["postgres:", "postgresql:"]), undefined);
        return value ? [[service, value]] : [];
      }),
    ),
    dataDir: parse(env, "ORDERLY_DATA_DIR", z.string().min(1), "./.orderly"),
    redisUrl: parse(env, "REDIS_URL", urlOf(["redis:", "rediss:"]), undefined),
    amqpUrl: parse(env, "AMQP_URL", urlOf(["amqp:", "amqps:"]), undefined),
    amqpPrefix: parse(env, "ORDERLY_AMQP_PREFIX", z.string().regex(/^[a-z0-9][a-z0-9._-]{0,63}$/, "must be lower case letters, digits, . _ -"), "orderly"),
    jwtSecret: parse(env, "ORDERLY_JWT_SECRET", z.string().min(32, "must be at least 32 characters"), undefined),
    jwksUrl: parse(env, "ORDERLY_JWKS_URL", urlOf(["https:", "http:"]), undefined),
    jwtIssuer: parse(env, "ORDERLY_JWT_ISSUER", z.string().min(1).max(1024), undefined),
    jwtAudience: parse(env, "ORDERLY_JWT_AUDIENCE", z.string().min(1).max(1024), undefined),
    jwtClaims: {
      tenantClaim: parse(env, "ORDERLY_JWT_TENANT_CLAIM", CLAIM_PATH, "tid"),
      rolesClaim: parse(env, "ORDERLY_JWT_ROLES_CLAIM", CLAIM_PATH, "roles"),
      fixedTenant: parse(env, "ORDERLY_JWT_TENANT", z.string().regex(/^[\x20-\x7e]{1,128}$/, "must be 1 to 128 printable characters"), undefined),
      roleMap: parse(env, "ORDERLY_JWT_ROLE_MAP", ROLE_MAP, {}),
    },
    identityProviders: parse<IdentityProviderName[] | undefined>(
      env,
      "ORDERLY_IDENTITY_PROVIDERS",
      z
        .string()
        .transform((list) => [...new Set(list.split(",").map((name) => name.trim()))])
        .pipe(z.array(z.enum(IDENTITY_PROVIDER_NAMES, `must be a comma list of ${IDENTITY_PROVIDER_NAMES.join(", ")}`)).min(1)),
      undefined,
    ),
    ldap: ldapConfig(env),
    trustProxy: parse<boolean | number | string | undefined>(env, "ORDERLY_TRUST_PROXY", TRUST_PROXY, undefined),
    webhookSecret: parse(env, "ORDERLY_WEBHOOK_SECRET", z.string().min(16, "must be at least 16 characters"), undefined),
    refundUrl: parse(env, "ORDERLY_REFUND_URL", urlOf(["https:", "http:"]), undefined),
    refundTimeoutMs: parse(env, "ORDERLY_REFUND_TIMEOUT_MS", integer(100, 120_000), 10_000),
    paymentTimeoutMs: parse(env, "ORDERLY_PAYMENT_TIMEOUT_MS", integer(1000, 30 * 24 * 3600 * 1000), 900_000),
    placement: parse(env, "ORDERLY_PLACEMENT", z.enum(["saga", "2pc"], "must be saga or 2pc"), "saga"),
    twoPhaseInDoubtMs: parse(env, "ORDERLY_2PC_IN_DOUBT_MS", integer(1_000, 3_600_000), 30_000),
    retryDelaysMs: parse(
      env,
      "ORDERLY_RETRY_DELAYS_MS",
      z
        .string()
        .regex(/^\d{1,7}(,\d{1,7}){0,19}$/, "must be 1 to 20 comma-separated milliseconds, such as 1000,2000,4000")
        .transform((list) => list.split(",").map(Number)),
      [1_000, 2_000, 4_000, 8_000, 16_000],
    ),
    // At least a day: inbox rows and barriers must outlast any redelivery (src/kit/retention.ts).
    retentionHours: parse(env, "ORDERLY_RETENTION_HOURS", integer(24, 24 * 3650), 168),
    rateLimitRps: parse(env, "ORDERLY_RATE_LIMIT_RPS", integer(1, 1_000_000), 50),
    rateLimitBurst: parse(env, "ORDERLY_RATE_LIMIT_BURST", integer(1, 1_000_000), 100),
    dbPoolMax: parse(env, "ORDERLY_DB_POOL_MAX", integer(1, 1_000), 10),
    dbPreparedStatements: parse(env, "ORDERLY_DB_PREPARED_STATEMENTS", z.enum(["0", "1"], "must be 0 or 1").transform((v) => v === "1"), true),
    settlementBacklog: parse(env, "ORDERLY_SETTLEMENT_BACKLOG", integer(1, 1_000_000), 1_000),
    currency: parse(env, "ORDERLY_CURRENCY", z.string().regex(/^[A-Z]{3}$/, "must be an ISO 4217 code such as CNY"), "CNY"),
    demo: parse<boolean | undefined>(env, "ORDERLY_DEMO", z.enum(["0", "1"], "must be 0 or 1").transform((v) => v === "1"), undefined),
    production: env.NODE_ENV === "production",
    logLevel: parse(env, "LOG_LEVEL", z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]), "info"),
    shutdownDelayMs: parse(env, "ORDERLY_SHUTDOWN_DELAY_MS", integer(0, 600_000), 0),
    shutdownTimeoutMs: parse(env, "ORDERLY_SHUTDOWN_TIMEOUT_MS", integer(1_000, 3_600_000), 30_000),
    ...overrides,
  };
  // Tokens signed for a directory's user carry that user's tenant; a fixed token tenant would replace it.
  const fixedTenant = config.jwtClaims.fixedTenant;
  if (config.ldap && fixedTenant && config.ldap.fixedTenant !== fixedTenant) {
    throw new ConfigError("ORDERLY_JWT_TENANT", "with ORDERLY_LDAP_URL, must be unset or equal ORDERLY_LDAP_TENANT: tokens would carry another tenant than the directory's");
  }
  const providers = config.identityProviders;
  if (providers?.includes("jwks") && !config.jwksUrl) throw new ConfigError("ORDERLY_IDENTITY_PROVIDERS", "names jwks without ORDERLY_JWKS_URL");
  if (providers?.includes("ldap") && !config.ldap) throw new ConfigError("ORDERLY_IDENTITY_PROVIDERS", "names ldap without ORDERLY_LDAP_URL");
  // A directory's user gets a token signed with the secret: it must be taken back.
  if (providers?.includes("ldap") && !providers.includes("secret")) throw new ConfigError("ORDERLY_IDENTITY_PROVIDERS", "names ldap without secret: the tokens a directory sign-in answers are signed with ORDERLY_JWT_SECRET");
  return config;
}

/**
 * The database a process serving (or migrating) `services` uses, and the variable that names it: a
 * service alone uses its own ORDERLY_<SERVICE>_DATABASE_URL when set; several services in one process
 * (the all-in-one among them) share DATABASE_URL. No URL: the embedded database, outside production.
 */
export function databaseFor(config: Config, services: readonly ServiceName[]): { url: string | undefined; variable: string } {
  const alone = services.length === 1 ? (services[0] as ServiceName) : undefined;
  const own = alone ? config.serviceDatabaseUrls[alone] : undefined;
  if (own) return { url: own, variable: serviceDatabaseVariable(alone as ServiceName) };
  return { url: config.databaseUrl, variable: "DATABASE_URL" };
}

/** The variable of a service's own database: ORDERLY_<SERVICE>_DATABASE_URL. */
export const serviceDatabaseVariable = (service: ServiceName) => `ORDERLY_${service.toUpperCase()}_DATABASE_URL`;

/** The line production answers where a process would open the embedded database. */
export const noEmbeddedInProduction = () => new ConfigError("DATABASE_URL", "is required when NODE_ENV=production (no embedded database in production)");

/**
 * What production (NODE_ENV=production) refuses to start `services` without (api-contract.md §1): a
 * database server of its own (no embedded database) and real secrets, none made up in the data dir.
 */
export function checkProduction(config: Config, services: readonly ServiceName[] = SERVICE_NAMES): void {
  if (!config.production) return;
  if (!databaseFor(config, services).url) throw noEmbeddedInProduction();
  if (!config.webhookSecret) throw new ConfigError("ORDERLY_WEBHOOK_SECRET", "is required when NODE_ENV=production");
  if (!config.jwtSecret && !config.jwksUrl) throw new ConfigError("ORDERLY_JWT_SECRET", "is required when NODE_ENV=production (or set ORDERLY_JWKS_URL)");
  if (config.ldap && !config.jwtSecret) throw new ConfigError("ORDERLY_JWT_SECRET", "is required with ORDERLY_LDAP_URL: it signs the tokens a directory sign-in answers");
  // Passwords cross the wire in a simple bind: only over TLS in production.
  if (config.ldap && !config.ldap.url.startsWith("ldaps:")) throw new ConfigError("ORDERLY_LDAP_URL", "must be ldaps:// when NODE_ENV=production (passwords are sent in the bind)");
  if (config.refundUrl && !config.refundUrl.startsWith("https:")) throw new ConfigError("ORDERLY_REFUND_URL", "must be https:// when NODE_ENV=production (refund requests move money)");
}

/** Parses `--services all|a,b,c`. */
export function parseServices(list: string): ServiceName[] {
  if (list === "all") return [...SERVICE_NAMES];
  const names = list.split(",").map((s) => s.trim());
  for (const name of names) {
    if (!(SERVICE_NAMES as readonly string[]).includes(name)) {
      throw new ConfigError("--services", `unknown service "${name}"; use all or a comma list of ${SERVICE_NAMES.join(",")}`);
    }
  }
  return names as ServiceName[];
}
