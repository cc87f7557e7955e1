-- The orders service's tables get the tenant policy (the role comes from the kit's migrations).
GRANT SELECT, INSERT, UPDATE, DELETE ON orders, order_items, order_history, order_catalogue TO orderly_app;
--> statement-breakpoint
GRANT USAGE, SELECT ON SEQUENCE order_number_seq, order_history_id_seq TO orderly_app;
--> statement-breakpoint
ALTER TABLE "orders" ENABLE ROW LEVEL SECURITY;
--> statement-breakpoint
CREATE POLICY tenant_isolation ON "orders" TO orderly_app
  USING (tenant_id = current_setting('orderly.tenant_id', true))
  WITH CHECK (tenant_id = current_setting('orderly.tenant_id', true));
--> statement-breakpoint
ALTER TABLE "order_items" ENABLE ROW LEVEL SECURITY;
--> statement-breakpoint
CREATE POLICY tenant_isolation ON "order_items" TO orderly_app
  USING (tenant_id = current_setting('orderly.tenant_id', true))
  WITH CHECK (tenant_id = current_setting('orderly.tenant_id', true));
--> statement-breakpoint
ALTER TABLE "order_history" ENABLE ROW LEVEL SECURITY;
--> statement-breakpoint
CREATE POLICY tenant_isolation ON "order_history" TO orderly_app
  USING (tenant_id = current_setting('orderly.tenant_id', true))
  WITH CHECK (tenant_id = current_setting('orderly.tenant_id', true));
--> statement-breakpoint
ALTER TABLE "order_catalogue" ENABLE ROW LEVEL SECURITY;
--> statement-breakpoint
CREATE POLICY tenant_isolation ON "order_catalogue" TO orderly_app
  USING (tenant_id = current_setting('orderly.tenant_id', true))
  WITH CHECK (tenant_id = current_setting('orderly.tenant_id', true));
