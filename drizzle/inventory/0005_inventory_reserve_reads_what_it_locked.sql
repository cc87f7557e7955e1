-- inventory_reserve of 0004 locked the rows and took the units in ONE statement, so the UPDATE
-- filtered the rows by `available >= qty` as of that statement's snapshot. A row whose stock came
-- back (a release, a restock) after the snapshot, while the statement waited on its lock, was locked
-- and checked at its new count by the FOR UPDATE, but skipped by the UPDATE, which in READ COMMITTED
-- re-checks only rows that already match in the snapshot: an order of several SKUs then took some
-- lines and raised "reservation of order … took k of n lines" (an HTTP 500), an order of one SKU was
-- refused OUT_OF_STOCK with no SKU named, though the stock was there. Here the rows are locked and
-- checked by one statement and taken by the next, whose snapshot is taken once every lock is held:
-- no other transaction can change them in between, so it sees the counts that were checked.

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
  IF coalesce(cardinality(v_skus), 0) = 0 THEN
    RETURN '{}'::jsonb;
  END IF;
  -- 1. Lock the rows in SKU order; the lines short (no row, or fewer units than asked) as locked.
  WITH locked AS (
    SELECT s.sku, s.available FROM stock_levels s
    WHERE s.tenant_id = p_tenant AND s.sku = ANY (v_skus)
    ORDER BY s.sku FOR UPDATE
  )
  SELECT array_agg(req.sku ORDER BY req.sku) INTO v_short
  FROM unnest(v_skus, v_qtys) AS req(sku, qty) LEFT JOIN locked l ON l.sku = req.sku
  WHERE l.sku IS NULL OR l.available < req.qty;
  IF v_short IS NOT NULL THEN
    RETURN jsonb_build_object('refused', 'OUT_OF_STOCK', 'detail', 'not enough stock of ' || array_to_string(v_short, ', '), 'skus', to_jsonb(v_short));
  END IF;
  -- 2. A new statement, so a new snapshot, taken with every row locked: it sees the counts checked above.
  WITH taken AS (
    UPDATE stock_levels s
    SET available = s.available - req.qty,
        reserved = s.reserved + CASE WHEN v_sold THEN 0 ELSE req.qty END,
        sold = s.sold + CASE WHEN v_sold THEN req.qty ELSE 0 END
    FROM unnest(v_skus, v_qtys) AS req(sku, qty)
    WHERE s.tenant_id = p_tenant AND s.sku = ANY (v_skus) AND s.sku = req.sku AND s.available >= req.qty
    RETURNING s.sku, req.qty
  ),
  recorded AS (
    INSERT INTO stock_reservations (tenant_id, order_id, sku, quantity, status)
    SELECT p_tenant, v_order, sku, qty, CASE WHEN v_sold THEN 'sold' ELSE 'reserved' END FROM taken
    RETURNING sku
  )
  SELECT count(*)::int INTO v_taken FROM recorded;
  IF v_taken <> cardinality(v_skus) THEN
    -- Cannot happen: every row was locked and checked first, and nothing else can change it since.
    RAISE EXCEPTION 'reservation of order % took % of % lines', v_order, v_taken, cardinality(v_skus);
  END IF;
  RETURN '{}'::jsonb;
END $$;
