-- The coupons module's step as an SQL function (see inventory_reserve for the convention).
-- Redeems a coupon for an order, once per order, within its limits; answers its discount rule
-- ({discountType, discountValue}). With payload.expected (the rule the order was priced with), a
-- coupon whose rule changed meanwhile is refused COUPON_CHANGED.
-- payload: {orderId, code, userId, subtotal, now, expected?: {type, value}}
CREATE OR REPLACE FUNCTION coupons_redeem(p_tenant text, p jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
  v_order text := p->>'orderId';
  v_code text := p->>'code';
  v_type text;
  v_value bigint;
BEGIN
  WITH c AS (
    UPDATE coupons SET redemptions = redemptions + 1, updated_at = now()
    WHERE tenant_id = p_tenant AND code = v_code
      AND redemptions < max_redemptions
      AND (user_id IS NULL OR user_id = p->>'userId')
      AND (min_subtotal IS NULL OR min_subtotal <= (p->>'subtotal')::bigint)
      AND (expires_at IS NULL OR expires_at > (p->>'now')::timestamptz)
      AND NOT EXISTS (SELECT 1 FROM coupon_redemptions WHERE tenant_id = p_tenant AND order_id = v_order)
    RETURNING discount_type, discount_value
  ),
  r AS (
    INSERT INTO coupon_redemptions (tenant_id, order_id, code, user_id, status)
    SELECT p_tenant, v_order, v_code, p->>'userId', 'redeemed' FROM c
  )
  SELECT discount_type, discount_value INTO v_type, v_value FROM c;
  IF NOT FOUND THEN
    SELECT k.discount_type, k.discount_value INTO v_type, v_value FROM coupons k
    WHERE k.tenant_id = p_tenant AND k.code = v_code
      AND EXISTS (SELECT 1 FROM coupon_redemptions x WHERE x.tenant_id = p_tenant AND x.order_id = v_order AND x.status = 'redeemed');
    IF NOT FOUND THEN
      RETURN jsonb_build_object('refused', 'COUPON_UNAVAILABLE', 'detail',
        CASE WHEN EXISTS (SELECT 1 FROM coupons WHERE tenant_id = p_tenant AND code = v_code)
          THEN 'coupon ' || v_code || ' cannot be used for this order' ELSE 'no coupon ' || v_code END);
    END IF;
  END IF;
  IF p ? 'expected' AND (v_type IS DISTINCT FROM p->'expected'->>'type' OR v_value IS DISTINCT FROM (p->'expected'->>'value')::bigint) THEN
    RETURN jsonb_build_object('refused', 'COUPON_CHANGED', 'detail', 'coupon ' || v_code || ' changed');
  END IF;
  RETURN jsonb_build_object('discountType', v_type, 'discountValue', v_value);
END $$;
