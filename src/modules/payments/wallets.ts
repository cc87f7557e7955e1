import { and, eq, sql } from "drizzle-orm";
import { type Queryable, rows, type Tx } from "../../db/client.ts";
import { callStep, type StepCall } from "../../db/step-functions.ts";
import { ok, type Outcome, refuse } from "../../kit/outcome.ts";
import { wallets } from "./schema.ts";

export interface Wallet {
  userId: string;
  balance: number;
  currency: string;
}

/** Balances stay exact as JavaScript numbers; a credit that would pass this is refused. */
const MAX_BALANCE = Number.MAX_SAFE_INTEGER;

/** The payments module's wallet side: credits, debits through the ledger, balances. */
export function createWallets(options: { currency: string }) {
  const { currency } = options;

  const debitCall = (args: { userId: string; orderId: string; amount: number }): StepCall => ({
    fn: "wallets_debit",
    input: { orderId: args.orderId, userId: args.userId, amount: args.amount },
  });

  return {
    async getWallet(q: Queryable, tenantId: string, userId: string): Promise<Wallet> {
      const [row] = await q
        .select({ balance: wallets.balance })
        .from(wallets)
        .where(and(eq(wallets.tenantId, tenantId), eq(wallets.userId, userId)));
      return { userId, balance: row?.balance ?? 0, currency };
    },

    async credit(tx: Tx, args: { tenantId: string; userId: string; amount: number }): Promise<Outcome<Wallet, "AMOUNT_TOO_LARGE">> {
      const { tenantId, userId, amount } = args;
      const result = await rows<{ balance: string }>(tx, sql`
        with w as (
          insert into wallets (tenant_id, user_id, balance, currency) values (${tenantId}, ${userId}, ${amount}, ${currency})
          on conflict (tenant_id, user_id) do update
            set balance = wallets.balance + excluded.balance, updated_at = now()
            where wallets.balance + excluded.balance <= ${MAX_BALANCE}
          returning balance
        ),
        e as (
          insert into wallet_entries (tenant_id, user_id, kind, amount)
          select ${tenantId}, ${userId}, 'credit', ${amount} from w
        )
        select balance from w`);
      const row = result[0];
      if (!row) return refuse("AMOUNT_TOO_LARGE", `the balance would exceed ${MAX_BALANCE}`);
      return ok({ userId, balance: Number(row.balance), currency });
    },

    debitCall,

    /** Takes an order's total from the wallet, once per order, never below zero (wallets_debit in the module's migrations). */
    async debit(
      tx: Tx,
      args: { tenantId: string; userId: string; orderId: string; amount: number },
    ): Promise<Outcome<void, "INSUFFICIENT_FUNDS">> {
      const reply = await callStep(tx, args.tenantId, debitCall(args));
      return reply.refused ? refuse("INSUFFICIENT_FUNDS", reply.detail) : ok(undefined);
    },

    /** Gives an order's debit back (the order's saga compensates). Once per order; nothing if it was never debited. */
    async refund(tx: Tx, args: { tenantId: string; orderId: string }): Promise<void> {
      const { tenantId, orderId } = args;
      await tx.execute(sql`
        with d as (
          select user_id, -amount as amount from wallet_entries
          where tenant_id = ${tenantId} and order_id = ${orderId} and kind = 'debit'
        ),
        e as (
          insert into wallet_entries (tenant_id, user_id, kind, amount, order_id)
          select ${tenantId}, user_id, 'refund', amount, ${orderId} from d
          on conflict do nothing
          returning user_id, amount
        )
        update wallets w set balance = w.balance + e.amount, updated_at = now()
        from e where w.tenant_id = ${tenantId} and w.user_id = e.user_id`);
    },
  };
}

export type Wallets = ReturnType<typeof createWallets>;
