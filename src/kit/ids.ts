import { randomFillSync } from "node:crypto";

const ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"; // Crockford base32, lower case

function base32(bytes: Uint8Array): string {
  let out = "";
  let bits = 0;
  let value = 0;
  for (const byte of bytes) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += ALPHABET[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += ALPHABET[(value << (5 - bits)) & 31];
  return out;
}

// Cryptographic random bytes taken from a pool filled 4 KiB at a time: one call into the system's
// generator per ~400 ids or trace ids, instead of one (or two) per request. A refill takes a new
// buffer, so bytes already handed out are never overwritten and never handed out twice.
const POOL_BYTES = 4096;
let pool = new Uint8Array(0);
let taken = 0;

/** `count` (≤ 4096) fresh random bytes, a view of the pool: use them before the next await or copy them. */
export function randomBytesPooled(count: number): Uint8Array {
  if (count > POOL_BYTES) throw new RangeError(`at most ${POOL_BYTES} pooled random bytes at a time`);
  if (taken + count > pool.length) {
    pool = randomFillSync(new Uint8Array(POOL_BYTES));
    taken = 0;
  }
  taken += count;
  return pool.subarray(taken - count, taken);
}

const HEX = Array.from({ length: 256 }, (_, byte) => byte.toString(16).padStart(2, "0"));

/** `byteCount` random bytes as lower-case hex (trace and span ids). */
export function randomHex(byteCount: number): string {
  let out = "";
  for (const byte of randomBytesPooled(byteCount)) out += HEX[byte];
  return out;
}

export type IdGenerator = (prefix: string) => string;

/** Prefixed, time-ordered ids such as `ord_01jd…`: 48 bits of milliseconds, then 80 random bits. */
export const newId: IdGenerator = (prefix) => {
  const bytes = new Uint8Array(16);
  const now = Date.now();
  for (let i = 5; i >= 0; i--) bytes[5 - i] = Math.floor(now / 2 ** (8 * i)) & 0xff;
  bytes.set(randomBytesPooled(10), 6);
  return `${prefix}_${base32(bytes)}`;
};
