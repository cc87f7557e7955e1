import createClient, { type Middleware } from "openapi-fetch";
import type { components, operations, paths } from "./schema.d.ts";

// A typed client of Orderly's API: openapi-fetch over the types openapi-typescript generated from
// the committed OpenAPI document (openapi.json; `npm run openapi` makes both again). Every path,
// parameter, body and answer is checked by the compiler against the document.

export type { components, operations, paths };
export type Order = components["schemas"]["Order"];
export type Problem = components["schemas"]["Problem"];

/** A client for one base URL (`http://host:port`), sending `token` as the bearer when given. */
export function createOrderlyClient(baseUrl: string, options: { token?: string; fetch?: typeof fetch } = {}) {
  const client = createClient<paths>({ baseUrl, ...(options.fetch ? { fetch: options.fetch } : {}) });
  if (options.token) {
    const bearer: Middleware = {
      onRequest({ request }) {
        request.headers.set("authorization", `Bearer ${options.token}`);
        return request;
      },
    };
    client.use(bearer);
  }
  return client;
}

export type OrderlyClient = ReturnType<typeof createOrderlyClient>;
