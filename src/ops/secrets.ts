import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type Config, ConfigError } from "../config.ts";

export interface Secrets {
  /** Undefined only in production with ORDERLY_JWKS_URL and no shared secret. */
  jwtSecret: string | undefined;
  webhookSecret: string;
}

/**
 * The configured secrets, or outside production dev secrets generated once and kept in the data dir,
 * so tokens printed by `npm start` keep working across restarts.
 */
export function resolveSecrets(config: Config): Secrets {
  if (config.jwtSecret && config.webhookSecret) return { jwtSecret: config.jwtSecret, webhookSecret: config.webhookSecret };
  // In production nothing is made up nor written (the data dir may be read-only there): the secrets
  // come from the environment, and tokens are verified by JWKS where no shared secret is set.
  if (config.production) {
    if (!config.webhookSecret) throw new ConfigError("ORDERLY_WEBHOOK_SECRET", "is required in production (NODE_ENV=production)");
    return { jwtSecret: config.jwtSecret, webhookSecret: config.webhookSecret };
  }
  const file = join(config.dataDir, "dev-secrets.json");
  let dev: Secrets;
  if (existsSync(file)) {
    dev = JSON.parse(readFileSync(file, "utf8")) as Secrets;
  } else {
    dev = { jwtSecret: randomBytes(32).toString("hex"), webhookSecret: randomBytes(32).toString("hex") };
    mkdirSync(config.dataDir, { recursive: true });
    writeFileSync(file, JSON.stringify(dev, null, 2), { mode: 0o600 });
  }
  return { jwtSecret: config.jwtSecret ?? dev.jwtSecret, webhookSecret: config.webhookSecret ?? dev.webhookSecret };
}
