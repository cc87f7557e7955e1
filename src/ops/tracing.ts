import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { registerInstrumentations } from "@opentelemetry/instrumentation";
import { HttpInstrumentation } from "@opentelemetry/instrumentation-http";
import { PgInstrumentation } from "@opentelemetry/instrumentation-pg";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { BatchSpanProcessor, NodeTracerProvider } from "@opentelemetry/sdk-trace-node";

/** Paths whose requests make no span: probes and scrapes, many times a minute. */
const UNTRACED = new Set(["/healthz", "/readyz", "/metrics"]);

/**
 * OpenTelemetry tracing, exported over OTLP/HTTP: started by the CLI (src/cli.ts) before
 * anything else loads, so the instrumentations of Node's http (an HTTP server span per request) and
 * of pg (a span per query) patch those modules as they load. The exporter reads the standard
 * variables (OTEL_EXPORTER_OTLP_ENDPOINT, _HEADERS, …); OTEL_SERVICE_NAME names the service.
 * Orderly's own spans (PRODUCER when the relay publishes an outbox row, CONSUMER when a message is
 * handled) are made with @opentelemetry/api in src/kit/trace-context.ts.
 */
export function startTracing(serviceName: string): { shutdown(): Promise<void> } {
  const provider = new NodeTracerProvider({
    resource: resourceFromAttributes({ "service.name": process.env.OTEL_SERVICE_NAME || serviceName }),
    spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter())],
  });
  // The global tracer provider, the W3C trace-context propagator and an AsyncLocalStorage context manager.
  provider.register();
  registerInstrumentations({
    tracerProvider: provider,
    instrumentations: [
      new HttpInstrumentation({ ignoreIncomingRequestHook: (request) => UNTRACED.has((request.url ?? "").split("?")[0] as string) }),
      // Queries outside any request or message (the relay's polling, jobs) make no trace of their own.
      new PgInstrumentation({ requireParentSpan: true }),
    ],
  });
  return { shutdown: () => provider.shutdown() };
}
