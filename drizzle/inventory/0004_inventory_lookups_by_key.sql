-- The steps of 0003 looked their rows up by joining the jsonb lines with the table. PostgreSQL
-- estimates 100 rows for a jsonb set, so it planned those joins as a scan of the tenant's whole
-- stock or catalogue (3 ms per placement at 10,000 SKUs, the database's CPU the bound). Here every
-- lookup names its keys (sku = ANY (…)), so it goes through the primary key whatever the estimate.

-- Takes an order's units off `available`, into `reserved` or straight into `sold` (payload.sold),
-- for every line or none. The rows are locked in SKU order (no deadlock between two orders of the
-- same SKUs), every line is checked against the locked counts, and the decrement is conditional too,
-- so stock never goes negative. Idempotent per order. payload: {orderId, lines: [{sku, quantity}], sold}
CREATE OR REPLACE FUNCTION inventory_reserve(p_tenant text, p jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
  v_order text := p->>'orderId';
  v_sold boolean := coalesce((p->>'sold')::boolean, false);
  v_skus text[];
  v_qtys bigint[];
  v_taken int;
  v_short text[];
BEGIN
  IF EXISTS (SELECT 1 FROM stock_reservations x WHERE x.tenant_id = p_tenant AND x.order_id = v_order) THEN
    RETURN '{}'::jsonb;
  END IF;
  SELECT array_agg(r.sku ORDER BY r.sku), array_agg(r.qty ORDER BY r.sku) INTO v_skus, v_qtys
  FROM (SELECT l.sku, sum(l.quantity)::bigint AS qty FROM jsonb_to_recordset(p->'lines') AS l(sku text, quantity bigint) GROUP BY l.sku) r;
  WITH req AS (
    SELECT u.sku, u.qty FROM unnest(v_skus, v_qtys) AS u(sku, qty)
  ),
  locked AS (
    SELECT s.sku, s.available FROM stock_levels s
    WHERE s.tenant_id = p_tenant AND s.sku = ANY (v_skus)
    ORDER BY s.sku FOR UPDATE
  ),
  short AS (
    SELECT array_agg(req.sku ORDER BY req.sku) AS skus FROM req LEFT JOIN locked l ON l.sku = req.sku
    WHERE l.sku IS NULL OR l.available < req.qty
  ),
  taken AS (
    UPDATE stock_levels s
    SET available = s.available - req.qty,
        reserved = s.reserved + CASE WHEN v_sold THEN 0 ELSE req.qty END,
        sold = s.sold + CASE WHEN v_sold THEN req.qty ELSE 0 END
    FROM req
    WHERE s.tenant_id = p_tenant AND s.sku = ANY (v_skus) AND s.sku = req.sku AND s.available >= req.qty
      AND s.sku IN (SELECT sku FROM locked) AND (SELECT skus FROM short) IS NULL
    RETURNING s.sku, req.qty
  ),
  recorded AS (
    INSERT INTO stock_reservations (tenant_id, order_id, sku, quantity, status)
    SELECT p_tenant, v_order, sku, qty, CASE WHEN v_sold THEN 'sold' ELSE 'reserved' END FROM taken
    RETURNING sku
  )
  SELECT (SELECT count(*) FROM recorded)::int, (SELECT skus FROM short) INTO v_taken, v_short;
  IF v_short IS NULL AND v_taken = coalesce(cardinality(v_skus), 0) THEN
    RETURN '{}'::jsonb;
  END IF;
  IF v_taken > 0 THEN
    -- Cannot happen: every row was locked and checked first. Raising rolls the caller back.
    RAISE EXCEPTION 'reservation of order % took % of % lines', v_order, v_taken, cardinality(v_skus);
  END IF;
  RETURN jsonb_build_object('refused', 'OUT_OF_STOCK', 'detail', 'not enough stock of ' || array_to_string(v_short, ', '), 'skus', to_jsonb(v_short));
END $$;
--> statement-breakpoint
-- Whether the catalogue still has the prices an order was priced at (the local executor prices
-- before its one statement, from a cache). payload: [{sku, unitPrice}]
CREATE OR REPLACE FUNCTION inventory_prices_match(p_tenant text, p jsonb)
RETURNS jsonb LANGUAGE sql STABLE AS $$
  SELECT CASE WHEN count(*) = 0 THEN '{}'::jsonb
    ELSE jsonb_build_object('refused', 'PRICE_CHANGED', 'detail', 'the price of ' || string_agg(l.sku, ', ') || ' changed') END
  FROM jsonb_to_recordset(p) AS l(sku text, "unitPrice" bigint)
  LEFT JOIN products pr ON pr.tenant_id = p_tenant AND pr.sku = l.sku
    AND pr.sku = ANY (ARRAY(SELECT e->>'sku' FROM jsonb_array_elements(p) AS e))
  WHERE pr.price IS DISTINCT FROM l."unitPrice"
$$;
