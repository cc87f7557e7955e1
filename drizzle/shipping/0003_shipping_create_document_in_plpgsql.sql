-- In PL/pgSQL, whose statements keep their plans for the connection's life: as an SQL function with
-- an INSERT it was parsed and planned again on every call (see kit migration 0008). Unchanged in
-- what it does: creates an order's shipment document, or answers the one it already has.
-- payload: {orderId, waybill, address}
CREATE OR REPLACE FUNCTION shipping_create_document(p_tenant text, p jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
  v_reply jsonb;
BEGIN
  INSERT INTO shipments (tenant_id, order_id, waybill, status, address)
  VALUES (p_tenant, p->>'orderId', p->>'waybill', 'pending', p->'address')
  ON CONFLICT (tenant_id, order_id) DO UPDATE SET order_id = excluded.order_id
  RETURNING jsonb_build_object('waybill', waybill, 'status', status, 'carrier', carrier, 'trackingNumber', tracking_number) INTO v_reply;
  RETURN v_reply;
END;
$$;
