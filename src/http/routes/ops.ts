import type { FastifyPluginAsyncZod } from "fastify-type-provider-zod";
import { z } from "zod";
import { AppError } from "../../kit/errors.ts";
import type { Metrics } from "../../ops/metrics.ts";
import { problems } from "../schemas.ts";

const Health = z.object({ status: z.literal("ok") });
const Ready = z.object({ status: z.literal("ready"), checks: z.record(z.string(), z.literal("ok")) });

/** A dependency `/readyz` checks: its name, and a ping that rejects while it cannot be reached. */
export interface ReadinessCheck {
  name: string;
  ping(): Promise<void>;
}

/** /healthz (process alive), /readyz (dependencies reachable), /metrics (Prometheus text). */
export function opsRoutes(deps: { checks: readonly ReadinessCheck[]; metrics: Metrics; stopping(): boolean }): FastifyPluginAsyncZod {
  return async (app) => {
    app.get("/healthz", { schema: { tags: ["operations"], operationId: "getHealth", summary: "The process is alive", security: [], response: { 200: Health } } }, async () => ({ status: "ok" as const }));

    app.get(
      "/readyz",
      { schema: { tags: ["operations"], operationId: "getReadiness", summary: "The process can take work: its dependencies answer and it is not shutting down", security: [], response: { 200: Ready, ...problems(503) } } },
      async () => {
        // A process shutting down is taken out of rotation first, while it still finishes what it has.
        if (deps.stopping()) throw new AppError("SERVICE_UNAVAILABLE", "not ready: shutting down");
        // All at once, and every failure named: the database and the listener often fail together.
        const results = await Promise.allSettled(deps.checks.map((check) => check.ping()));
        const failing = deps.checks.filter((_, i) => results[i]?.status === "rejected").map((check) => check.name);
        if (failing.length > 0) throw new AppError("SERVICE_UNAVAILABLE", `not ready: ${failing.join(", ")} unavailable`);
        return { status: "ready" as const, checks: Object.fromEntries(deps.checks.map((check) => [check.name, "ok" as const])) };
      },
    );

    app.get("/metrics", { schema: { tags: ["operations"], security: [], hide: true } }, async (_request, reply) =>
      reply.type(deps.metrics.registry.contentType).send(await deps.metrics.registry.metrics()),
    );
  };
}
