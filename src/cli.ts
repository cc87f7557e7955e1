import { parseArgs } from "node:util";
import { pino } from "pino";
import { createTokens, parseTtl, PrintableId, ROLES, type Role } from "./auth/tokens.ts";
import { ConfigError, loadConfig, parseServices } from "./config.ts";
import { openDatabase } from "./db/open.ts";
import { systemClock } from "./kit/clock.ts";
import { createDeadLetters, type DeadLetterOutcome } from "./kit/dead-letters.ts";
import { newId } from "./kit/ids.ts";
import { resolveSecrets } from "./ops/secrets.ts";
import { startServer } from "./server.ts";

const USAGE = `usage:
  orderly serve [--services all|orders,inventory,payments,coupons,shipping] [--demo]
  orderly migrate
  orderly token --tenant T --user U --role customer|admin [--ttl 1h]
  orderly dlq list [--status open|retried|skipped|resolved|all]
  orderly dlq retry ID | skip ID | resolve ID --note TEXT   [--actor NAME]`;

async function serve(args: string[]) {
  const { values } = parseArgs({ args, options: { services: { type: "string", default: "all" }, demo: { type: "boolean", default: false } } });
  const services = parseServices(values.services);
  const config = loadConfig();
  const running = await startServer(config, { demo: config.demo ?? values.demo, roles: services });
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) process.exit(130); // a second Ctrl-C does not wait
    stopping = true;
    running.services.log.info({ signal }, "shutting down");
    running.close().then(
      () => process.exit(0),
      (error: unknown) => {
        running.services.log.error({ err: error }, "shutdown failed");
        process.exit(1);
      },
    );
  };
  process.on("SIGINT", () => stop("SIGINT"));
  process.on("SIGTERM", () => stop("SIGTERM"));
}

async function migrate() {
  const config = loadConfig();
  const database = await openDatabase(config);
  await database.close();
  pino().info({ database: database.kind }, "migrations applied");
}

async function token(args: string[]) {
  const { values } = parseArgs({
    args,
    options: { tenant: { type: "string" }, user: { type: "string" }, role: { type: "string", multiple: true }, ttl: { type: "string", default: "1h" } },
  });
  if (!values.tenant || !PrintableId.safeParse(values.tenant).success) throw new ConfigError("--tenant", "is required: 1 to 128 printable characters");
  if (!values.user || !PrintableId.safeParse(values.user).success) throw new ConfigError("--user", "is required: 1 to 128 printable characters");
  const roles = (values.role ?? []).flatMap((r) => r.split(","));
  if (roles.length === 0 || !roles.every((r): r is Role => (ROLES as readonly string[]).includes(r))) {
    throw new ConfigError("--role", "must be customer or admin");
  }
  const ttl = parseTtl(values.ttl);
  if (!ttl) throw new ConfigError("--ttl", "must look like 30s, 15m, 1h or 7d");
  const { jwtSecret } = resolveSecrets(loadConfig());
  if (!jwtSecret) throw new ConfigError("ORDERLY_JWT_SECRET", "is needed to sign tokens");
  process.stdout.write(`${await createTokens({ secret: jwtSecret }).sign({ tenantId: values.tenant, userId: values.user, roles }, ttl)}\n`);
}

/** Dead letters: list them, or retry / skip / resolve one (each action audited with its actor). */
async function dlq(args: string[]) {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { status: { type: "string", default: "open" }, note: { type: "string" }, actor: { type: "string", default: process.env.USER ?? "cli" } },
  });
  const [action, id] = positionals;
  const statuses = ["open", "retried", "skipped", "resolved", "all"] as const;
  if (!statuses.includes(values.status as (typeof statuses)[number])) throw new ConfigError("--status", `must be one of ${statuses.join(", ")}`);
  if (action !== "list" && !id) throw new ConfigError("dlq", `${action ?? "an action"} needs a dead letter id; see orderly --help`);
  if (action === "resolve" && !values.note) throw new ConfigError("--note", "is required to resolve a dead letter (say how it was handled)");
  const database = await openDatabase(loadConfig());
  try {
    const letters = createDeadLetters({ clock: systemClock, newId });
    let outcome: DeadLetterOutcome;
    switch (action) {
      case "list": {
        const status = values.status === "all" ? undefined : (values.status as "open");
        for (const l of await letters.list(database.db, { status })) {
          process.stdout.write(`${l.id}  ${l.status.padEnd(8)}  ${l.createdAt.toISOString()}  ${l.source}${l.consumer ? `/${l.consumer}` : ""}  ${l.reference}  ${l.reason}\n`);
        }
        return;
      }
      case "retry":
        outcome = await letters.retry(database.db, id as string, values.actor);
        break;
      case "skip":
        outcome = await letters.skip(database.db, id as string, values.actor);
        break;
      case "resolve":
        outcome = await letters.resolve(database.db, id as string, values.actor, values.note as string);
        break;
      default:
        throw new ConfigError("dlq", `unknown action "${action}"; use list, retry, skip or resolve`);
    }
    // A refusal (unknown id, already closed, nothing to re-drive) is one line on stderr and a non-zero exit.
    if (!outcome.ok) throw new ConfigError("dlq", outcome.detail ?? outcome.reason);
    process.stdout.write(`${JSON.stringify(outcome.value)}\n`);
  } finally {
    await database.close();
  }
}

async function main(argv: string[]) {
  const [command, ...rest] = argv;
  switch (command) {
    case "serve":
      return serve(rest);
    case "migrate":
      return migrate();
    case "token":
      return token(rest);
    case "dlq":
      return dlq(rest);
    default:
      process.stderr.write(`${USAGE}\n`);
      process.exit(command === undefined || command === "--help" ? 0 : 2);
  }
}

main(process.argv.slice(2)).catch((error: unknown) => {
  const message = error instanceof ConfigError ? error.message : error instanceof TypeError && "code" in error ? error.message : String(error);
  process.stderr.write(`orderly: ${message}\n`);
  process.exit(1);
});
