-- Copied from ../shared/bench/schema.sql, the reference placement every target is a ratio against: keep it identical to that file (only this line added).
-- schema.sql  : order-transaction benchmark schema (database "bench")
DROP TABLE IF EXISTS outbox, shipments, order_items, orders, coupons, accounts, stock CASCADE;
CREATE TABLE stock (
  sku        int PRIMARY KEY,
  available  int NOT NULL,
  reserved   int NOT NULL DEFAULT 0,
  version    int NOT NULL DEFAULT 0
) WITH (fillfactor = 80);
CREATE TABLE accounts (
  user_id  int PRIMARY KEY,
  balance  numeric(14,2) NOT NULL
) WITH (fillfactor = 80);
CREATE TABLE coupons (
  code     text PRIMARY KEY,
  user_id  int NOT NULL,
  status   text NOT NULL DEFAULT 'unused'
) WITH (fillfactor = 80);
CREATE TABLE orders (
  id          bigserial PRIMARY KEY,
  order_no    text NOT NULL UNIQUE,
  user_id     int NOT NULL,
  total       numeric(12,2) NOT NULL,
  status      text NOT NULL,
  version     int NOT NULL DEFAULT 0,
  created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE order_items (
  id        bigserial PRIMARY KEY,
  order_id  bigint NOT NULL REFERENCES orders(id),
  sku       int NOT NULL,
  qty       int NOT NULL,
  price     numeric(12,2) NOT NULL
);
CREATE INDEX order_items_order_id_idx ON order_items(order_id);
CREATE TABLE shipments (
  id          bigserial PRIMARY KEY,
  order_id    bigint NOT NULL REFERENCES orders(id),
  status      text NOT NULL,
  address     text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX shipments_order_id_idx ON shipments(order_id);
CREATE TABLE outbox (
  id          bigserial PRIMARY KEY,
  topic       text NOT NULL,
  payload     jsonb NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now()
);
-- seed: 10,000 SKUs with large stock (sku 0 = flash-sale hot SKU, also large), 100,000 accounts, 1,000,000 coupons
INSERT INTO stock(sku, available) SELECT g, 1000000000 FROM generate_series(0, 10000) g;
INSERT INTO accounts(user_id, balance) SELECT g, 1000000000 FROM generate_series(1, 100000) g;
INSERT INTO coupons(code, user_id) SELECT 'C' || g, (g % 100000) + 1 FROM generate_series(1, 100000) g;
VACUUM ANALYZE;
-- Added after observing a benchmark artifact: autovacuum ANALYZE racing the per-run TRUNCATE made some sessions cache a
-- seq-scan generic plan for the FK check on orders(id) (throughput decayed during t_fn_uniform_sync_c4__r1).
-- These append-only tables are truncated before every run, so disable autovacuum on them (production tables are large anyway).
ALTER TABLE orders SET (autovacuum_enabled = false);
ALTER TABLE order_items SET (autovacuum_enabled = false);
ALTER TABLE shipments SET (autovacuum_enabled = false);
ALTER TABLE outbox SET (autovacuum_enabled = false);
