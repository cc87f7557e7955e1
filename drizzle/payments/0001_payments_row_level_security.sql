-- The payments service's tables get the tenant policy (the role comes from the kit's migrations).
GRANT SELECT, INSERT, UPDATE, DELETE ON wallets, wallet_entries, payments TO orderly_app;
--> statement-breakpoint
GRANT USAGE, SELECT ON SEQUENCE wallet_entries_id_seq TO orderly_app;
--> statement-breakpoint
ALTER TABLE "wallets" ENABLE ROW LEVEL SECURITY;
--> statement-breakpoint
CREATE POLICY tenant_isolation ON "wallets" TO orderly_app
  USING (tenant_id = current_setting('orderly.tenant_id', true))
  WITH CHECK (tenant_id = current_setting('orderly.tenant_id', true));
--> statement-breakpoint
ALTER TABLE "wallet_entries" ENABLE ROW LEVEL SECURITY;
--> statement-breakpoint
CREATE POLICY tenant_isolation ON "wallet_entries" TO orderly_app
  USING (tenant_id = current_setting('orderly.tenant_id', true))
  WITH CHECK (tenant_id = current_setting('orderly.tenant_id', true));
--> statement-breakpoint
ALTER TABLE "payments" ENABLE ROW LEVEL SECURITY;
--> statement-breakpoint
CREATE POLICY tenant_isolation ON "payments" TO orderly_app
  USING (tenant_id = current_setting('orderly.tenant_id', true))
  WITH CHECK (tenant_id = current_setting('orderly.tenant_id', true));
