GRANT SELECT, INSERT, UPDATE, DELETE ON sagas TO orderly_app;
--> statement-breakpoint
ALTER TABLE "sagas" ENABLE ROW LEVEL SECURITY;
--> statement-breakpoint
CREATE POLICY tenant_isolation ON "sagas" TO orderly_app
  USING (tenant_id = current_setting('orderly.tenant_id', true))
  WITH CHECK (tenant_id = current_setting('orderly.tenant_id', true));
