import { context, propagation, type Span, SpanKind, SpanStatusCode, trace } from "@opentelemetry/api";

// Trace context through Orderly's own hops, with OpenTelemetry's API: without the SDK (no OTLP
// endpoint) every call here is a no-op of the API. The W3C traceparent travels in the outbox row
// (written by outbox_enqueue from the transaction's orderly.traceparent) and in the message (a
// RabbitMQ header), so one order's spans across the services form one trace.

const tracer = trace.getTracer("orderly");

/** The W3C traceparent of the active span, or undefined when nothing is being traced. */
export function currentTraceparent(): string | undefined {
  const carrier: Record<string, string> = {};
  propagation.inject(context.active(), carrier);
  return carrier.traceparent;
}

/** The active span's ids, for log lines (pino's mixin); empty when nothing is being traced. */
export function traceFields(): { traceId?: string; spanId?: string } {
  const span = trace.getActiveSpan()?.spanContext();
  return span && trace.isSpanContextValid(span) ? { traceId: span.traceId, spanId: span.spanId } : {};
}

/**
 * Runs work in a span of its own, a child of `traceparent` (a message's) or of the active context,
 * and active while the work runs: its database spans and log lines belong to it. A throw marks the
 * span failed and goes on.
 */
export function inSpan<T>(
  name: string,
  options: { kind: "producer" | "consumer"; traceparent?: string | null | undefined; attributes?: Record<string, string> },
  work: (span: Span) => Promise<T>,
): Promise<T> {
  const parent = options.traceparent ? propagation.extract(context.active(), { traceparent: options.traceparent }) : context.active();
  const kind = options.kind === "producer" ? SpanKind.PRODUCER : SpanKind.CONSUMER;
  return tracer.startActiveSpan(name, { kind, attributes: { "messaging.system": "orderly", ...options.attributes } }, parent, async (span) => {
    try {
      return await work(span);
    } catch (error) {
      span.recordException(error as Error);
      span.setStatus({ code: SpanStatusCode.ERROR, message: (error as Error).message });
      throw error;
    } finally {
      span.end();
    }
  });
}

let shutdown: (() => Promise<void>) | undefined;

/** Set by the entry when it started the SDK: flushes the spans not yet exported. */
export function setTracingShutdown(flush: () => Promise<void>): void {
  shutdown = flush;
}

/** Exports what is left before the process exits (graceful shutdown); nothing when tracing is off. */
export async function flushTracing(): Promise<void> {
  await shutdown?.();
}
