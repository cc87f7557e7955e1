-- In PL/pgSQL, whose statements keep their plans for the connection's life: as an SQL function whose
-- SELECT has a FROM it was never inlined, so it was parsed and planned again on every call (see kit
-- migration 0008). Unchanged in what it answers: {} when every line's unitPrice is the product's
-- price, else a PRICE_CHANGED refusal naming the SKUs. payload: [{sku, unitPrice}]
CREATE OR REPLACE FUNCTION inventory_prices_match(p_tenant text, p jsonb)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
BEGIN
  RETURN (
    SELECT CASE WHEN count(*) = 0 THEN '{}'::jsonb
      ELSE jsonb_build_object('refused', 'PRICE_CHANGED', 'detail', 'the price of ' || string_agg(l.sku, ', ') || ' changed') END
    FROM jsonb_to_recordset(p) AS l(sku text, "unitPrice" bigint)
    LEFT JOIN products pr ON pr.tenant_id = p_tenant AND pr.sku = l.sku
      AND pr.sku = ANY (ARRAY(SELECT e->>'sku' FROM jsonb_array_elements(p) AS e))
    WHERE pr.price IS DISTINCT FROM l."unitPrice"
  );
END;
$$;
