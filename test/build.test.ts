import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import semver from "semver";
import { afterAll, describe, expect, it } from "vitest";

// `npm run build` bundles src/ into dist/ (bin/build-server.mjs), and `node dist/cli.js` is the whole
// CLI with no TypeScript toolchain at run time (api-contract.md §1): plain Node cannot load a .ts
// file, so a dist/ that still needed one would fail here.
const ROOT = join(import.meta.dirname, "..");
const DIST = join(ROOT, "dist");
const dataDir = mkdtempSync(join(tmpdir(), "orderly-build-"));
let child: ChildProcess | undefined;

afterAll(() => {
  if (child?.exitCode === null) child.kill("SIGKILL");
  rmSync(dataDir, { recursive: true, force: true });
});

const filesUnder = (dir: string): string[] =>
  readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? filesUnder(join(dir, e.name)) : [join(dir, e.name)]));

describe("the built CLI", () => {
  it("bundles to dist/ with every relative import pointing at a .js file, and the packages that must load from node_modules left out", { timeout: 120_000 }, () => {
    execFileSync("npm", ["run", "--silent", "build"], { cwd: ROOT, stdio: "pipe" });
    const scripts = filesUnder(DIST).filter((f) => f.endsWith(".js") && !f.startsWith(join(DIST, "console")));
    expect(scripts.map((f) => f.slice(DIST.length + 1))).toContain("cli.js");
    expect(scripts.some((f) => f.endsWith(".test.js"))).toBe(false);
    for (const file of scripts) {
      const relative = [...readFileSync(file, "utf8").matchAll(/(?:from|import)\s*\(?\s*"(\.{1,2}\/[^"]+)"/g)].map((m) => m[1] as string);
      expect(relative.filter((specifier) => !specifier.endsWith(".js")), file).toEqual([]);
    }
    // esbuild heads each module it bundles with a comment naming its file.
    const bundled = new Set(scripts.flatMap((file) => [...readFileSync(file, "utf8").matchAll(/^\/\/ node_modules\/((?:@[^/]+\/)?[^/]+)\//gm)].map((m) => m[1] as string)));
    expect(bundled).toContain("fastify");
    expect(bundled).toContain("@fastify/swagger-ui");
    const mustLoadFromNodeModules = ["@electric-sql/pglite", "pino", "pg", "ioredis", "rabbitmq-client"];
    expect([...bundled].filter((name) => mustLoadFromNodeModules.includes(name) || name.startsWith("@opentelemetry/"))).toEqual([]);
  });

  it("is what the package's bin runs, with no TypeScript toolchain among the runtime dependencies", () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { bin: Record<string, string>; dependencies: Record<string, string> };
    const bin = readFileSync(join(ROOT, pkg.bin.orderly as string), "utf8");
    expect(bin).toContain("../dist/cli.js");
    expect(bin).not.toMatch(/tsx|typescript/);
    expect(Object.keys(pkg.dependencies).filter((name) => /^(tsx|typescript|ts-node|esbuild)$/.test(name))).toEqual([]);
    for (const file of filesUnder(DIST).filter((f) => f.endsWith(".js"))) expect(readFileSync(file, "utf8"), file).not.toMatch(/from "tsx|import\("tsx/);
    const help = execFileSync(process.execPath, [join(ROOT, pkg.bin.orderly as string), "--help"], { encoding: "utf8" });
    expect(help).toMatch(/^usage: orderly COMMAND/);
  });

  it("installs only runtime packages whose engines accept both Node 20.19 and Node 24, as package.json's engines promise", () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { engines: { node: string } };
    expect(semver.satisfies("20.19.0", pkg.engines.node) && semver.satisfies("24.0.0", pkg.engines.node)).toBe(true);
    const lock = JSON.parse(readFileSync(join(ROOT, "package-lock.json"), "utf8")) as {
      packages: Record<string, { version?: string; dev?: boolean; engines?: { node?: string } | string[] }>;
    };
    const refusing = Object.entries(lock.packages)
      .filter(([path, entry]) => path !== "" && !entry.dev)
      .flatMap(([path, entry]) => {
        const range = Array.isArray(entry.engines) ? undefined : entry.engines?.node;
        return range && !(semver.satisfies("20.19.0", range) && semver.satisfies("24.0.0", range)) ? [`${path}@${entry.version}: ${range}`] : [];
      });
    expect(refusing).toEqual([]);
  });

  it("serves the demo shop and the console from dist/ with plain node: ready, an order placed, a clean stop", { timeout: 60_000 }, async () => {
    const started = spawn(process.execPath, [join(DIST, "cli.js"), "serve", "--demo"], {
      env: { PATH: process.env.PATH, HOME: process.env.HOME, ORDERLY_DATA_DIR: dataDir, PORT: "0", LOG_LEVEL: "info" },
    });
    child = started;
    let output = "";
    const ready = new Promise<{ url: string; token: string }>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`not ready: ${output}`)), 45_000);
      const onData = (d: Buffer) => {
        output += d;
        const url = /"url":"([^"]+)"[^\n]*"msg":"orderly is ready"/.exec(output)?.[1];
        const token = /customer token:\s+(\S+)/.exec(output)?.[1];
        if (url && token) {
          clearTimeout(timer);
          resolve({ url, token });
        }
      };
      started.stdout.on("data", onData);
      started.stderr.on("data", onData);
      started.on("exit", (code) => reject(new Error(`exited with ${code}: ${output}`)));
    });
    const { url, token } = await ready;
    const placed = await fetch(`${url}/api/v1/orders`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: JSON.stringify({
        items: [{ sku: "SKU-1", quantity: 1 }],
        payment: { method: "balance" },
        shippingAddress: { name: "Alice", phone: "+86 10 5555 0100", line1: "1 Demo Road", city: "Beijing", country: "CN" },
      }),
    });
    expect(placed.status).toBe(201);
    expect(await placed.json()).toMatchObject({ status: "PAID", items: [{ sku: "SKU-1", quantity: 1 }] });
    // The console the build bundled, served from dist/console.
    const page = await fetch(`${url}/console/`);
    expect(page.status).toBe(200);
    const script = /src="(\/console\/assets\/[^"]+\.js)"/.exec(await page.text())?.[1];
    expect((await fetch(`${url}${script}`)).status).toBe(200);
    // The Swagger UI, bundled, with its page and assets read from its package's folder.
    for (const path of ["/docs/", "/docs/static/swagger-ui-bundle.js"]) {
      const response = await fetch(`${url}${path}`);
      expect(response.status, path).toBe(200);
      expect((await response.arrayBuffer()).byteLength, path).toBeGreaterThan(0); // read to the end: the stop below waits for it
    }
    const exited = new Promise<number | null>((resolve) => started.on("exit", resolve));
    started.kill("SIGINT");
    expect(await exited).toBe(0);
  });
});
