// Where a placement's CPU goes: the all-in-one server on a fresh PostgreSQL database under
// `node --cpu-prof`, the uniform order load for a few seconds, then the profile summarised
// (bench/cpu-profile.ts). Usage, with DATABASE_URL (and optionally REDIS_URL) set:
//   node bin/tsx-run.mjs bench/profile.ts [SECONDS=15] [CONNECTIONS=64]
// The profile is kept in bench/results/profile-<time>/ for Chrome DevTools or speedscope.
import { mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { type CpuProfile, formatSummary, summarise } from "./cpu-profile.ts";
import { scratchDatabase } from "./databases.ts";
import { fmt } from "./figures.ts";
import { cleanUp, guardExits, progress } from "./lifecycle.ts";
import { buildServer, cpuSeconds, startServer } from "./servers.ts";
import { customerTokens, placeOrders, seedShop, uniformOrder } from "./workloads.ts";

const seconds = Number(process.argv[3] ?? 15);
const connections = Number(process.argv[4] ?? 64);
const base = process.env.DATABASE_URL;
if (!base?.startsWith("postgres")) {
  console.error("bench/profile.ts needs DATABASE_URL=postgres://… (it creates and drops its own database there)");
  process.exit(2);
}
// PROFILE_SKUS / PROFILE_USERS: the bench's own uniform phase seeds 10,000 of each.
const catalogue = { skus: Number(process.env.PROFILE_SKUS ?? 1_000), users: Number(process.env.PROFILE_USERS ?? 200) };
const tenant = "profile";
const stamp = new Date().toISOString().replace(/[:.]/g, "-");
const workDir = resolve(import.meta.dirname, "results", `profile-${stamp}`);
mkdirSync(workDir, { recursive: true });
guardExits(5 * 60_000);

try {
  buildServer();
  const databaseUrl = await scratchDatabase(base, `orderly_profile_${process.pid}`);
  const server = await startServer({
    name: "profiled",
    env: {
      DATABASE_URL: databaseUrl,
      REDIS_URL: process.env.REDIS_URL,
      ORDERLY_DATA_DIR: join(workDir, "data"),
    },
    nodeArgs: ["--cpu-prof", `--cpu-prof-dir=${workDir}`],
    logDir: workDir,
  });
  await seedShop({ products: server.url, accounts: server.url }, tenant, catalogue);
  const tokens = await customerTokens(tenant, catalogue.users);
  const load = { url: server.url, connections, tokens, order: uniformOrder(catalogue) };
  await placeOrders({ ...load, label: "warm-up", seconds: 3, quiet: true });
  const nowUs = () => Number(process.hrtime.bigint() / 1000n);
  const cpuBefore = await cpuSeconds(server.url);
  const fromUs = nowUs();
  const run = await placeOrders({ ...load, label: "profiled", seconds });
  const toUs = nowUs();
  const cpuMs = ((await cpuSeconds(server.url)) - cpuBefore) * 1000;
  const { p50, p99 } = run.latencyMs;
  progress(`${fmt(run.ordersPerSecond, 1)} orders/s over ${fmt(run.seconds, 1)} s at ${connections} connections; p50 ${fmt(p50)} ms, p99 ${fmt(p99)} ms; answers ${JSON.stringify(run.answers)}`);
  // On a shared machine the rate follows the neighbours' load; the server's own CPU time per order much less.
  progress(`server CPU ${fmt(cpuMs / 1000, 2)} s (user + system): ${fmt(cpuMs / run.orders, 2)} ms per order`);
  await server.stop(); // a graceful exit is when Node writes the profile
  // The main thread's profile is the largest (the loader thread of tsx writes its own, small one).
  const files = readdirSync(workDir)
    .filter((f) => f.endsWith(".cpuprofile"))
    .map((f) => join(workDir, f))
    .sort((a, b) => statSync(b).size - statSync(a).size);
  if (!files[0]) throw new Error(`the server wrote no profile in ${workDir}`);
  const profile = JSON.parse(readFileSync(files[0], "utf8")) as CpuProfile;
  if (profile.startTime > fromUs || profile.endTime < toUs) throw new Error("the profile does not cover the load (its clock is not this process's monotonic clock)");
  writeFileSync(`${files[0]}.window.json`, JSON.stringify({ fromUs, toUs, orders: run.orders, cpuMs }));
  console.log(`${files[0]}, the ${fmt(run.seconds, 1)} s of load only\n${formatSummary(summarise(profile, 15, { fromUs, toUs }))}`);
} finally {
  await cleanUp();
}
