import { sql } from "drizzle-orm";
import { type Queryable, rows } from "./client.ts";

/**
 * The modules' steps as SQL functions, `fn(tenant text, payload jsonb) returns jsonb`, defined in each
 * module's migrations: the module's TypeScript front door calls its function, and the composed
 * placement (src/flows/composed.ts) calls the same functions in one statement, so each step's SQL
 * exists once. A function answers its result, or `{ refused, detail }` with the refusal's reason.
 */
export const STEP_FUNCTIONS = ["inventory_reserve", "coupons_redeem", "wallets_debit", "shipping_create_document"] as const;
export type StepFunction = (typeof STEP_FUNCTIONS)[number];

/** One call of a step function: which, and its payload. */
export interface StepCall {
  fn: StepFunction;
  input: object;
}

export type StepReply = { refused?: string; detail?: string } & Record<string, unknown>;

/** Runs one step function in the caller's transaction. */
export async function callStep(q: Queryable, tenantId: string, call: StepCall): Promise<StepReply> {
  if (!STEP_FUNCTIONS.includes(call.fn)) throw new Error(`not a step function: ${call.fn}`);
  const [row] = await rows<{ reply: StepReply }>(q, sql`select ${sql.raw(call.fn)}(${tenantId}, ${JSON.stringify(call.input)}::jsonb) as reply`);
  return (row as { reply: StepReply }).reply;
}
