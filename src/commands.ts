import { type ParseArgsConfig, parseArgs } from "node:util";
import { pino } from "pino";
import { createTokens, parseTtl, PrintableId, ROLES, type Role } from "./auth/tokens.ts";
import { ConfigError, databaseFor, loadConfig, parseServices } from "./config.ts";
import { migrationStatus } from "./db/client.ts";
import { writeFileSync } from "node:fs";
import { openDatabase } from "./db/open.ts";
import { systemClock } from "./kit/clock.ts";
import { createDeadLetters, type DeadLetterOutcome } from "./kit/dead-letters.ts";
import { newId } from "./kit/ids.ts";
import { createOutbox } from "./kit/outbox.ts";
import { createTransitionHooks } from "./modules/orders/hooks.ts";
import { createOrders } from "./modules/orders/orders.ts";
import { renderDeadLetter, renderDeadLetterList, renderTimeline } from "./ops/cli-views.ts";
import { createOperations } from "./ops/timeline.ts";
import { resolveSecrets } from "./ops/secrets.ts";

/** A command line that cannot be understood: one line on stderr, exit 2 (api-contract.md §1). */
class UsageError extends Error {
  constructor(what: string | undefined, problem: string) {
    super(what ? `${what}: ${problem}` : problem);
    this.name = "UsageError";
  }
}

const USAGE = `usage: orderly COMMAND [OPTIONS]   (orderly COMMAND --help for one command)

  serve [--services all|orders,inventory,payments,coupons,shipping] [--demo] [--no-migrate]
  migrate [--services LIST] [--status]
  token --tenant T --user U --role customer|admin [--ttl 1h]
  dlq list [--status open|retried|skipped|resolved|all] [--json]
  dlq show ID [--json]
  dlq retry ID | skip ID | resolve ID --note TEXT   [--actor NAME]
  order show ID [--tenant T] [--json]
  openapi [--out FILE]
`;

const DATABASE_NOTE = `The database is DATABASE_URL, or the embedded one in ORDERLY_DATA_DIR (default ./.orderly).`;

const HELP: Record<string, string> = {
  serve: `usage: orderly serve [--services LIST] [--demo] [--no-migrate]

Serves the API. LIST is all (default: every service in one process, one transaction per order) or a
comma list of orders,inventory,payments,coupons,shipping (split services need DATABASE_URL and AMQP_URL).
On SIGTERM or SIGINT, /readyz answers 503 for ORDERLY_SHUTDOWN_DELAY_MS (default 0), then the server
stops accepting and finishes what it has; past ORDERLY_SHUTDOWN_TIMEOUT_MS (default 30000) it exits 1.

  --services LIST   which services this process runs
  --demo            load the demo tenant and print ready-made tokens (never in production)
  --no-migrate      apply no migration (a migration job did): refuse to start if any is missing
  --help            this text
`,
  migrate: `usage: orderly migrate [--services LIST] [--status]

Applies the database migrations and exits. ${DATABASE_NOTE}
A service's own database (ORDERLY_<SERVICE>_DATABASE_URL) is migrated with that service's tables
when LIST names that service alone.

  --services LIST   all (default) or a comma list of services: their tables and the shared kit's
  --status          apply nothing: print each set's applied and pending migrations; exit 1 if any is pending
  --json            with --status: print JSON
`,
  token: `usage: orderly token --tenant T --user U --role customer|admin [--ttl 1h]

Prints a JWT signed with ORDERLY_JWT_SECRET (or the data dir's dev secret) for that identity.

  --tenant T     tenant id (1 to 128 printable characters)
  --user U       user id (1 to 128 printable characters)
  --role R       customer or admin; repeat it or give a comma list for both
  --ttl D        lifetime: 30s, 15m, 1h (default) or 7d
`,
  dlq: `usage: orderly dlq list [--status STATUS] [--json]
       orderly dlq show ID [--json]
       orderly dlq retry ID | skip ID | resolve ID --note TEXT   [--actor NAME]

Dead letters: work that failed past its retry limit. retry re-drives it (or refuses, saying why),
skip gives up on it, resolve records that it was handled outside Orderly; every action is audited
with the actor (default: $USER). ${DATABASE_NOTE}

  --status S     open (default), retried, skipped, resolved or all (list)
  --json         print JSON instead of text (list, show)
  --note TEXT    how it was handled (resolve; required)
  --actor NAME   who acts (retry, skip, resolve)
`,
  order: `usage: orderly order show ID [--tenant T] [--json]

Prints one order's timeline: state moves, saga steps with their durations, messages and the
consumers that handled them, payments, dead letters and the actions on them, in time order.
${DATABASE_NOTE}

  --tenant T     the order's tenant (found from the id when not given)
  --json         print the timeline as JSON (as GET /api/v1/admin/orders/{id}/timeline)
`,
  openapi: `usage: orderly openapi [--out FILE]

Writes the OpenAPI 3.1 document of the whole API (every service's paths, as /docs/json serves it)
to stdout or FILE. The repository keeps a copy in openapi.json, checked in CI to be current, and the
typed client's types (client/schema.d.ts) are generated from it: npm run openapi does both.

  --out FILE     write to FILE instead of stdout
`,
};

const wantsHelp = (args: string[]) => args.includes("--help") || args.includes("-h");

/** parseArgs, with its errors (an unknown option, a missing value) as usage errors. */
function parse<T extends ParseArgsConfig["options"]>(args: string[], options: T, allowPositionals = false) {
  try {
    return parseArgs({ args, options, allowPositionals, strict: true });
  } catch (error) {
    if (error instanceof TypeError && "code" in error) throw new UsageError(undefined, error.message);
    throw error;
  }
}

async function serve(args: string[]) {
  const { values } = parse(args, {
    services: { type: "string", default: "all" },
    demo: { type: "boolean", default: false },
    "no-migrate": { type: "boolean", default: false },
  });
  const services = parseServices(values.services);
  const config = loadConfig();
  // The server, its app and services load only for the commands that need them: the others start in a fraction of the time.
  const { startServer } = await import("./server.ts");
  const running = await startServer(config, { demo: config.demo ?? values.demo, roles: services, migrate: !values["no-migrate"] });
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) process.exit(130); // a second Ctrl-C does not wait
    stopping = true;
    running.services.log.info({ signal, readyzFirstMs: config.shutdownDelayMs }, "shutting down");
    setTimeout(() => {
      running.services.log.error({ timeoutMs: config.shutdownTimeoutMs }, "shutdown took longer than ORDERLY_SHUTDOWN_TIMEOUT_MS; exiting");
      process.exit(1);
    }, config.shutdownTimeoutMs).unref();
    running.close({ readyzFirstMs: config.shutdownDelayMs }).then(
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

async function migrate(args: string[]) {
  const { values } = parse(args, { services: { type: "string", default: "all" }, status: { type: "boolean", default: false }, json: { type: "boolean", default: false } });
  if (values.json && !values.status) throw new UsageError("migrate", "--json goes with --status");
  const services = parseServices(values.services);
  const config = loadConfig();
  // The database `serve --services` with the same list opens.
  const target = { ...databaseFor(config, services), sets: services };
  if (!values.status) {
    const database = await openDatabase(config, target);
    await database.close();
    pino().info({ database: database.kind, services }, "migrations applied");
    return;
  }
  const database = await openDatabase(config, { ...target, migrate: "none" });
  const statuses = await migrationStatus(database.db, services).finally(() => database.close());
  if (values.json) process.stdout.write(`${JSON.stringify(statuses, null, 2)}\n`);
  else {
    for (const { set, applied, pending } of statuses) {
      process.stdout.write(`${set.padEnd(10)} ${String(applied).padStart(3)} applied  ${pending.length === 0 ? "up to date" : `${pending.length} pending: ${pending.join(", ")}`}\n`);
    }
  }
  if (statuses.some((s) => s.pending.length > 0)) process.exitCode = 1;
}

async function token(args: string[]) {
  const { values } = parse(args, { tenant: { type: "string" }, user: { type: "string" }, role: { type: "string", multiple: true }, ttl: { type: "string", default: "1h" } });
  if (!values.tenant || !PrintableId.safeParse(values.tenant).success) throw new UsageError("--tenant", "is required: 1 to 128 printable characters");
  if (!values.user || !PrintableId.safeParse(values.user).success) throw new UsageError("--user", "is required: 1 to 128 printable characters");
  const roles = (values.role ?? []).flatMap((r) => r.split(","));
  if (roles.length === 0 || !roles.every((r): r is Role => (ROLES as readonly string[]).includes(r))) {
    throw new UsageError("--role", "must be customer or admin");
  }
  const ttl = parseTtl(values.ttl);
  if (!ttl) throw new UsageError("--ttl", "must look like 30s, 15m, 1h or 7d");
  const config = loadConfig();
  const { jwtSecret } = resolveSecrets(config);
  if (!jwtSecret) throw new ConfigError("ORDERLY_JWT_SECRET", "is needed to sign tokens");
  process.stdout.write(`${await createTokens({ secret: jwtSecret, issuer: config.jwtIssuer, audience: config.jwtAudience, claims: config.jwtClaims }).sign({ tenantId: values.tenant, userId: values.user, roles }, ttl)}\n`);
}

/** Dead letters: list or show them, or retry / skip / resolve one (each action audited with its actor). */
async function dlq(args: string[]) {
  const { values, positionals } = parse(
    args,
    {
      status: { type: "string", default: "open" },
      note: { type: "string" },
      actor: { type: "string", default: process.env.USER ?? "cli" },
      json: { type: "boolean", default: false },
    },
    true,
  );
  const [action, id, ...extra] = positionals;
  const actions = ["list", "show", "retry", "skip", "resolve"];
  if (!action || !actions.includes(action)) throw new UsageError("dlq", `${action ? `unknown action "${action}"` : "an action is required"}; use ${actions.join(", ")} (orderly dlq --help)`);
  if (extra.length > 0) throw new UsageError("dlq", `unexpected argument "${extra[0]}"`);
  const statuses = ["open", "retried", "skipped", "resolved", "all"] as const;
  if (!statuses.includes(values.status as (typeof statuses)[number])) throw new UsageError("--status", `must be one of ${statuses.join(", ")}`);
  if (action !== "list" && !id) throw new UsageError("dlq", `${action} needs a dead letter id; see orderly dlq --help`);
  if (action === "resolve" && !values.note) throw new UsageError("--note", "is required to resolve a dead letter (say how it was handled)");
  const database = await openDatabase(loadConfig());
  try {
    const letters = createDeadLetters({ clock: systemClock, newId });
    let outcome: DeadLetterOutcome;
    switch (action) {
      case "list": {
        const status = values.status === "all" ? undefined : (values.status as "open");
        const found = await letters.list(database.db, { status });
        process.stdout.write(values.json ? `${JSON.stringify(found, null, 2)}\n` : renderDeadLetterList(found));
        return;
      }
      case "show": {
        const letter = await letters.get(database.db, id as string);
        if (!letter) throw new ConfigError("dlq", `no dead letter ${id}`);
        const trail = await letters.actions(database.db, letter.id);
        process.stdout.write(values.json ? `${JSON.stringify({ ...letter, actions: trail }, null, 2)}\n` : renderDeadLetter(letter, trail));
        return;
      }
      case "retry":
        outcome = await letters.retry(database.db, id as string, values.actor);
        break;
      case "skip":
        outcome = await letters.skip(database.db, id as string, values.actor);
        break;
      default:
        outcome = await letters.resolve(database.db, id as string, values.actor, values.note as string);
    }
    // A refusal (unknown id, already closed, nothing to re-drive) is one line on stderr and exit 1.
    if (!outcome.ok) throw new ConfigError("dlq", outcome.detail ?? outcome.reason);
    process.stdout.write(`${JSON.stringify(outcome.value)}\n`);
  } finally {
    await database.close();
  }
}

/** One order's timeline, as the admin API answers it. */
async function order(args: string[]) {
  const { values, positionals } = parse(args, { tenant: { type: "string" }, json: { type: "boolean", default: false } }, true);
  const [action, id, ...extra] = positionals;
  if (action !== "show") throw new UsageError("order", `${action ? `unknown action "${action}"` : "an action is required"}; use show (orderly order --help)`);
  if (!id) throw new UsageError("order", "show needs an order id; see orderly order --help");
  if (extra.length > 0) throw new UsageError("order", `unexpected argument "${extra[0]}"`);
  const database = await openDatabase(loadConfig());
  try {
    const outbox = createOutbox({ clock: systemClock, newId });
    const orders = createOrders({ hooks: createTransitionHooks(() => {}), clock: systemClock, outbox });
    const operations = createOperations({ database, orders, clock: systemClock, payments: "if-present" });
    const tenantId = values.tenant ?? (await operations.tenantOfOrder(id));
    const timeline = tenantId === undefined ? undefined : await operations.timeline(tenantId, id);
    if (!timeline) throw new ConfigError("order", `no order ${id}${values.tenant ? ` in tenant ${values.tenant}` : ""} in this database`);
    process.stdout.write(values.json ? `${JSON.stringify(timeline, null, 2)}\n` : renderTimeline(timeline));
  } finally {
    await database.close();
  }
}

/** The OpenAPI document: the all-in-one app's routes, built on an empty in-memory database (nothing is served or stored). */
async function openapi(args: string[]) {
  const { values } = parse(args, { out: { type: "string" } });
  const [{ openPglite }, { createServices }, { buildApp }] = await Promise.all([import("./db/pglite.ts"), import("./services.ts"), import("./app.ts")]);
  const database = await openPglite(undefined);
  const config = loadConfig({});
  const services = createServices({ config, database, secrets: { jwtSecret: undefined, webhookSecret: "unused-for-the-document" }, log: pino({ level: "silent" }) });
  const app = await buildApp(services);
  try {
    await app.ready();
    const text = `${JSON.stringify(app.swagger(), null, 2)}\n`;
    if (values.out) writeFileSync(values.out, text);
    else process.stdout.write(text);
  } finally {
    await app.close();
    await services.close();
    await database.close();
  }
}

const COMMANDS: Record<string, (args: string[]) => Promise<void>> = { serve, migrate, token, dlq, order, openapi };

async function main(argv: string[]) {
  const [command, ...rest] = argv;
  if (command === undefined) throw new UsageError(undefined, "a command is required; see orderly --help");
  if (command === "--help" || command === "-h" || command === "help") {
    process.stdout.write(USAGE);
    return;
  }
  const run = COMMANDS[command];
  if (!run) throw new UsageError(undefined, `unknown command "${command}"; see orderly --help`);
  if (wantsHelp(rest)) {
    process.stdout.write(HELP[command] as string);
    return;
  }
  await run(rest);
}

main(process.argv.slice(2)).catch((error: unknown) => {
  const message = error instanceof UsageError || error instanceof ConfigError ? error.message : String(error);
  process.stderr.write(`orderly: ${message.split("\n")[0]}\n`);
  process.exit(error instanceof UsageError ? 2 : 1);
});
