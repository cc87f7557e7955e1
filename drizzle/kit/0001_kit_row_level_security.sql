-- Tenant isolation enforced by PostgreSQL itself (row-level security), as a second line behind the
-- tenant filter of every query. Requests run their transactions as the role orderly_app with
-- orderly.tenant_id set (src/db/client.ts, inTenant): a query that forgets its tenant filter sees only
-- that tenant's rows, and none when no tenant is set. The owner of the tables (the role that
-- migrates) bypasses the policies: only jobs that work across tenants run that way.
DO $$ BEGIN
  CREATE ROLE orderly_app NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; -- roles are cluster-wide: another database made it
END $$;
--> statement-breakpoint
DO $$ BEGIN
  EXECUTE format('GRANT orderly_app TO %I', current_user);
EXCEPTION WHEN duplicate_object OR invalid_grant_operation OR insufficient_privilege THEN NULL;
END $$;
--> statement-breakpoint
GRANT USAGE ON SCHEMA public TO orderly_app;
--> statement-breakpoint
GRANT SELECT, INSERT, UPDATE, DELETE ON idempotency_keys, outbox_messages, inbox_messages, saga_barriers, sagas TO orderly_app;
--> statement-breakpoint
ALTER TABLE "idempotency_keys" ENABLE ROW LEVEL SECURITY;
--> statement-breakpoint
CREATE POLICY tenant_isolation ON "idempotency_keys" TO orderly_app
  USING (tenant_id = current_setting('orderly.tenant_id', true))
  WITH CHECK (tenant_id = current_setting('orderly.tenant_id', true));
--> statement-breakpoint
ALTER TABLE "outbox_messages" ENABLE ROW LEVEL SECURITY;
--> statement-breakpoint
CREATE POLICY tenant_isolation ON "outbox_messages" TO orderly_app
  USING (tenant_id = current_setting('orderly.tenant_id', true))
  WITH CHECK (tenant_id = current_setting('orderly.tenant_id', true));
--> statement-breakpoint
ALTER TABLE "inbox_messages" ENABLE ROW LEVEL SECURITY;
--> statement-breakpoint
CREATE POLICY tenant_isolation ON "inbox_messages" TO orderly_app
  USING (tenant_id = current_setting('orderly.tenant_id', true))
  WITH CHECK (tenant_id = current_setting('orderly.tenant_id', true));
--> statement-breakpoint
ALTER TABLE "saga_barriers" ENABLE ROW LEVEL SECURITY;
--> statement-breakpoint
CREATE POLICY tenant_isolation ON "saga_barriers" TO orderly_app
  USING (tenant_id = current_setting('orderly.tenant_id', true))
  WITH CHECK (tenant_id = current_setting('orderly.tenant_id', true));
--> statement-breakpoint
ALTER TABLE "sagas" ENABLE ROW LEVEL SECURITY;
--> statement-breakpoint
CREATE POLICY tenant_isolation ON "sagas" TO orderly_app
  USING (tenant_id = current_setting('orderly.tenant_id', true))
  WITH CHECK (tenant_id = current_setting('orderly.tenant_id', true));
