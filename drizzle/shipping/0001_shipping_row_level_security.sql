-- The shipping service's tables get the tenant policy (the role comes from the kit's migrations).
GRANT SELECT, INSERT, UPDATE, DELETE ON shipments TO orderly_app;
--> statement-breakpoint
ALTER TABLE "shipments" ENABLE ROW LEVEL SECURITY;
--> statement-breakpoint
CREATE POLICY tenant_isolation ON "shipments" TO orderly_app
  USING (tenant_id = current_setting('orderly.tenant_id', true))
  WITH CHECK (tenant_id = current_setting('orderly.tenant_id', true));
