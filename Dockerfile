# syntax=docker/dockerfile:1
# Orderly's image: built in one stage, run from a small one with only the compiled code and the
# runtime dependencies, as a user without privileges. `docker build -t orderly .`
# The same image runs every service: `serve` (all-in-one), `serve --services orders --no-migrate`,
# `migrate` (the migration job). Production settings come from the environment (README).

FROM node:24-alpine AS build
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: the `prepare` build needs src/, copied below; nothing else here has a build step that runs.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json ./
COPY bin ./bin
COPY src ./src
# The operations console (Vite, Preact) is built into dist/console with the typed API client.
COPY console ./console
COPY client ./client
RUN npm run build && npm prune --omit=dev --no-audit --no-fund

FROM node:24-alpine AS runtime
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=3000
WORKDIR /app
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY bin ./bin
COPY drizzle ./drizzle
USER node
EXPOSE 3000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch(`http://127.0.0.1:${process.env.PORT}/healthz`).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["node", "dist/cli.js"]
CMD ["serve"]
