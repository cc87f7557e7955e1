import { createRequire } from "node:module";
import type { Redis, RedisOptions } from "ioredis";

const require = createRequire(import.meta.url);

/**
 * A Redis client. ioredis is loaded with the first one, not when the process starts: a process
 * without REDIS_URL (the embedded default among them) never loads it, a tenth of a second less
 * before it is ready.
 *
 * Not auto-pipelined: ioredis keeps one auto-pipeline in flight per connection, so on a busy process
 * a command waits for the replies of the one before, and the sold-out gate's checks passed their
 * deadline and admitted what they should have refused (README, "After P").
 */
export function newRedis(url: string, options: RedisOptions): Redis {
  const { Redis: Client } = require("ioredis") as typeof import("ioredis");
  return new Client(url, options);
}
