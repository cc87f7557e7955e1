import { LRUCache } from "lru-cache";

/**
 * An LRU cache of at most `max` entries, least recently used forgotten first, that takes memory as
 * it fills. lru-cache given `max` allocates every slot when it is built (about 60 bytes each): the
 * rate limiter's and the sold-out marks' 100,000 took 30 ms of every start and 6 MiB of resident
 * memory before a single request. Bounded by size instead (each entry counting 1), it allocates
 * nothing up front.
 */
export function boundedLru<K extends {}, V extends {}>(max: number, options: Omit<LRUCache.Options<K, V, unknown>, "max" | "maxSize" | "sizeCalculation"> = {}): LRUCache<K, V> {
  return new LRUCache<K, V>({ ...options, maxSize: max, sizeCalculation: () => 1 } as LRUCache.Options<K, V, unknown>);
}
