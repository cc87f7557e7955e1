import { PROBLEM_STATUS } from "../kit/errors.ts";
import { OPERATION_EXAMPLES, SCHEMA_EXAMPLES } from "./examples.ts";

// What the OpenAPI document says beyond the routes' own schemas, so client generators get it all:
// problem answers as application/problem+json with the codes each status can carry, 429 wherever the
// rate limit applies, the headers every answer or some answers carry, and an example of every JSON
// body (examples.ts). Applied once to the whole document (app.ts, transformObject).

type Json = Record<string, any>;

const header = (description: string, schema: Json = { type: "string" }) => ({ description, schema });

/** On every answer (api-contract.md §2). */
const EVERY_ANSWER = {
  "X-Request-Id": header("The request's id: the one sent, or a new one"),
};

/** On every answer of a route behind the rate limit: everything under /api/v1 (per user, or per address where no token is sent). */
const RATE_LIMITED = {
  "RateLimit-Limit": header("The bucket's size (requests)", { type: "integer" }),
  "RateLimit-Remaining": header("Requests left in the bucket now", { type: "integer" }),
  "RateLimit-Reset": header("Seconds until the bucket is full again", { type: "integer" }),
  "RateLimit-Policy": header("The policy, as `<burst>;w=<seconds>`"),
};

const RETRY_AFTER = { "Retry-After": header("Seconds to wait before trying again", { type: "integer" }) };

/** On the answers of a route that accepts Idempotency-Key. */
const REPLAYED = { "Idempotent-Replayed": header("`true` when this is the stored answer to an earlier request with the same key", { type: "string", enum: ["true"] }) };

/** On a placement's 202: the server honoured `Prefer: respond-async` or its wait ran out. */
const PREFERENCE_APPLIED = { "Preference-Applied": header("`respond-async`: the order is accepted, still PENDING; follow Location", { type: "string", enum: ["respond-async"] }) };

/** On the answers that carry an order. */
const ORDER_HEADERS = {
  ETag: header('The order\'s version, `W/"<version>"`; send it back as If-Match to move the order only if it did not change'),
};

const CODES = Object.keys(PROBLEM_STATUS);
const codesOf = (status: number) => CODES.filter((code) => PROBLEM_STATUS[code as keyof typeof PROBLEM_STATUS] === status);

/**
 * An example of what `schema` describes: a named schema's own, or a list's (`{ data: [one], … }`)
 * built from its items' example. Undefined when none is known.
 */
function exampleOf(schema: Json | undefined, schemas: Json): unknown {
  if (!schema) return undefined;
  if (schema.$ref) return schemas[String(schema.$ref).split("/").pop() as string]?.examples?.[0];
  if (schema.type !== "object" || !schema.properties) return undefined;
  const example: Json = {};
  for (const name of schema.required ?? []) {
    const property = schema.properties[name];
    const item = property.type === "array" ? exampleOf(property.items, schemas) : undefined;
    if (item !== undefined) example[name] = [item];
    else if (Array.isArray(property.type) && property.type.includes("null")) example[name] = null;
    else return undefined;
  }
  return example;
}

/**
 * Sets each named schema's example, then that of each JSON body (the request's and every answer's
 * below 400) whose schema is not a named one: a named schema's example is shown wherever it is used.
 */
function addExamples(document: Json): void {
  const schemas: Json = document.components?.schemas ?? {};
  for (const [name, schema] of Object.entries<Json>(schemas)) {
    const example = SCHEMA_EXAMPLES[name.replace(/Input$/, "")];
    if (example !== undefined && !schema.examples) schema.examples = [example];
  }
  for (const item of Object.values<Json>(document.paths ?? {})) {
    for (const operation of Object.values<Json>(item)) {
      const given = OPERATION_EXAMPLES[operation.operationId] ?? {};
      const body = operation.requestBody?.content?.["application/json"];
      if (body && !body.schema.$ref) body.example ??= given.request ?? exampleOf(body.schema, schemas);
      for (const [status, response] of Object.entries<Json>(operation.responses ?? {})) {
        const answer = response.content?.["application/json"];
        if (answer && !answer.schema.$ref && Number(status) < 400) answer.example ??= given.answers?.[status] ?? exampleOf(answer.schema, schemas);
      }
    }
  }
}

/** Finishes the document: problem content type and codes, 429s, the headers and the examples. Returns the same object. */
export function finishDocument(document: Json): Json {
  const problem = document.components?.schemas?.Problem;
  if (problem?.properties?.code) {
    problem.properties.code = { ...problem.properties.code, type: "string", enum: CODES };
  }
  addExamples(document);
  for (const [path, item] of Object.entries<Json>(document.paths ?? {})) {
    for (const [method, operation] of Object.entries<Json>(item)) {
      if (!operation || typeof operation !== "object" || !operation.responses) continue;
      const rateLimited = path.startsWith("/api/v1/");
      if (rateLimited) operation.responses["429"] ??= { description: "Too many requests", content: { "application/json": { schema: { $ref: "#/components/schemas/Problem" } } } };
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
          ...(rateLimited ? RATE_LIMITED : {}),
          ...(code === 429 || code === 503 ? RETRY_AFTER : {}),
          ...(idempotent && code < 500 ? REPLAYED : {}),
          ...(carriesOrder && code < 300 ? ORDER_HEADERS : {}),
          ...(code === 201 || code === 202 ? { Location: header("The URL of what was created") } : {}),
          ...(code === 202 ? PREFERENCE_APPLIED : {}),
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
