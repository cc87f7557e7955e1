-- The placement's move of a PENDING order to its settled status (PAID or CREATED) as an SQL function,
-- so the composed placement settles an order recorded PENDING (asynchronous placement) in the same
-- one statement as its steps: the order row compared and set at its version, the move in its
-- history, its event in the outbox. The orders module's TypeScript (prepareSettlement) checks the
-- move against the state machine's table and asks the hooks first, as move() does.
-- p: {id, version (the new one), status, paymentStatus, discount, total, paymentDueAt, shipmentWaybill,
--     shipmentStatus, reason, at, event: {id, topic, payload}}. Raises OR001 ORDER_NOT_PENDING when
-- the order left PENDING or changed meanwhile: the composed statement is then rolled back whole.
CREATE OR REPLACE FUNCTION orders_settle(p_tenant text, p jsonb)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  v_id text := p->>'id';
  v_at timestamptz := (p->>'at')::timestamptz;
  v_number text;
BEGIN
  UPDATE orders SET status = p->>'status', payment_status = p->>'paymentStatus', version = (p->>'version')::int,
                    discount = (p->>'discount')::bigint, total = (p->>'total')::bigint,
                    payment_due_at = (p->>'paymentDueAt')::timestamptz, shipment_waybill = p->>'shipmentWaybill',
                    shipment_status = p->>'shipmentStatus', updated_at = v_at
  WHERE tenant_id = p_tenant AND id = v_id AND status = 'PENDING' AND version = (p->>'version')::int - 1
  RETURNING order_number INTO v_number;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'OR001', MESSAGE = 'ORDER_NOT_PENDING', DETAIL = 'order ' || v_id || ' is no longer PENDING at its version';
  END IF;
  INSERT INTO order_history (tenant_id, order_id, from_status, to_status, reason, at)
  VALUES (p_tenant, v_id, 'PENDING', p->>'status', p->>'reason', v_at);
  PERFORM outbox_enqueue(p->'event'->>'id', p_tenant, p->'event'->>'topic', p->'event'->'payload', NULL, NULL, v_at);
  RETURN v_number;
END $$;
