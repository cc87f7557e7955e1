-- The orders module's record of a new order as an SQL function, called by its TypeScript front door
-- (insertOrder) and by the composed placement: the order row with its number, its lines, the moves
-- that led to its status, and its event in the outbox (outbox_enqueue, the kit's). Answers the number.
-- p: {id, userId, status, version, subtotal, discount, total, currency, couponCode, paymentMethod,
--     paymentStatus, paymentDueAt, shippingAddress, shipmentWaybill, shipmentStatus, at,
--     lines: [{sku, name, quantity, unitPrice, lineTotal}], history: [{from, to, reason}],
--     event: {id, topic, payload}}
CREATE OR REPLACE FUNCTION orders_record(p_tenant text, p jsonb)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  v_id text := p->>'id';
  v_at timestamptz := (p->>'at')::timestamptz;
  v_number text := 'ORD-' || nextval('order_number_seq');
BEGIN
  INSERT INTO orders (id, tenant_id, order_number, user_id, status, version, subtotal, discount, total, currency,
                      coupon_code, payment_method, payment_status, payment_due_at, shipping_address,
                      shipment_waybill, shipment_status, created_at, updated_at)
  VALUES (v_id, p_tenant, v_number, p->>'userId', p->>'status', (p->>'version')::int, (p->>'subtotal')::bigint,
          (p->>'discount')::bigint, (p->>'total')::bigint, p->>'currency', p->>'couponCode', p->>'paymentMethod',
          p->>'paymentStatus', (p->>'paymentDueAt')::timestamptz, p->'shippingAddress', p->>'shipmentWaybill',
          p->>'shipmentStatus', v_at, v_at);
  INSERT INTO order_items (tenant_id, order_id, sku, name, quantity, unit_price, line_total)
  SELECT p_tenant, v_id, l.sku, l.name, l.quantity, l."unitPrice", l."lineTotal"
  FROM jsonb_to_recordset(p->'lines') AS l(sku text, name text, quantity int, "unitPrice" bigint, "lineTotal" bigint);
  INSERT INTO order_history (tenant_id, order_id, from_status, to_status, reason, at)
  SELECT p_tenant, v_id, h.e->>'from', h.e->>'to', h.e->>'reason', v_at
  FROM jsonb_array_elements(p->'history') WITH ORDINALITY AS h(e, n)
  ORDER BY h.n;
  PERFORM outbox_enqueue(p->'event'->>'id', p_tenant, p->'event'->>'topic', p->'event'->'payload', NULL, NULL, v_at);
  RETURN v_number;
END $$;
