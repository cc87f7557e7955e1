// The CLI (the package's bin runs it; the commands are in commands.ts). With
// OTEL_EXPORTER_OTLP_ENDPOINT set, tracing starts first: import-in-the-middle's loader hook is
// registered, then the SDK, so that http and pg are instrumented when the commands load them.
// Without it nothing of OpenTelemetry's SDK is loaded.
import { register } from "node:module";
import { tracingWanted } from "./ops/tracing-wanted.ts";
import { setTracingShutdown } from "./kit/trace-context.ts";

if (tracingWanted(process.env)) {
  register("@opentelemetry/instrumentation/hook.mjs", import.meta.url);
  const { startTracing } = await import("./ops/tracing.ts");
  const services = process.argv.includes("--services") ? process.argv[process.argv.indexOf("--services") + 1] : undefined;
  setTracingShutdown(startTracing(!services || services === "all" ? "orderly" : `orderly-${services.replaceAll(",", "-")}`).shutdown);
}
// `serve` of the all-in-one on the embedded database: the database starts booting on a thread of its
// own now, while the commands and the server load.
if (process.argv[2] === "serve") (await import("./db/pglite-thread.ts")).bootAheadToServe(process.argv.slice(3), process.env);
await import("./commands.ts");
