import { randomUUID } from "node:crypto";
import type { IncomingMessage } from "node:http";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import type { Identities } from "../auth/identity.ts";
import type { Identity } from "../auth/tokens.ts";
import { AppError } from "../kit/errors.ts";
import { randomHex } from "../kit/ids.ts";
import { currentTraceparent } from "../kit/trace-context.ts";
import type { Viewer } from "../modules/orders/orders.ts";
import { sendProblem } from "./problem.ts";

declare module "fastify" {
  interface FastifyRequest {
    traceId: string;
    identity: Identity | undefined;
    /** The body as received, for signature checks. */
    rawBody: string | undefined;
  }
}

const REQUEST_ID = /^[\x21-\x7e]{1,128}$/;
const TRACEPARENT = /^[\da-f]{2}-([\da-f]{32})-[\da-f]{16}-[\da-f]{2}$/;

/** `X-Request-Id` echoed when the client sent a sane one, otherwise made here. */
export function requestIdOf(raw: IncomingMessage): string {
  const given = raw.headers["x-request-id"];
  return typeof given === "string" && REQUEST_ID.test(given) ? given : randomUUID();
}

/** Request ids, W3C trace context, and the `/api` authentication hook. */
export function registerRequestContext(app: FastifyInstance): void {
  app.decorateRequest("traceId", "");
  app.decorateRequest("identity", undefined);
  app.decorateRequest("rawBody", undefined);
  app.addHook("onRequest", async (request, reply) => startTrace(request, reply));
}

/**
 * The request's trace: with tracing on, the HTTP server span's (which continued the caller's
 * `traceparent`); otherwise the trace id of `traceparent`, or a new one. Sets the tracing headers of
 * the answer.
 */
export function startTrace(request: FastifyRequest, reply: FastifyReply): void {
  const traced = currentTraceparent();
  if (traced) {
    request.traceId = (TRACEPARENT.exec(traced)?.[1] as string) ?? randomHex(16);
    reply.header("x-request-id", request.id);
    reply.header("traceparent", traced);
    return;
  }
  const parent = request.headers.traceparent;
  const match = typeof parent === "string" ? TRACEPARENT.exec(parent) : null;
  request.traceId = match?.[1] && !/^0+$/.test(match[1]) ? match[1] : randomHex(16);
  reply.header("x-request-id", request.id);
  reply.header("traceparent", `00-${request.traceId}-${randomHex(8)}-01`);
}

/** onRequest hook for a scope: a valid bearer token or 401, before any body is parsed or validated. */
export function authenticate(identities: Identities) {
  return async (request: FastifyRequest, reply: FastifyReply) => {
    const header = request.headers.authorization;
    const match = typeof header === "string" ? /^Bearer ([A-Za-z0-9._~+/=-]+)$/i.exec(header.trim()) : null;
    const identity = match?.[1] ? await identities.verify(match[1]) : undefined;
    if (!identity) {
      reply.header("www-authenticate", 'Bearer realm="orderly"');
      return sendProblem(request, reply, new AppError("UNAUTHENTICATED", header ? "the bearer token is not valid" : "a bearer token is required"));
    }
    request.identity = identity;
  };
}

/** Route-level onRequest hook: admins only (runs after authentication, before validation). */
export async function requireAdmin(request: FastifyRequest, reply: FastifyReply) {
  if (!request.identity?.roles.includes("admin")) {
    return sendProblem(request, reply, new AppError("FORBIDDEN", "this needs the admin role"));
  }
}

/** The signed-in caller, as the order queries see them. */
export function viewerOf(request: FastifyRequest): Viewer {
  const identity = request.identity as Identity;
  return { tenantId: identity.tenantId, userId: identity.userId, admin: identity.roles.includes("admin") };
}

/** Reads `If-Match: W/"<version>"`; undefined when absent or `*`. A value that names no version never matches. */
export function expectedVersion(request: FastifyRequest): number | undefined {
  const header = request.headers["if-match"];
  if (header === undefined || header.trim() === "*") return undefined;
  const match = /^\s*(?:W\/)?"(\d{1,9})"\s*$/.exec(header);
  return match ? Number(match[1]) : -1;
}

export const etagOf = (version: number) => `W/"${version}"`;
