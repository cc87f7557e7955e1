/**
 * One writer per key: work submitted under a key waits in that key's queue, and the key's single
 * writer takes what has queued (up to `maxBatch` items) as one batch, so whatever arrives while a batch
 * is being written goes together into the next. Used where many requests contend for one row: the
 * row is written once per batch instead of once per request, and never by two batches of this
 * process at once (two writers batching the same rows would deadlock each other).
 */
export interface KeyWriters<T, R> {
  /** Queues an item under a key; settles with the item's result from its batch, or the batch's error. */
  submit(key: string, item: T): Promise<R>;
  /** Whether the key has a writer at work (a batch being written or items waiting). */
  busy(key: string): boolean;
  /** Items waiting or being written, all keys. */
  readonly pending: number;
}

interface Queued<T, R> {
  item: T;
  resolve(result: R): void;
  reject(error: unknown): void;
}

/**
 * `write` is given a key's batch and answers one result per item, in the batch's order. If it
 * throws, every item of that batch rejects with the error; the next batch is written all the same.
 */
export function createKeyWriters<T, R>(options: { maxBatch: number; write(key: string, items: T[]): Promise<R[]> }): KeyWriters<T, R> {
  const queues = new Map<string, Queued<T, R>[]>();
  let pending = 0;

  async function writeUntilEmpty(key: string, queue: Queued<T, R>[]): Promise<void> {
    while (queue.length > 0) {
      const batch = queue.splice(0, options.maxBatch);
      try {
        const results = await options.write(
          key,
          batch.map((q) => q.item),
        );
        if (results.length !== batch.length) throw new Error(`a batch of ${batch.length} answered ${results.length} results`);
        batch.forEach((q, i) => q.resolve(results[i] as R));
      } catch (error) {
        for (const q of batch) q.reject(error);
      } finally {
        pending -= batch.length;
      }
    }
    queues.delete(key);
  }

  return {
    submit(key, item) {
      return new Promise<R>((resolve, reject) => {
        pending++;
        const queue = queues.get(key);
        if (queue) {
          queue.push({ item, resolve, reject });
          return;
        }
        const started = [{ item, resolve, reject }];
        queues.set(key, started);
        void writeUntilEmpty(key, started);
      });
    },
    busy: (key) => queues.has(key),
    get pending() {
      return pending;
    },
  };
}
