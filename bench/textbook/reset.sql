-- Copied from ../shared/bench/reset.sql, the reference placement every target is a ratio against: keep it identical to that file (only this line added).
-- reset.sql : run before every measured pgbench run (restores comparable state)
TRUNCATE outbox, shipments, order_items, orders RESTART IDENTITY;  -- (autovacuum disabled on these 4 tables, see schema.sql)
UPDATE stock SET available = 1000000000, reserved = 0, version = 0 WHERE version <> 0 OR available <> 1000000000;
UPDATE accounts SET balance = 1000000000 WHERE balance <> 1000000000;
UPDATE coupons SET status = 'unused' WHERE status <> 'unused';
VACUUM ANALYZE stock, accounts, coupons;
CHECKPOINT;
