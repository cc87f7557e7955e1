import type { FastifyPluginAsyncZod } from "fastify-type-provider-zod";
import { z } from "zod";
import { AppError } from "../../kit/errors.ts";
import type { Services } from "../../services.ts";
import { problems } from "../schemas.ts";

const Health = z.object({ status: z.literal("ok") });
const Ready = z.object({ status: z.literal("ready"), checks: z.record(z.string(), z.literal("ok")) });

/** /healthz (process alive), /readyz (dependencies reachable), /metrics (Prometheus text). */
export function opsRoutes(services: Services): FastifyPluginAsyncZod {
  return async (app) => {
    app.get("/healthz", { schema: { tags: ["operations"], security: [], response: { 200: Health } } }, async () => ({ status: "ok" as const }));

    app.get(
      "/readyz",
      { schema: { tags: ["operations"], security: [], response: { 200: Ready, ...problems(503) } } },
      async () => {
        const checks: Record<string, "ok"> = {};
        for (const [name, ping] of [
          ["database", () => services.database.ping()],
          ...(services.config.redisUrl ? [["cache", () => services.rateLimiter.ping()] as const] : []),
          ...(services.saga ? [["broker", () => services.saga!.bus.ping()] as const] : []),
        ] as const) {
          try {
            await ping();
            checks[name] = "ok";
          } catch {
            throw new AppError("SERVICE_UNAVAILABLE", `the ${name} does not answer`);
          }
        }
        return { status: "ready" as const, checks };
      },
    );

    app.get("/metrics", { schema: { tags: ["operations"], security: [], hide: true } }, async (_request, reply) =>
      reply.type(services.metrics.registry.contentType).send(await services.metrics.registry.metrics()),
    );
  };
}
