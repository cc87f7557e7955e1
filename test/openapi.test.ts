import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
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

  it("documents the headers: Location, ETag, Idempotency-Key, Idempotent-Replayed, If-Match, Prefer, RateLimit-*, Retry-After", () => {
    const place = doc.paths["/api/v1/orders"].post;
    expect(place.parameters.map((p: { name: string }) => p.name)).toEqual(expect.arrayContaining(["idempotency-key", "prefer"]));
    for (const status of ["201", "202"]) expect(Object.keys(place.responses[status].headers)).toEqual(expect.arrayContaining(["Location", "ETag", "Idempotent-Replayed", "RateLimit-Remaining", "X-Request-Id"]));
    expect(Object.keys(place.responses["429"].headers)).toContain("Retry-After");
    expect(Object.keys(place.responses["503"].headers)).toContain("Retry-After");
    expect(doc.paths["/api/v1/orders/{id}/cancel"].post.parameters.map((p: { name: string }) => p.name)).toContain("if-match");
    expect(place.requestBody.content["application/json"].example).toMatchObject({ items: [{ sku: "SKU-1" }] });
    expect(doc.components.schemas.Problem.examples[0].code).toBe("OUT_OF_STOCK");
  });
});
