import { z } from "zod";

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
  webhookSecret: string | undefined;
  paymentTimeoutMs: number;
  /** Delays between retries of saga steps and outbox messages (split deployment). */
  retryDelaysMs: number[];
  /** ORDERLY_RETENTION_HOURS: how long sent messages, inbox rows, barriers and finished sagas are kept. */
  retentionHours: number;
  rateLimitRps: number;
  rateLimitBurst: number;
  /** ORDERLY_DB_POOL_MAX: connections per process to PostgreSQL. */
  dbPoolMax: number;
  currency: string;
  /** ORDERLY_DEMO: undefined when unset, so `--demo` decides. */
  demo: boolean | undefined;
  production: boolean;
  logLevel: string;
}

type Env = Record<string, string | undefined>;

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

const url = (protocols: string[]) =>
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
    databaseUrl: parse(env, "DATABASE_URL", url(["postgres:", "postgresql:"]), undefined),
    serviceDatabaseUrls: Object.fromEntries(
      SERVICE_NAMES.flatMap((service) => {
        const variable = `ORDERLY_${service.toUpperCase()}_DATABASE_URL`;
        const value = parse(env, variable, url(["postgres:", "postgresql:"]), undefined);
        return value ? [[service, value]] : [];
      }),
    ),
    dataDir: parse(env, "ORDERLY_DATA_DIR", z.string().min(1), "./.orderly"),
    redisUrl: parse(env, "REDIS_URL", url(["redis:", "rediss:"]), undefined),
    amqpUrl: parse(env, "AMQP_URL", url(["amqp:", "amqps:"]), undefined),
    amqpPrefix: parse(env, "ORDERLY_AMQP_PREFIX", z.string().regex(/^[a-z0-9][a-z0-9._-]{0,63}$/, "must be lower case letters, digits, . _ -"), "orderly"),
    jwtSecret: parse(env, "ORDERLY_JWT_SECRET", z.string().min(32, "must be at least 32 characters"), undefined),
    jwksUrl: parse(env, "ORDERLY_JWKS_URL", url(["https:", "http:"]), undefined),
    webhookSecret: parse(env, "ORDERLY_WEBHOOK_SECRET", z.string().min(16, "must be at least 16 characters"), undefined),
    paymentTimeoutMs: parse(env, "ORDERLY_PAYMENT_TIMEOUT_MS", integer(1000, 30 * 24 * 3600 * 1000), 900_000),
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
    currency: parse(env, "ORDERLY_CURRENCY", z.string().regex(/^[A-Z]{3}$/, "must be an ISO 4217 code such as CNY"), "CNY"),
    demo: parse<boolean | undefined>(env, "ORDERLY_DEMO", z.enum(["0", "1"], "must be 0 or 1").transform((v) => v === "1"), undefined),
    production: env.NODE_ENV === "production",
    logLevel: parse(env, "LOG_LEVEL", z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]), "info"),
    ...overrides,
  };
  if (config.production && !config.jwtSecret && !config.jwksUrl) {
    throw new ConfigError("ORDERLY_JWT_SECRET", "is required when NODE_ENV=production (or set ORDERLY_JWKS_URL)");
  }
  return config;
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
