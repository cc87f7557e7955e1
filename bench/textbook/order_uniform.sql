-- Copied from ../shared/bench/order_uniform.sql, the reference placement every target is a ratio against: keep it identical to that file (only this line added).
-- order_uniform.sql : one order = 1 local PG transaction, uniform random SKUs/users
\set uid random(1, 100000)
\set a random(1, 10000)
\set b random(1, 10000)
\set sku1 least(:a, :b)
\set sku2 greatest(:a, :b)
\set qty1 random(1, 3)
\set qty2 random(1, 3)
\set cpn random(1, 100000)
\set rnd random(1, 999999999999)
\set total :qty1 * (:sku1 % 100 + 9.99) + :qty2 * (:sku2 % 100 + 9.99)
BEGIN;
WITH u AS (UPDATE stock SET available = available - :qty1, reserved = reserved + :qty1, version = version + 1 WHERE sku = :sku1 AND available >= :qty1 RETURNING 1) SELECT count(*) AS ok1 FROM u \gset
WITH u AS (UPDATE stock SET available = available - :qty2, reserved = reserved + :qty2, version = version + 1 WHERE sku = :sku2 AND available >= :qty2 RETURNING 1) SELECT count(*) AS ok2 FROM u \gset
\if :ok1 = 1 and :ok2 = 1
WITH u AS (UPDATE accounts SET balance = balance - :total::numeric WHERE user_id = :uid AND balance >= :total::numeric RETURNING 1) SELECT count(*) AS ok3 FROM u \gset
\if :ok3 = 1
UPDATE coupons SET status = 'used' WHERE code = 'C' || :cpn::text AND status = 'unused';
INSERT INTO orders(order_no, user_id, total, status) VALUES ('ORD-' || :client_id::text || '-' || :rnd::text, :uid, :total::numeric, 'PLACED') RETURNING id AS oid \gset
INSERT INTO order_items(order_id, sku, qty, price) VALUES (:oid, :sku1, :qty1, :sku1::int % 100 + 9.99);
INSERT INTO order_items(order_id, sku, qty, price) VALUES (:oid, :sku2, :qty2, :sku2::int % 100 + 9.99);
INSERT INTO shipments(order_id, status, address) VALUES (:oid, 'PENDING', 'addr-' || :uid::text);
INSERT INTO outbox(topic, payload) VALUES ('order.placed', jsonb_build_object('order_id', :oid::bigint, 'user_id', :uid::int, 'total', :total::numeric, 'items', jsonb_build_array(jsonb_build_object('sku', :sku1::int, 'qty', :qty1::int), jsonb_build_object('sku', :sku2::int, 'qty', :qty2::int))));
COMMIT;
\else
ROLLBACK;
\endif
\else
ROLLBACK;
\endif
