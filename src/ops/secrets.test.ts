import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { loadConfig } from "../config.ts";
import { resolveSecrets } from "./secrets.ts";

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function dataDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "orderly-secrets-"));
  dirs.push(dir);
  return dir;
}

describe("resolveSecrets", () => {
  it("outside production makes dev secrets once and keeps them in the data dir", () => {
    const dir = dataDir();
    const first = resolveSecrets(loadConfig({ ORDERLY_DATA_DIR: dir }));
    expect(first.jwtSecret).toMatch(/^[0-9a-f]{64}$/);
    expect(existsSync(join(dir, "dev-secrets.json"))).toBe(true);
    expect(resolveSecrets(loadConfig({ ORDERLY_DATA_DIR: dir }))).toEqual(first);
  });

  it("in production with JWKS and no shared secret makes up nothing and writes nothing (the data dir may be read-only)", () => {
    const dir = join(dataDir(), "not-writable-here", "\0"); // a path no file can be written to
    const env = { NODE_ENV: "production", DATABASE_URL: "postgres://db/orderly", ORDERLY_WEBHOOK_SECRET: "a-webhook-secret-of-length", ORDERLY_JWKS_URL: "https://id.example/jwks.json", ORDERLY_DATA_DIR: dir };
    expect(resolveSecrets(loadConfig(env))).toEqual({ jwtSecret: undefined, webhookSecret: "a-webhook-secret-of-length" });
  });
});
