import { execFile } from "node:child_process";
import { createServer, type Server, type Socket, connect } from "node:net";
import { promisify } from "node:util";

// Outages for fault tests. Two kinds:
// - the machine's real services stopped and started again (RabbitMQ's app, the PostgreSQL cluster):
//   only from test/faults/**, which runs one file at a time after every other test;
// - a TCP proxy in front of a service that a test cuts and restores, or that stalls (slow replies, or
//   none at all): an outage seen by that test's processes only, so it is safe beside other tests.

const run = promisify(execFile);

async function waitUntil(check: () => Promise<boolean>, what: string, ms: number): Promise<void> {
  const until = Date.now() + ms;
  while (!(await check().catch(() => false))) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

const portAnswers = (port: number) =>
  new Promise<boolean>((resolve) => {
    const socket = connect(port, "127.0.0.1");
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });

export async function stopRabbit(): Promise<void> {
  await run("rabbitmqctl", ["stop_app"]);
}

export async function startRabbit(): Promise<void> {
  await run("rabbitmqctl", ["start_app"]);
  await run("rabbitmqctl", ["await_startup"]);
  await waitUntil(() => portAnswers(5672), "RabbitMQ on 5672", 60_000);
}

/** Runs `during` with RabbitMQ's app stopped for at least `ms`, and always starts it again. */
export async function withRabbitStopped<T>(ms: number, during: () => Promise<T> = async () => undefined as T): Promise<T> {
  await stopRabbit();
  const started = Date.now();
  try {
    const result = await during();
    const left = ms - (Date.now() - started);
    if (left > 0) await new Promise((r) => setTimeout(r, left));
    return result;
  } finally {
    await startRabbit();
  }
}

const cluster = async () => (await run("ls", ["/etc/postgresql"])).stdout.trim().split("\n")[0] as string;

export async function stopPostgres(): Promise<void> {
  await run("pg_ctlcluster", ["--skip-systemctl-redirect", await cluster(), "main", "stop", "-m", "fast"]);
}

export async function startPostgres(): Promise<void> {
  await run("pg_ctlcluster", ["--skip-systemctl-redirect", await cluster(), "main", "start"]).catch((error: unknown) => {
    // "already running" is fine: the goal is a server that answers.
    if (!/already running/.test(String((error as { stderr?: string }).stderr ?? error))) throw error;
  });
  await waitUntil(async () => (await run("pg_isready", ["-q", "-h", "127.0.0.1", "-p", "5432"]).then(() => true)), "PostgreSQL to accept connections", 60_000);
}

/** Runs `during` with the PostgreSQL cluster stopped for at least `ms`, and always starts it again. */
export async function withPostgresStopped<T>(ms: number, during: () => Promise<T> = async () => undefined as T): Promise<T> {
  await stopPostgres();
  const started = Date.now();
  try {
    const result = await during();
    const left = ms - (Date.now() - started);
    if (left > 0) await new Promise((r) => setTimeout(r, left));
    return result;
  } finally {
    await startPostgres();
  }
}

export interface CuttableProxy {
  /** The local port clients connect to instead of the service's. */
  port: number;
  /** Connections clients have opened through the proxy so far, refused ones included. */
  readonly opened: number;
  /** Replaces host:port in a URL with the proxy's. */
  url(serviceUrl: string): string;
  /** Drops every open connection and refuses new ones until restore(). */
  cut(): void;
  restore(): void;
  close(): Promise<void>;
}

/** A TCP proxy to 127.0.0.1:targetPort that a test can cut to make the service vanish for its own clients only. */
export async function cuttableProxy(targetPort: number): Promise<CuttableProxy> {
  const sockets = new Set<Socket>();
  let open = true;
  let opened = 0;
  const server: Server = createServer((client) => {
    opened++;
    if (!open) {
      client.destroy();
      return;
    }
    const upstream = connect(targetPort, "127.0.0.1");
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on("close", () => sockets.delete(socket));
      socket.on("error", () => {
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : 0;
  return {
    port,
    get opened() {
      return opened;
    },
    url(serviceUrl) {
      const url = new URL(serviceUrl);
      url.hostname = "127.0.0.1";
      url.port = String(port);
      return url.toString();
    },
    cut() {
      open = false;
      for (const socket of sockets) socket.destroy();
    },
    restore() {
      open = true;
    },
    async close() {
      open = false;
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * A TCP proxy to 127.0.0.1:targetPort that holds what passes without closing anything: every reply
 * `replyDelayMs` late (in order), and once frozen nothing either way (connected and silent: no
 * error, no close, only time passes).
 */
export async function stallingProxy(targetPort: number, options: { replyDelayMs?: number } = {}) {
  let frozen = false;
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    const upstream = connect(targetPort, "127.0.0.1");
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.setNoDelay(true); // no delay but the one given: Nagle's would hold the later small writes
      socket.on("error", () => {});
      socket.on("close", () => {
        sockets.delete(socket);
        client.destroy();
        upstream.destroy();
      });
    }
    const reply = (chunk: Buffer) => void (frozen || client.write(chunk));
    client.on("data", (chunk: Buffer) => void (frozen || upstream.write(chunk)));
    upstream.on("data", (chunk: Buffer) => (options.replyDelayMs ? setTimeout(reply, options.replyDelayMs, chunk) : reply(chunk)));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as { port: number }).port,
    freeze: () => void (frozen = true),
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
