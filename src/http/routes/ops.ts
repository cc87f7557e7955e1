import type { FastifyPluginAsyncZod } from "fastify-type-provider-zod";
import { z } from "zod";
import { AppError } from "../../kit/errors.ts";
import type { Services } from "../../services.ts";
import { problems } from "../schemas.ts";

const Health = z.object({ status: z.literal("ok") });
const Ready = z.object({ status: z.literal("ready"), checks: z.record(z.string(), z.literal("ok")) });

/** /healthz (process alive), /readyz (dependencies reachable), /metrics (Prometheus text). */
export function opsRoutes(services: Services): FastifyPluginAsyncZod {
  const notificationsLive = async () => {
    if (services.database.notifications() !== "live") throw new Error("the LISTEN connection is being re-established");
  };
  return async (app) => {
    app.get("/healthz", { schema: { tags: ["operations"], security: [], response: { 200: Health } } }, async () => ({ status: "ok" as const }));

    app.get(
      "/readyz",
      { schema: { tags: ["operations"], security: [], response: { 200: Ready, ...problems(503) } } },
      async () => {
        const probes = [
          ["database", () => services.database.ping()],
          ...(services.config.redisUrl ? [["cache", () => services.rateLimiter.ping()] as const] : []),
          ...(services.saga ? [["broker", () => services.saga!.bus.ping()] as const] : []),
          // Only when something listens: without NOTIFY, relays and waiters fall back to polling.
          ...(services.database.notifications() === "off" ? [] : [["notifications", notificationsLive] as const]),
        ] as const;
        // All at once, and every failure named: the database and the listener often fail together.
        const results = await Promise.allSettled(probes.map(([, probe]) => probe()));
        const failing = probes.filter((_, i) => results[i]?.status === "rejected").map(([name]) => name);
        if (failing.length > 0) throw new AppError("SERVICE_UNAVAILABLE", `not ready: ${failing.join(", ")} unavailable`);
        return { status: "ready" as const, checks: Object.fromEntries(probes.map(([name]) => [name, "ok" as const])) };
      },
    );

    app.get("/metrics", { schema: { tags: ["operations"], security: [], hide: true } }, async (_request, reply) =>
      reply.type(services.metrics.registry.contentType).send(await services.metrics.registry.metrics()),
    );
  };
}
