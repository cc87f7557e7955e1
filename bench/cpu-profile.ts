// Reads a V8 CPU profile (`node --cpu-prof`) and tells where the CPU went: self time by function,
// and by area (an npm package, a folder of src/, Node's internals, the garbage collector, idle).
// Usage: node bin/tsx-run.mjs bench/cpu-profile.ts FILE.cpuprofile [TOP]
import { existsSync, readFileSync } from "node:fs";
import { SourceMap } from "node:module";
import { resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
export interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

export interface Entry {
  name: string;
  ms: number;
  share: number;
}

export interface ProfileSummary {
  /** Wall time the profile covers, and the part of it not spent idle. */
  totalMs: number;
  busyMs: number;
  functions: Entry[];
  areas: Entry[];
}

/** `node_modules/fastify/lib/reply.js` → `fastify`; `src/http/context.ts` (or `dist/http/context.js`) → `src/http`; `node:internal/…` → `node`. */
export function areaOf(frame: CallFrame): string {
  const { url, functionName } = frame;
  if (url === "") return functionName.startsWith("(") ? functionName : "(native)";
  if (url.startsWith("node:")) return "node";
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (pkg) return pkg[1] as string;
  // The compiled server (dist/) is named after its source folders.
  const src = /\/(src|bench|test)\/(.*)$/.exec(url.replace(/\/dist\//, "/src/"));
  if (src) {
    const folder = (src[2] as string).split("/").slice(0, -1).join("/");
    return folder ? `${src[1]}/${folder}` : `${src[1]}/${(src[2] as string).split("/").pop()}`;
  }
  return url;
}

const sourceMaps = new Map<string, SourceMap | undefined>();

/**
 * A frame of the bundled server (dist/, esbuild) told by the bundle's source map: the file and line
 * it came from, so that areas name the packages and the src/ folders again, not a chunk.
 */
export function originalFrame(frame: CallFrame): CallFrame {
  if (!frame.url.startsWith("file://") || !frame.url.includes("/dist/") || frame.url.includes("/node_modules/")) return frame;
  if (!sourceMaps.has(frame.url)) {
    const file = `${fileURLToPath(frame.url)}.map`;
    sourceMaps.set(frame.url, existsSync(file) ? new SourceMap(JSON.parse(readFileSync(file, "utf8"))) : undefined);
  }
  const entry = sourceMaps.get(frame.url)?.findEntry(frame.lineNumber, frame.columnNumber);
  if (!entry || !("originalSource" in entry)) return frame;
  return { ...frame, url: new URL(entry.originalSource, frame.url).href, lineNumber: entry.originalLine };
}

const shortUrl = (url: string) => url.replace(/^file:\/\/.*?\/(node_modules|src|dist|bench|test)\//, "$1/").replace(/^node_modules\//, "");

/**
 * Self time of each sample: V8 stores the gap before each sample, so sample i lasts until sample i+1.
 * `window` keeps only the samples taken between two instants of the monotonic clock in microseconds
 * (what `process.hrtime` reads on Linux, in any process, and what the profile's times are in).
 */
export function summarise(profile: CpuProfile, top = 15, window?: { fromUs: number; toUs: number }): ProfileSummary {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const selfUs = new Map<number, number>();
  let at = profile.startTime;
  for (let i = 0; i < profile.samples.length; i++) {
    at += profile.timeDeltas[i] ?? 0;
    if (window && (at < window.fromUs || at > window.toUs)) continue;
    const id = profile.samples[i] as number;
    const us = profile.timeDeltas[i + 1] ?? 0;
    selfUs.set(id, (selfUs.get(id) ?? 0) + Math.max(0, us));
  }
  const functions = new Map<string, number>();
  const areas = new Map<string, number>();
  let totalUs = 0;
  let idleUs = 0;
  for (const [id, us] of selfUs) {
    const callFrame = originalFrame((byId.get(id) as ProfileNode).callFrame);
    totalUs += us;
    if (callFrame.functionName === "(idle)") idleUs += us;
    const where = callFrame.url ? ` ${shortUrl(callFrame.url)}:${callFrame.lineNumber + 1}` : "";
    const name = `${callFrame.functionName || "(anonymous)"}${where}`;
    functions.set(name, (functions.get(name) ?? 0) + us);
    const area = areaOf(callFrame);
    areas.set(area, (areas.get(area) ?? 0) + us);
  }
  const busyUs = totalUs - idleUs;
  const ranked = (map: Map<string, number>) =>
    [...map]
      .filter(([name]) => !name.startsWith("(idle)"))
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([name, us]) => ({ name, ms: us / 1000, share: busyUs > 0 ? us / busyUs : 0 }));
  return { totalMs: totalUs / 1000, busyMs: busyUs / 1000, functions: ranked(functions), areas: ranked(areas) };
}

export function formatSummary(summary: ProfileSummary): string {
  const pct = (share: number) => `${(share * 100).toFixed(1).padStart(5)}%`;
  const row = (entry: Entry) => `  ${pct(entry.share)} ${entry.ms.toFixed(0).padStart(7)} ms  ${entry.name}`;
  return [
    `profile: ${(summary.totalMs / 1000).toFixed(1)} s, busy ${(summary.busyMs / 1000).toFixed(1)} s (shares below are of the busy time)`,
    "self time by function:",
    ...summary.functions.map(row),
    "self time by area:",
    ...summary.areas.map(row),
  ].join("\n");
}

// Run as the entry file (bin/tsx-run.mjs passes it as argv[2]): summarise the file named after it.
if (process.argv[2] && import.meta.url === pathToFileURL(resolve(process.argv[2])).href) {
  const [file, top] = process.argv.slice(3);
  if (!file) {
    console.error("usage: node bin/tsx-run.mjs bench/cpu-profile.ts FILE.cpuprofile [TOP]");
    process.exit(2);
  }
  // bench/profile.ts leaves the load's window beside the profile.
  const window = existsSync(`${file}.window.json`) ? (JSON.parse(readFileSync(`${file}.window.json`, "utf8")) as { fromUs: number; toUs: number }) : undefined;
  console.log(formatSummary(summarise(JSON.parse(readFileSync(file, "utf8")) as CpuProfile, Number(top ?? 15), window)));
}
