-- Merchants' webhooks under the tenant policy. The tenant role manages its endpoints, fans events out
-- into deliveries and reads the attempts (the timeline); sending, across tenants, runs as the owner.
GRANT SELECT, INSERT, UPDATE, DELETE ON webhook_endpoints TO orderly_app;
--> statement-breakpoint
GRANT SELECT, INSERT, UPDATE ON webhook_deliveries TO orderly_app;
--> statement-breakpoint
GRANT SELECT ON webhook_attempts TO orderly_app;
--> statement-breakpoint
ALTER TABLE "webhook_endpoints" ENABLE ROW LEVEL SECURITY;
--> statement-breakpoint
CREATE POLICY tenant_isolation ON "webhook_endpoints" TO orderly_app
  USING (tenant_id = current_setting('orderly.tenant_id', true))
  WITH CHECK (tenant_id = current_setting('orderly.tenant_id', true));
--> statement-breakpoint
ALTER TABLE "webhook_deliveries" ENABLE ROW LEVEL SECURITY;
--> statement-breakpoint
CREATE POLICY tenant_isolation ON "webhook_deliveries" TO orderly_app
  USING (tenant_id = current_setting('orderly.tenant_id', true))
  WITH CHECK (tenant_id = current_setting('orderly.tenant_id', true));
--> statement-breakpoint
ALTER TABLE "webhook_attempts" ENABLE ROW LEVEL SECURITY;
--> statement-breakpoint
CREATE POLICY tenant_isolation ON "webhook_attempts" TO orderly_app
  USING (tenant_id = current_setting('orderly.tenant_id', true));
