import { PROBLEM_STATUS } from "../kit/errors.ts";

// What the OpenAPI document says beyond the routes' own schemas, so client generators get it all:
// problem answers as application/problem+json with the codes each status can carry, and the headers
// every answer or some answers carry. Applied once to the whole document (app.ts, transformObject).

type Json = Record<string, any>;

const header = (description: string, schema: Json = { type: "string" }) => ({ description, schema });

/** On every answer (api-contract.md §2). */
const EVERY_ANSWER = {
  "X-Request-Id": header("The request's id: the one sent, or a new one"),
};

/** On every answer of a route behind the rate limit (everything under /api/v1). */
const RATE_LIMITED = {
  "RateLimit-Limit": header("The bucket's size (requests)", { type: "integer" }),
  "RateLimit-Remaining": header("Requests left in the bucket now", { type: "integer" }),
  "RateLimit-Reset": header("Seconds until the bucket is full again", { type: "integer" }),
  "RateLimit-Policy": header("The policy, as `<burst>;w=<seconds>`"),
};

const RETRY_AFTER = { "Retry-After": header("Seconds to wait before trying again", { type: "integer" }) };

/** On the answers of a route that accepts Idempotency-Key. */
const REPLAYED = { "Idempotent-Replayed": header("`true` when this is the stored answer to an earlier request with the same key", { type: "string", enum: ["true"] }) };

/** On the answers that carry an order. */
const ORDER_HEADERS = {
  ETag: header('The order\'s version, `W/"<version>"`; send it back as If-Match to move the order only if it did not change'),
};

const CODES = Object.keys(PROBLEM_STATUS);
const codesOf = (status: number) => CODES.filter((code) => PROBLEM_STATUS[code as keyof typeof PROBLEM_STATUS] === status);

/** Finishes the document: problem content type and codes, and the headers. Returns the same object. */
export function finishDocument(document: Json): Json {
  const problem = document.components?.schemas?.Problem;
  if (problem?.properties?.code) {
    problem.properties.code = { ...problem.properties.code, type: "string", enum: CODES };
  }
  for (const [path, item] of Object.entries<Json>(document.paths ?? {})) {
    for (const [method, operation] of Object.entries<Json>(item)) {
      if (!operation || typeof operation !== "object" || !operation.responses) continue;
      const idempotent = (operation.parameters ?? []).some((p: Json) => p.in === "header" && p.name === "idempotency-key");
      // Every order route answers one order, except the list.
      const carriesOrder = path.startsWith("/api/v1/orders") && !(path === "/api/v1/orders" && method === "get");
      if (carriesOrder && method === "post" && path.includes("{id}")) {
        operation.parameters = [
          ...(operation.parameters ?? []),
          { in: "header", name: "if-match", required: false, schema: { type: "string" }, description: 'W/"<version>" from the order\'s ETag: moves it only if it is still that version (412 VERSION_MISMATCH otherwise)' },
        ];
      }
      for (const [status, response] of Object.entries<Json>(operation.responses)) {
        const code = Number(status);
        response.headers = {
          ...response.headers,
          ...EVERY_ANSWER,
          ...(path.startsWith("/api/v1/") && path !== "/api/v1/payments/callback" ? RATE_LIMITED : {}),
          ...(code === 429 || code === 503 ? RETRY_AFTER : {}),
          ...(idempotent && code < 500 ? REPLAYED : {}),
          ...(carriesOrder && code < 300 ? ORDER_HEADERS : {}),
          ...(code === 201 || code === 202 ? { Location: header("The URL of what was created") } : {}),
        };
        if (code < 400) continue;
        const content = response.content ?? {};
        const schema = content["application/json"]?.schema ?? { $ref: "#/components/schemas/Problem" };
        response.content = { "application/problem+json": { schema } };
        const codes = codesOf(code);
        if (codes.length > 0) response.description = `A problem; the codes of the API with status ${code}: ${codes.join(", ")}`;
      }
    }
  }
  return document;
}
