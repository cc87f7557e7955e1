/** Opaque list cursors: the (createdAt, key) of the last row of a page, base64url JSON. */
export interface Cursor {
  at: Date;
  key: string;
}

export function encodeCursor(at: Date, key: string): string {
  return Buffer.from(JSON.stringify({ t: at.toISOString(), k: key })).toString("base64url");
}

// Keys are ids and SKUs: printable ASCII. Anything else (a NUL, a lone surrogate) never came from
// this server and must not reach a query, where PostgreSQL would refuse it with an error.
const KEY = /^[\x21-\x7e]{1,128}$/;

/** Returns undefined for anything that is not a cursor this server made. */
export function decodeCursor(text: string): Cursor | undefined {
  try {
    const value: unknown = JSON.parse(Buffer.from(text, "base64url").toString("utf8"));
    if (!value || typeof value !== "object") return undefined;
    const { t, k } = value as { t?: unknown; k?: unknown };
    if (typeof t !== "string" || typeof k !== "string" || !KEY.test(k)) return undefined;
    const at = new Date(t);
    return Number.isNaN(at.getTime()) ? undefined : { at, key: k };
  } catch {
    return undefined;
  }
}

/** Splits `limit + 1` fetched rows into a page and the cursor of the next one. */
export function page<T>(rows: T[], limit: number, cursorOf: (row: T) => string): { data: T[]; nextCursor: string | null } {
  if (rows.length <= limit) return { data: rows, nextCursor: null };
  const data = rows.slice(0, limit);
  return { data, nextCursor: cursorOf(data[data.length - 1] as T) };
}
