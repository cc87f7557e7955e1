import { createHash } from "node:crypto";
import type { Logger as QueryLogger } from "drizzle-orm/logger";
import { drizzle as drizzlePg } from "drizzle-orm/node-postgres";
import { migrate as migratePg } from "drizzle-orm/node-postgres/migrator";
import pg from "pg";
import { type Database, type Db, inTenant, TENANT_SETTINGS, MIGRATION_LOCK, type NotificationState, MIGRATION_SETS, migrationConfig, setsBehind } from "./client.ts";
import * as schema from "./schema.ts";

export interface PostgresOptions {
  max?: number;
  /** Milliseconds a statement of a tenant's transaction may wait for a row lock before it fails with 55P03. */
  lockTimeoutMs?: number | undefined;
  /**
   * Statements with parameters are prepared once per connection (default true). Off for a pooler
   * that cannot keep them, such as PgBouncer in transaction mode before 1.21 or without
   * max_prepared_statements.
   */
  preparedStatements?: boolean;
  /** Sees every statement with its parameters (the benchmark records the placement's SQL with it). */
  queryLogger?: QueryLogger;
  /** Told when notifications are lost (with the error) and when they are live again (server.ts logs both). */
  onNotificationsChange?: (live: boolean, error?: unknown) => void;
}

export function openPostgres(url: string, options: PostgresOptions = {}): Database {
  const pool = new pg.Pool({
    connectionString: url,
    max: options.max ?? 10,
    // How long a request may queue for a connection. A server that is down refuses at once; this wait
    // is for bursts (a flash sale queues for the pool rather than being told 503).
    connectionTimeoutMillis: 20_000,
  });
  // An idle client that loses its server must not crash the process; the pool replaces it.
  pool.on("error", () => {});
  // Nor may a checked-out one: the pool listens only to idle clients, and an 'error' event nobody
  // listens to is thrown. Its statement in flight fails anyway.
  pool.on("connect", (client) => {
    client.on("error", () => {});
    if (options.preparedStatements ?? true) preparedByText(client);
    beginWithFirstStatement(client);
  });
  // drizzle sends BEGIN before the try/finally that releases its client, so a client whose connection
  // died while idle fails BEGIN and is never given back: every outage would shrink the pool for good
  // and end() would wait forever. Such a client goes back (and out) when its connection ends.
  const checkOut = pool.connect.bind(pool);
  pool.connect = ((callback?: Parameters<typeof checkOut>[0]) => (callback ? checkOut(callback) : checkOut().then(releasedWhenLost))) as typeof pool.connect;
  const db = drizzlePg(pool, { schema, logger: options.queryLogger ?? false }) as unknown as Db;
  const listener = createListener(url, options.onNotificationsChange);
  return {
    db,
    kind: "postgres",
    // lock_timeout is set in each transaction with its role (one statement), never as a connection's
    // startup option, which a pooler such as PgBouncer refuses.
    tenant: (tenantId, work, tenantOptions) => inTenant(db, tenantId, work, { lockTimeoutMs: options.lockTimeoutMs, ...tenantOptions }),
    async migrate(sets = MIGRATION_SETS) {
      const client = await pool.connect();
      try {
        await client.query("select pg_advisory_lock($1)", [MIGRATION_LOCK]);
        try {
          const locked = drizzlePg(client, { schema });
          for (const set of await setsBehind(locked as unknown as Db, sets)) await migratePg(locked, migrationConfig(set));
        } finally {
          await client.query("select pg_advisory_unlock($1)", [MIGRATION_LOCK]);
        }
      } finally {
        client.release();
      }
    },
    async ping() {
      await pool.query("select 1");
    },
    listen: listener.listen,
    notifications: listener.state,
    poolStats: () => ({ total: pool.totalCount, idle: pool.idleCount, waiting: pool.waitingCount, max: pool.options.max }),
    async close() {
      await listener.close();
      await pool.end();
    },
  };
}

/** What drizzle is told of a BEGIN held back (it reads nothing of it). */
const HELD_BEGIN = { command: "BEGIN", rowCount: null, rows: [], fields: [] };

/**
 * drizzle opens a transaction with BEGIN alone, a round trip of its own. This client holds it back
 * and sends it with the transaction's first statement: as one simple query ("begin; select
 * set_config(...)") when that is a tenant's settings, which take no parameters (inTenant); otherwise
 * queued just before it, as drizzle would have sent it, and a failed BEGIN fails that statement.
 */
function beginWithFirstStatement(client: pg.Client): void {
  const query = client.query.bind(client) as (...args: unknown[]) => unknown;
  let held = false;
  client.query = ((config: unknown, values?: unknown, callback?: unknown) => {
    const text = typeof config === "string" ? config : (config as { text?: unknown } | null)?.text;
    const noValues = values === undefined || (Array.isArray(values) && values.length === 0);
    if (text === "begin" && noValues && callback === undefined) {
      held = true;
      return Promise.resolve(HELD_BEGIN);
    }
    if (!held) return query(config, values, callback);
    held = false;
    if (typeof text === "string" && text.startsWith(TENANT_SETTINGS) && noValues && callback === undefined) {
      return query({ ...(typeof config === "string" ? {} : (config as object)), text: `begin; ${text}` });
    }
    // Both queued at once, so statements sent together keep their order (pg sends one after the other).
    const begun = query("begin") as Promise<unknown>;
    const sent = query(config, values, callback);
    if (!(sent instanceof Promise)) {
      begun.catch(() => {}); // a callback or a cursor: it fails with its connection, as BEGIN would have
      return sent;
    }
    return Promise.all([begun, sent]).then(([, result]) => result);
  }) as typeof client.query;
}

/** Names given to parameterised statements: a hash of the text, the same in every connection and process. */
const statementNames = new Map<string, string>();
/** Past this many texts, new ones go unnamed: each connection's server process keeps a plan per name. */
const MAX_NAMED_STATEMENTS = 500;

/**
 * Names every statement with parameters after its text, so each connection parses and plans it
 * once and then only binds and executes it (node-postgres prepares a named statement on its first
 * use in a connection). drizzle sends the same few texts again and again; in the split deployment
 * under load this took about a fifth of PostgreSQL's CPU time away. Statements without parameters
 * (BEGIN with the tenant's settings, migrations) keep the simple protocol.
 */
function preparedByText(client: pg.Client): void {
  const query = client.query.bind(client) as (...args: unknown[]) => unknown;
  client.query = ((config: unknown, values?: unknown, callback?: unknown) => query(named(config, values), values, callback)) as typeof client.query;
}

function named(config: unknown, values: unknown): unknown {
  const object = typeof config === "string" ? { text: config } : (config as { text?: unknown; name?: unknown; values?: unknown; submit?: unknown } | null);
  const given = values ?? object?.values;
  if (!object || typeof object.text !== "string" || object.name !== undefined || !Array.isArray(given) || given.length === 0) return config;
  // A Submittable (a cursor, a stream) is passed on as it is: a copy would lose its methods.
  if (typeof object.submit === "function") return config;
  // pg closes a named statement whose values it cannot convert, yet counts it prepared: only plain values.
  if (!given.every(plainValue)) return config;
  let name = statementNames.get(object.text);
  if (name === undefined) {
    if (statementNames.size >= MAX_NAMED_STATEMENTS) return config;
    name = `orderly_${createHash("sha256").update(object.text).digest("hex").slice(0, 24)}`;
    statementNames.set(object.text, name);
  }
  return { ...object, name };
}

const plainValue = (value: unknown): boolean =>
  value === null || typeof value !== "object" || value instanceof Date || Buffer.isBuffer(value) || (Array.isArray(value) && value.every(plainValue));

/** Gives a checked-out client back to its pool when its connection ends; its holder's release() then does nothing. */
function releasedWhenLost(client: pg.PoolClient): pg.PoolClient {
  const release = client.release;
  let released = false;
  const releaseOnce = (error?: Error | boolean) => {
    if (released) return;
    released = true;
    client.removeListener("end", lost);
    release(error);
  };
  const lost = () => releaseOnce(new Error("the connection to the database ended"));
  client.once("end", lost);
  client.release = releaseOnce;
  return client;
}

const FIRST_RETRY_MS = 100;
const MAX_RETRY_MS = 5_000;

/**
 * One connection LISTENing on every channel of this process. After any loss, however long, it is
 * opened again with capped exponential backoff and jitter and re-issues every LISTEN; callers poll
 * meanwhile. A server that closes the connection may only make it emit `end`, so both count as a loss.
 */
function createListener(url: string, onChange: (live: boolean, error?: unknown) => void = () => {}) {
  const channels = new Map<string, Set<(payload: string) => void>>();
  let live: pg.Client | undefined; // listening on every channel
  let opening: Promise<void> | undefined;
  let retry: NodeJS.Timeout | undefined;
  let failures = 0;
  let down = false; // as last told to onChange

  const deliver = (channel: string, payload: string) => {
    for (const onNotify of [...(channels.get(channel) ?? [])]) onNotify(payload);
  };

  function open(): void {
    const attempt: Promise<void> = connect().finally(() => {
      if (opening === attempt) opening = undefined;
    });
    opening = attempt;
  }

  async function connect(): Promise<void> {
    const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5_000, keepAlive: true, application_name: "orderly-listen" });
    let gone = false;
    const lose = (error: unknown) => {
      if (gone) return;
      gone = true;
      client.end().catch(() => {});
      if (live === client) live = undefined;
      if (channels.size === 0) return; // stopped on purpose
      if (!down) {
        down = true;
        onChange(false, error);
      }
      const delay = Math.min(MAX_RETRY_MS, FIRST_RETRY_MS * 2 ** failures++) * (0.8 + 0.4 * Math.random());
      retry = setTimeout(() => {
        retry = undefined;
        open();
      }, delay);
    };
    client.on("error", lose);
    client.on("end", () => lose(new Error("the LISTEN connection closed")));
    client.on("notification", (notification) => deliver(notification.channel, notification.payload ?? ""));
    try {
      await client.connect();
      // Iterating the live map also covers channels added while this runs.
      for (const channel of channels.keys()) await client.query(`listen ${client.escapeIdentifier(channel)}`);
    } catch (error) {
      lose(error);
      return;
    }
    if (gone) return;
    if (channels.size === 0) {
      gone = true; // every listener stopped while this connected
      await client.end().catch(() => {});
      return;
    }
    live = client;
    failures = 0;
    if (down) {
      down = false;
      onChange(true);
    }
    for (const channel of [...channels.keys()]) deliver(channel, "");
  }

  async function close(): Promise<void> {
    channels.clear();
    clearTimeout(retry);
    retry = undefined;
    down = false;
    const client = live;
    live = undefined;
    await Promise.all([opening, client?.end().catch(() => {})]);
  }

  return {
    state: (): NotificationState => (channels.size === 0 ? "off" : live ? "live" : "down"),

    async listen(channel: string, onNotify: (payload: string) => void): Promise<() => Promise<void>> {
      const entry = (payload: string) => onNotify(payload); // its own identity, so one function may listen twice
      const callbacks = channels.get(channel);
      if (callbacks) callbacks.add(entry);
      else {
        channels.set(channel, new Set([entry]));
        const client = live;
        // A LISTEN that fails ends the connection, which counts as its loss: the next one issues it again.
        if (client) await client.query(`listen ${client.escapeIdentifier(channel)}`).catch(() => client.end().catch(() => {}));
        else if (!opening && !retry) open();
      }
      await opening; // settles once connected or after a failed attempt: callers poll until a retry succeeds
      let stopped = false;
      return async () => {
        if (stopped) return;
        stopped = true;
        const set = channels.get(channel);
        set?.delete(entry);
        if (!set || set.size > 0) return;
        channels.delete(channel);
        if (channels.size === 0) await close();
        else await live?.query(`unlisten ${live.escapeIdentifier(channel)}`).catch(() => {});
      };
    },

    close,
  };
}
