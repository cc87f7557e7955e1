import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/**
 * The package's folder, the nearest one up holding package.json: found from where this code runs,
 * src/kit when running the sources, a chunk of dist/ when running the bundled build (whose depth
 * under the root is not that of the source file). The migrations and the built console are found
 * from it.
 */
export const PACKAGE_ROOT = nearestPackage(dirname(fileURLToPath(import.meta.url)));

function nearestPackage(from: string): string {
  for (let dir = from; ; dir = dirname(dir)) {
    if (existsSync(join(dir, "package.json"))) return dir;
    if (dirname(dir) === dir) throw new Error(`no package.json above ${from}`);
  }
}
