import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import fastifySwagger from "@fastify/swagger";
import fastifySwaggerUi from "@fastify/swagger-ui";
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from "fastify";
import { jsonSchemaTransform, jsonSchemaTransformObject, serializerCompiler, validatorCompiler } from "fastify-type-provider-zod";
import type { Logger } from "pino";
import type { z } from "zod";
import { AppError } from "./kit/errors.ts";
import { authenticate, registerRequestContext, requestIdOf, startTrace } from "./http/context.ts";
import { registerIdempotency } from "./http/idempotency.ts";
import { finishDocument } from "./http/openapi.ts";
import { registerProblemHandlers, sendProblem } from "./http/problem.ts";
import { rateLimit } from "./http/rate-limit.ts";
import { withSafeText } from "./http/schemas.ts";
import { accountRoutes } from "./http/routes/accounts.ts";
import { adminRoutes } from "./http/routes/admin.ts";
import { authRoutes } from "./http/routes/auth.ts";
import { consoleRoutes } from "./http/routes/console.ts";
import { couponRoutes } from "./http/routes/coupons.ts";
import { opsRoutes, type ReadinessCheck } from "./http/routes/ops.ts";
import { orderRoutes } from "./http/routes/orders.ts";
import { paymentRoutes } from "./http/routes/payments.ts";
import { productRoutes } from "./http/routes/products.ts";
import { webhookRoutes } from "./http/routes/webhooks.ts";
import type { Services } from "./services.ts";

const ONE_MIB = 1024 * 1024;

/**
 * The Swagger UI's page and assets, in its package's folder. The plugin finds them from its own
 * __dirname, which it no longer has once bundled (bin/build-server.mjs), so they are named here.
 */
const SWAGGER_UI_FILES = join(dirname(createRequire(import.meta.url).resolve("@fastify/swagger-ui/package.json")), "static");

/** Fastify's trustProxy from ORDERLY_TRUST_PROXY; a hop count n trusts the n addresses nearest the server. */
function trustProxyOption(trust: Services["config"]["trustProxy"]) {
  if (trust === undefined) return {};
  if (typeof trust === "number") return { trustProxy: (_address: string, hop: number) => hop < trust };
  return { trustProxy: trust };
}

/** Builds the HTTP app on ready services. Never listens: server.ts does, tests call inject(). */
export async function buildApp(services: Services, options: { logger?: Logger; stopping?: () => boolean } = {}): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: (options.logger ?? services.log) as FastifyBaseLogger,
    bodyLimit: ONE_MIB,
    // ORDERLY_TRUST_PROXY: X-Forwarded-For is believed only from these proxies (rate limits by client address).
    ...trustProxyOption(services.config.trustProxy),
    genReqId: requestIdOf,
    requestIdHeader: false,
    routerOptions: { ignoreTrailingSlash: true, maxParamLength: 256 },
    // Errors the router raises before any hook runs (bad URL encoding, over-long path segments).
    frameworkErrors: (error, request, reply) => {
      startTrace(request, reply);
      const tooLong = error.code === "FST_ERR_MAX_PARAM_LENGTH";
      sendProblem(request, reply, tooLong ? new AppError("URI_TOO_LONG", "a path segment is longer than 256 characters") : new AppError("VALIDATION_FAILED", "the URL is not valid"));
    },
  });
  // Every request part is checked for text no database can hold before its route's schema (schemas.ts).
  app.setValidatorCompiler<z.ZodType>(({ schema, ...route }) => validatorCompiler({ ...route, schema: withSafeText(schema) }));
  app.setSerializerCompiler(serializerCompiler);

  // An empty JSON body (e.g. POST /orders/{id}/cancel with a JSON content type) means "no body".
  const parseJson = app.getDefaultJsonParser("error", "error");
  app.addContentTypeParser("application/json", { parseAs: "string" }, (request, body, done) => {
    const text = body.toString();
    request.rawBody = text;
    if (text.trim() === "") return done(null, undefined);
    parseJson(request, text, done);
  });

  registerProblemHandlers(app);
  registerRequestContext(app);
  app.addHook("onResponse", async (request, reply) => {
    const route = request.routeOptions.url ?? "unmatched";
    services.metrics.httpDuration.observe({ method: request.method, route, status_class: `${Math.floor(reply.statusCode / 100)}xx` }, reply.elapsedTime / 1000);
  });

  await app.register(fastifySwagger, {
    openapi: {
      openapi: "3.1.0",
      info: {
        title: "Orderly API",
        version: "1.0.0",
        description:
          "Order placement that moves stock, wallet, coupon and shipment document together or not at all. " +
          "Errors are RFC 9457 problem+json with a stable `code`. A string holding U+0000 or a lone UTF-16 surrogate, anywhere in a request, " +
          "answers 400 VALIDATION_FAILED naming the field in `errors`; while the database is unreachable, 503 SERVICE_UNAVAILABLE with Retry-After.",
      },
      components: { securitySchemes: { bearer: { type: "http", scheme: "bearer", bearerFormat: "JWT" } } },
      security: [{ bearer: [] }],
    },
    transform: jsonSchemaTransform,
    transformObject: (input) => finishDocument(jsonSchemaTransformObject(input) as Record<string, any>),
  });
  await app.register(fastifySwaggerUi, {
    routePrefix: "/docs",
    baseDir: SWAGGER_UI_FILES,
    logo: { type: "image/svg+xml", content: readFileSync(join(SWAGGER_UI_FILES, "logo.svg")) },
  });

  const checks: ReadinessCheck[] = [
    { name: "database", ping: () => services.database.ping() },
    ...(services.config.redisUrl ? [{ name: "cache", ping: () => services.rateLimiter.ping() }] : []),
    ...(services.strategy === "saga" ? [{ name: "broker", ping: () => services.bus.ping() }] : []),
    // The relay (every process) and the settlement waiters listen; without NOTIFY they fall back to polling.
    {
      name: "notifications",
      ping: async () => {
        if (services.database.notifications() === "down") throw new Error("the LISTEN connection is being re-established");
      },
    },
  ];
  await app.register(opsRoutes({ metrics: services.metrics, stopping: options.stopping ?? (() => false), checks }));
  const { roles } = services;
  // The operations console (api-contract.md §6) with the operators' API it reads.
  if (roles.has("orders")) await app.register(consoleRoutes());
  await app.register(
    async (api) => {
      // Signed-in callers: token first (before any body is read), then their own rate bucket.
      await api.register(async (signedIn) => {
        signedIn.addHook("onRequest", authenticate(services.identities));
        signedIn.addHook(
          "onRequest",
          rateLimit(services.rateLimiter, (request) => `user:${request.identity!.tenantId}:${request.identity!.userId}`, () => services.metrics.rateLimited.inc({ scope: "user" })),
        );
        registerIdempotency(signedIn, services);
        // Each service serves the paths it owns (api-contract.md §1); all-in-one serves them all.
        if (roles.has("inventory")) await signedIn.register(productRoutes(services));
        if (roles.has("payments")) await signedIn.register(accountRoutes(services));
        if (roles.has("coupons")) await signedIn.register(couponRoutes(services));
        if (roles.has("orders")) await signedIn.register(orderRoutes(services));
        // The operators' API (api-contract.md §6): served by the all-in-one and the orders service.
        if (roles.has("orders")) await signedIn.register(adminRoutes({ ...services, checks }));
        // Merchants' webhook endpoints (api-contract.md §7): the orders service sends the order events.
        if (roles.has("orders")) await signedIn.register(webhookRoutes(services));
      });
      // The payment provider: no token, so limited per source address; signed with HMAC instead.
      const perAddress = rateLimit(services.rateLimiter, (request) => `ip:${request.ip}`, () => services.metrics.rateLimited.inc({ scope: "ip" }));
      if (roles.has("payments")) {
        await api.register(async (provider) => {
          provider.addHook("onRequest", perAddress);
          await provider.register(paymentRoutes(services));
        });
      }
      // Sign-in through the directory (api-contract.md §8): no token yet, so limited per source address too.
      if (roles.has("orders")) {
        await api.register(async (signIn) => {
          signIn.addHook("onRequest", perAddress);
          await signIn.register(authRoutes(services));
        });
      }
    },
    { prefix: "/api/v1" },
  );
  return app;
}
