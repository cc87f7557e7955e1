import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { hasZodFastifySchemaValidationErrors } from "fastify-type-provider-zod";
import { isDatabaseBusy, isDatabaseUnavailable, sqlState } from "../db/errors.ts";
import { AppError, type FieldError, type ProblemCode, titleOf } from "../kit/errors.ts";
import { IdempotencyClaimLost } from "../kit/idempotency.ts";

const kebab = (code: string) => code.toLowerCase().replaceAll("_", "-");

/** Sends one RFC 9457 problem. */
export function sendProblem(request: FastifyRequest, reply: FastifyReply, error: AppError): FastifyReply {
  const { errors, ...extra } = error.extra;
  return reply
    .code(error.status)
    .type("application/problem+json")
    .send({
      type: `urn:orderly:problem:${kebab(error.code)}`,
      title: titleOf(error.code),
      status: error.status,
      detail: error.detail,
      code: error.code,
      traceId: request.traceId,
      ...(errors ? { errors } : {}),
      ...extra,
    });
}

const STATUS_CODES: Record<number, ProblemCode> = {
  400: "VALIDATION_FAILED",
  401: "UNAUTHENTICATED",
  403: "FORBIDDEN",
  404: "NOT_FOUND",
  405: "METHOD_NOT_ALLOWED",
  406: "NOT_ACCEPTABLE",
  413: "PAYLOAD_TOO_LARGE",
  415: "UNSUPPORTED_MEDIA_TYPE",
  429: "RATE_LIMITED",
};

// 22021: a byte sequence invalid in UTF-8 (PostgreSQL's answer to U+0000 in text); 22P05: a character
// it cannot translate (U+0000 in jsonb). The edge refuses such text first; this is the last line.
const UNSTORABLE_TEXT = new Set(["22021", "22P05"]);

/** Maps whatever a request threw to a problem. Unknown errors become a 500 that leaks nothing. */
function toAppError(error: FastifyError): AppError {
  if (error instanceof AppError) return error;
  if (error instanceof IdempotencyClaimLost) return new AppError("IDEMPOTENCY_KEY_IN_USE", "another request took over this Idempotency-Key; nothing was done");
  if (hasZodFastifySchemaValidationErrors(error)) {
    const errors: FieldError[] = error.validation.map((v) => ({
      path: [error.validationContext, ...v.instancePath.split("/").filter(Boolean)].join("."),
      message: v.message ?? "is invalid",
    }));
    return new AppError("VALIDATION_FAILED", "the request is not valid; see errors", { errors });
  }
  if (error.code === "FST_ERR_CTP_INVALID_JSON_BODY" || error instanceof SyntaxError) {
    return new AppError("MALFORMED_JSON", "the body is not valid JSON");
  }
  if (error.code === "FST_ERR_CTP_EMPTY_JSON_BODY") return new AppError("VALIDATION_FAILED", "the body is empty", { errors: [{ path: "body", message: "is required" }] });
  const status = error.statusCode;
  if (status && status >= 400 && status < 500) {
    const code = STATUS_CODES[status] ?? "VALIDATION_FAILED";
    return new AppError(code, status === 413 ? "the body is larger than 1 MiB" : error.message);
  }
  const state = sqlState(error);
  if (state && UNSTORABLE_TEXT.has(state)) return new AppError("VALIDATION_FAILED", "the request holds text that cannot be stored (a NUL character)");
  if (isDatabaseUnavailable(error)) return new AppError("SERVICE_UNAVAILABLE", "the database cannot be reached; retry shortly");
  if (isDatabaseBusy(error)) return new AppError("SERVICE_UNAVAILABLE", "the database is busy; retry shortly");
  return new AppError("INTERNAL", "an unexpected error occurred; it was logged with this traceId");
}

/** The message of the error at the bottom of a cause chain: drizzle's wrapper quotes the statement and its parameters. */
function innermostMessage(error: Error): string {
  let inner = error;
  while (inner.cause instanceof Error) inner = inner.cause;
  return inner.message;
}

export function registerProblemHandlers(app: FastifyInstance): void {
  app.setErrorHandler((error: FastifyError, request, reply) => {
    const problem = toAppError(error);
    if (problem.code === "SERVICE_UNAVAILABLE") {
      // An outage fails every request alike: one warning line each, without a stack, not an error.
      request.log.warn({ reason: innermostMessage(error), sqlState: sqlState(error) }, `request refused: ${problem.detail}`);
      reply.header("retry-after", "1");
    } else if (problem.status >= 500) {
      request.log.error({ err: error }, "request failed");
    }
    return sendProblem(request, reply, problem);
  });
  app.setNotFoundHandler((request, reply) =>
    sendProblem(request, reply, new AppError("NOT_FOUND", `no route ${request.method} ${request.url.split("?")[0]}`)),
  );
}
