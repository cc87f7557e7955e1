GRANT SELECT, INSERT, UPDATE, DELETE ON order_catalogue TO orderly_app;
--> statement-breakpoint
ALTER TABLE "order_catalogue" ENABLE ROW LEVEL SECURITY;
--> statement-breakpoint
CREATE POLICY tenant_isolation ON "order_catalogue" TO orderly_app
  USING (tenant_id = current_setting('orderly.tenant_id', true))
  WITH CHECK (tenant_id = current_setting('orderly.tenant_id', true));
