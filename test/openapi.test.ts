import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Ajv2020 from "ajv/dist/2020.js";
import { afterAll, describe, expect, it } from "vitest";
import { PROBLEM_STATUS } from "../src/kit/errors.ts";
import { CLI } from "./support/cli.ts";

// The committed OpenAPI document (openapi.json) and the typed client's types generated from it
// (client/schema.d.ts) must be what the code makes now: `npm run openapi` writes both again.
const ROOT = join(import.meta.dirname, "..");
const scratch = mkdtempSync(join(tmpdir(), "orderly-openapi-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

const generated = execFileSync(process.execPath, [...CLI, "openapi"], { cwd: ROOT, encoding: "utf8", env: { PATH: process.env.PATH, HOME: process.env.HOME } });
const doc = JSON.parse(generated) as Record<string, any>;
const operations = Object.entries<Record<string, any>>(doc.paths).flatMap(([path, item]) => Object.entries<Record<string, any>>(item).map(([method, op]) => ({ path, method, op })));

describe("the OpenAPI document", () => {
  it("is the committed openapi.json, and client/schema.d.ts is generated from it (run npm run openapi after an API change)", () => {
    expect(generated).toBe(readFileSync(join(ROOT, "openapi.json"), "utf8"));
    const types = join(scratch, "schema.d.ts");
    execFileSync(join(ROOT, "node_modules", ".bin", "openapi-typescript"), [join(ROOT, "openapi.json"), "-o", types], { cwd: ROOT, stdio: "pipe" });
    expect(readFileSync(types, "utf8")).toBe(readFileSync(join(ROOT, "client", "schema.d.ts"), "utf8"));
  });

  it("names every operation once, for client generators", () => {
    const ids = operations.map(({ op }) => op.operationId as string | undefined);
    expect(operations.filter(({ op }) => !op.operationId).map(({ method, path }) => `${method} ${path}`)).toEqual([]);
    expect(new Set(ids).size).toBe(ids.length);
  });

  it("gives every problem answer as application/problem+json with the closed set of codes", () => {
    expect(doc.components.schemas.Problem.properties.code.enum).toEqual(Object.keys(PROBLEM_STATUS));
    for (const { path, method, op } of operations) {
      for (const [status, response] of Object.entries<Record<string, any>>(op.responses)) {
        if (Number(status) < 400) continue;
        expect(Object.keys(response.content), `${method} ${path} ${status}`).toEqual(["application/problem+json"]);
        expect(response.content["application/problem+json"].schema.$ref).toBe("#/components/schemas/Problem");
      }
    }
  });

  it("documents the headers: Location, ETag, Idempotency-Key, Idempotent-Replayed, If-Match, Prefer, Preference-Applied, RateLimit-*, Retry-After", () => {
    const place = doc.paths["/api/v1/orders"].post;
    expect(place.parameters.map((p: { name: string }) => p.name)).toEqual(expect.arrayContaining(["idempotency-key", "prefer"]));
    for (const status of ["201", "202"]) expect(Object.keys(place.responses[status].headers)).toEqual(expect.arrayContaining(["Location", "ETag", "Idempotent-Replayed", "RateLimit-Remaining", "X-Request-Id"]));
    expect(Object.keys(place.responses["202"].headers)).toContain("Preference-Applied");
    expect(doc.paths["/api/v1/accounts/{userId}/credits"].post.parameters.map((p: { name: string }) => p.name)).toEqual(expect.arrayContaining(["idempotency-key"]));
    expect(doc.paths["/api/v1/accounts/{userId}/credits"].post.parameters.map((p: { name: string }) => p.name)).not.toContain("prefer");
    expect(Object.keys(place.responses["429"].headers)).toContain("Retry-After");
    expect(Object.keys(place.responses["503"].headers)).toContain("Retry-After");
    expect(doc.paths["/api/v1/orders/{id}/cancel"].post.parameters.map((p: { name: string }) => p.name)).toContain("if-match");
    expect(place.requestBody.content["application/json"].example).toMatchObject({ items: [{ sku: "SKU-1" }] });
    expect(doc.components.schemas.Problem.examples[0].code).toBe("OUT_OF_STOCK");
    // The callback is limited per source address, like every path under /api/v1.
    expect(Object.keys(doc.paths["/api/v1/payments/callback"].post.responses["200"].headers)).toContain("RateLimit-Remaining");
  });

  it("answers 429 with Retry-After on every operation behind the rate limit", () => {
    for (const { path, method, op } of operations.filter(({ path }) => path.startsWith("/api/v1/"))) {
      expect(Object.keys(op.responses[429]?.headers ?? {}), `${method} ${path}`).toContain("Retry-After");
    }
  });

  it("shows an example of every JSON body, requests and answers, each valid against its schema", () => {
    // The document's schemas are JSON Schema 2020-12 (OpenAPI 3.1): each example is checked by Ajv.
    const ajv = new Ajv2020.default({ strict: false, allErrors: true, validateFormats: false }); // formats: the server's own validation tests them
    ajv.addSchema({ $id: "doc", components: doc.components });
    const resolved = (schema: unknown) => JSON.parse(JSON.stringify(schema).replaceAll('"#/components/', '"doc#/components/'));
    const problems: string[] = [];
    // A named schema's example shows wherever it is used; another body carries its own.
    const exampleOf = (media: Record<string, any>) => (media.schema.$ref ? doc.components.schemas[media.schema.$ref.split("/").pop()].examples?.[0] : media.example);
    const check = (where: string, schema: unknown, example: unknown) => {
      if (example === undefined) return problems.push(`${where}: no example`);
      if (!ajv.validate(resolved(schema), example)) problems.push(`${where}: ${ajv.errorsText(ajv.errors)}`);
    };
    for (const { path, method, op } of operations) {
      const body = op.requestBody?.content?.["application/json"];
      if (body) check(`${method} ${path} request`, body.schema, exampleOf(body));
      for (const [status, response] of Object.entries<Record<string, any>>(op.responses)) {
        const answer = response.content?.["application/json"];
        if (answer && Number(status) < 400) check(`${method} ${path} ${status}`, answer.schema, exampleOf(answer));
      }
    }
    for (const [name, schema] of Object.entries<Record<string, any>>(doc.components.schemas)) {
      for (const example of schema.examples ?? []) check(`schema ${name}`, { $ref: `#/components/schemas/${name}` }, example);
    }
    expect(problems).toEqual([]);
    // The check has teeth: an order without its total is refused.
    const { total: _, ...order } = doc.components.schemas.Order.examples[0];
    expect(ajv.validate(resolved({ $ref: "#/components/schemas/Order" }), order)).toBe(false);
  });
});
