import { createOrderlyClient, type components } from "../../client/index.ts";

// The console talks to the API of the origin that served it, with the admin token the operator
// signed in with. The token stays in this tab's sessionStorage: closing the tab signs out.

export type Schemas = components["schemas"];
export type Order = Schemas["Order"];
export type Timeline = Schemas["Timeline"];
export type TimelineEvent = Schemas["TimelineEvent"];
export type Saga = Schemas["Saga"];
export type DeadLetter = Schemas["DeadLetter"];
export type DeadLetterDetail = Schemas["DeadLetterDetail"];
export type OperationsStatus = Schemas["OperationsStatus"];
export type ReconciliationRun = Schemas["ReconciliationRun"];

const TOKEN_KEY = "orderly.console.token";

export const session = {
  token: (): string | null => sessionStorage.getItem(TOKEN_KEY),
  signIn: (token: string) => sessionStorage.setItem(TOKEN_KEY, token),
  signOut: () => sessionStorage.removeItem(TOKEN_KEY),
};

/** A refusal from the API: its status and problem code, and the problem's own words. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string | undefined,
    message: string,
  ) {
    super(message);
  }
}

/** Called when the API answers 401: the session is over. main.tsx sends the operator to sign in. */
let onSignedOut: (reason: string) => void = () => {};
export function whenSignedOut(handler: (reason: string) => void) {
  onSignedOut = handler;
}

export const api = () => createOrderlyClient(location.origin, { token: session.token() ?? undefined });

/** The answer's data, or an ApiError carrying the problem's code and detail. */
export async function answer<T>(call: Promise<{ data?: T; error?: unknown; response: Response }>): Promise<T> {
  const { data, error, response } = await call;
  if (response.ok && data !== undefined) return data;
  const problem = (error ?? {}) as { code?: string; title?: string; detail?: string };
  const failure = new ApiError(response.status, problem.code, problem.detail ?? problem.title ?? `${response.status} ${response.statusText}`);
  if (response.status === 401) onSignedOut(failure.message);
  throw failure;
}
