import { createRequire } from "node:module";
import type { Redis, RedisOptions } from "ioredis";

const require = createRequire(import.meta.url);

/**
 * A Redis client. ioredis is loaded with the first one, not when the process starts: a process
 * without REDIS_URL (the embedded default among them) never loads it, a tenth of a second less
 * before it is ready.
 */
export function newRedis(url: string, options: RedisOptions): Redis {
  const { Redis: Client } = require("ioredis") as typeof import("ioredis");
  return new Client(url, options);
}
