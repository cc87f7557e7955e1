import type { FastifyReply, FastifyRequest } from "fastify";
import { AppError } from "../kit/errors.ts";
import type { RateLimiter } from "../kit/rate-limiter.ts";
import { sendProblem } from "./problem.ts";

/**
 * onRequest hook: one token per request from the bucket of `keyOf(request)`; 429 RATE_LIMITED with
 * Retry-After when it is empty. Every answer carries the RateLimit-* headers. If the limiter's store
 * is unreachable the request goes through (logged): an outage of Redis must not stop the shop.
 */
export function rateLimit(limiter: RateLimiter, keyOf: (request: FastifyRequest) => string, onRejected: () => void = () => {}) {
  const policy = `${limiter.burst};w=${Math.max(1, Math.ceil(limiter.burst / limiter.rps))}`;
  return async (request: FastifyRequest, reply: FastifyReply) => {
    let decision;
    try {
      decision = await limiter.take(keyOf(request));
    } catch (error) {
      request.log.warn({ err: error }, "rate limiter unavailable; request let through");
      return;
    }
    reply.headers({
      "ratelimit-policy": policy,
      "ratelimit-limit": String(limiter.burst),
      "ratelimit-remaining": String(decision.remaining),
      "ratelimit-reset": String(decision.resetS),
    });
    if (!decision.allowed) {
      onRejected();
      reply.header("retry-after", String(decision.retryAfterS));
      return sendProblem(request, reply, new AppError("RATE_LIMITED", `too many requests; retry in ${decision.retryAfterS} s`));
    }
  };
}
