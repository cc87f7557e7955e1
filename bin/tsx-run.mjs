#!/usr/bin/env node
// Runs one TypeScript entry file (used by `npm run bench`).
import { register } from "tsx/esm/api";
import { pathToFileURL } from "node:url";
import { resolve } from "node:path";

register();
await import(pathToFileURL(resolve(process.argv[2])).href);
