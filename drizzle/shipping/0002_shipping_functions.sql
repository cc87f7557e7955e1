-- The shipping module's step as an SQL function (see inventory_reserve for the convention).
-- Creates an order's shipment document, or answers the one it already has. payload: {orderId, waybill, address}
CREATE OR REPLACE FUNCTION shipping_create_document(p_tenant text, p jsonb)
RETURNS jsonb LANGUAGE sql AS $$
  INSERT INTO shipments (tenant_id, order_id, waybill, status, address)
  VALUES (p_tenant, p->>'orderId', p->>'waybill', 'pending', p->'address')
  ON CONFLICT (tenant_id, order_id) DO UPDATE SET order_id = excluded.order_id
  RETURNING jsonb_build_object('waybill', waybill, 'status', status, 'carrier', carrier, 'trackingNumber', tracking_number)
$$;
