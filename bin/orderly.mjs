#!/usr/bin/env node
// The package's `bin`: runs the TypeScript CLI through tsx, so `npx orderly …` works right after `npm ci`.
import { register } from "tsx/esm/api";

register();
await import("../src/cli.ts");
