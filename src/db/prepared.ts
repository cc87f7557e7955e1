import { sql } from "drizzle-orm";
import type { Outcome } from "../kit/outcome.ts";
import { type Database, rows, type TenantOptions, type Tx } from "./client.ts";
import { sqlState } from "./errors.ts";

// PostgreSQL's prepared transactions (two-phase commit), the primitives of src/flows/two-phase-placement.ts.
// A transaction identifier (gid) is a literal in PREPARE / COMMIT PREPARED / ROLLBACK PREPARED, never
// a parameter, so it is checked to be plain before it is written into a statement.

const GID = /^[A-Za-z0-9:._-]{1,190}$/;

function literal(gid: string): string {
  if (!GID.test(gid)) throw new Error(`not a transaction identifier: ${JSON.stringify(gid)}`);
  return `'${gid}'`;
}

/** Carries a refusal out of the transaction it rolls back. */
class Refused<R extends string> extends Error {
  constructor(readonly outcome: { ok: false; reason: R; detail?: string }) {
    super(outcome.reason);
  }
}

/**
 * Runs work in a tenant transaction of `database` (see inTenant) that ends with PREPARE TRANSACTION
 * instead of COMMIT when work answers ok: its effects are then on disk but seen by no one, and its row
 * locks held, until COMMIT PREPARED or ROLLBACK PREPARED from any session of the same user. A refusal
 * or an error rolls it back. The role is set back to the connection's own user before PREPARE, so
 * the coordinator and its recovery, connected as that user, may finish what it prepared.
 */
export async function prepareInTenant<T, R extends string>(
  database: Database,
  tenantId: string,
  gid: string,
  work: (tx: Tx) => Promise<Outcome<T, R>>,
  options?: TenantOptions,
): Promise<Outcome<T, R>> {
  const statement = sql.raw(`prepare transaction ${literal(gid)}`);
  try {
    return await database.tenant(tenantId, async (tx) => {
      const outcome = await work(tx);
      if (!outcome.ok) throw new Refused(outcome);
      await tx.execute(sql`select set_config('role', 'none', true)`);
      // The session leaves its transaction here; the COMMIT drizzle sends next finds none and only warns.
      await tx.execute(statement);
      return outcome;
    }, options);
  } catch (error) {
    if (error instanceof Refused) return error.outcome as Outcome<T, R>;
    throw error;
  }
}

/**
 * COMMIT PREPARED or ROLLBACK PREPARED: true when this call finished the transaction, false when no
 * prepared transaction has that identifier (finished already, by another coordinator or recovery, or
 * never prepared) or another session is finishing it now.
 */
export async function finishPrepared(database: Database, gid: string, how: "commit" | "rollback"): Promise<boolean> {
  try {
    await database.db.execute(sql.raw(`${how === "commit" ? "commit" : "rollback"} prepared ${literal(gid)}`));
    return true;
  } catch (error) {
    // 42704: no such prepared transaction; 55000: another session is finishing it (it "is busy").
    const state = sqlState(error);
    if (state === "42704" || state === "55000") return false;
    throw error;
  }
}

/** The transactions prepared in this database whose identifier starts with `prefix`, oldest first, with how long ago (by this server's clock). */
export function preparedTransactions(database: Database, prefix: string): Promise<{ gid: string; ageMs: number }[]> {
  return rows<{ gid: string; ageMs: number }>(
    database.db,
    sql`select gid, (extract(epoch from now() - prepared) * 1000)::float8 as "ageMs"
        from pg_prepared_xacts where database = current_database() and starts_with(gid, ${prefix}) order by prepared`,
  );
}

/** How many transactions the server may hold prepared at once (0: PREPARE TRANSACTION is refused). */
export async function maxPreparedTransactions(database: Database): Promise<number> {
  const [row] = await rows<{ setting: string }>(database.db, sql`select current_setting('max_prepared_transactions') as setting`);
  return Number(row?.setting ?? 0);
}
