import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import fastifyStatic from "@fastify/static";
import type { FastifyPluginAsync } from "fastify";
import { AppError } from "../../kit/errors.ts";
import { PACKAGE_ROOT } from "../../kit/package-root.ts";

/** Where `npm run build` writes the console (console/, built by Vite), for the sources as for the build. */
const BUILT_AT = [join(PACKAGE_ROOT, "dist", "console")];

/** The console's bundle directory, or undefined when it has not been built. */
export function consoleDirectory(candidates: readonly string[] = BUILT_AT): string | undefined {
  return candidates.find((dir) => existsSync(join(dir, "index.html")));
}

// The console is a static bundle talking to the same origin's API: nothing inline, nothing from
// elsewhere, never framed (its buttons act on money and messages).
const SECURITY_HEADERS = {
  "content-security-policy":
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "x-frame-options": "DENY",
};

/**
 * GET /console: the operations console (api-contract.md §6), served by the all-in-one and the
 * orders service. The page holds no data; it signs in with an admin token and reads /api/v1/admin.
 */
export function consoleRoutes(dir: string | undefined = consoleDirectory()): FastifyPluginAsync {
  return async (app) => {
    if (!dir) {
      const notBuilt = async () => {
        throw new AppError("SERVICE_UNAVAILABLE", "the console is not built: run npm run build");
      };
      app.get("/console", { schema: { hide: true } }, notBuilt);
      app.get("/console/*", { schema: { hide: true } }, notBuilt);
      return;
    }
    app.addHook("onSend", async (_request, reply) => {
      reply.headers(SECURITY_HEADERS);
    });
    // The page itself at /console and /console/ (one route: the router ignores a trailing slash).
    const page = readFileSync(join(dir, "index.html"));
    app.get("/console", { schema: { hide: true } }, async (_request, reply) => reply.type("text/html; charset=utf-8").header("cache-control", "no-cache").send(page));
    await app.register(fastifyStatic, {
      root: dir,
      prefix: "/console/",
      decorateReply: false,
      cacheControl: false,
      index: false,
      // Hashed file names never change; the page that names them is checked on every load.
      setHeaders: (reply, path) => reply.header("cache-control", path.startsWith(join(dir, "assets")) ? "public, max-age=31536000, immutable" : "no-cache"),
    });
  };
}
