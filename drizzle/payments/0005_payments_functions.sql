-- The payments module's step as an SQL function (see inventory_reserve for the convention).
-- Debits an order's amount from the user's wallet, once per order. payload: {orderId, userId, amount}
CREATE OR REPLACE FUNCTION wallets_debit(p_tenant text, p jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
  v_order text := p->>'orderId';
  v_user text := p->>'userId';
  v_amount bigint := (p->>'amount')::bigint;
BEGIN
  IF v_amount = 0 THEN RETURN '{}'::jsonb; END IF;
  WITH w AS (
    UPDATE wallets SET balance = balance - v_amount, updated_at = now()
    WHERE tenant_id = p_tenant AND user_id = v_user AND balance >= v_amount
      AND NOT EXISTS (SELECT 1 FROM wallet_entries WHERE tenant_id = p_tenant AND order_id = v_order AND kind = 'debit')
    RETURNING user_id
  )
  INSERT INTO wallet_entries (tenant_id, user_id, kind, amount, order_id)
  SELECT p_tenant, user_id, 'debit', -v_amount, v_order FROM w;
  IF FOUND OR EXISTS (SELECT 1 FROM wallet_entries WHERE tenant_id = p_tenant AND order_id = v_order AND kind = 'debit') THEN
    RETURN '{}'::jsonb;
  END IF;
  RETURN jsonb_build_object('refused', 'INSUFFICIENT_FUNDS', 'detail', 'the wallet does not hold ' || v_amount);
END $$;
