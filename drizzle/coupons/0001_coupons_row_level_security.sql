-- The coupons service's tables get the tenant policy (the role comes from the kit's migrations).
GRANT SELECT, INSERT, UPDATE, DELETE ON coupons, coupon_redemptions TO orderly_app;
--> statement-breakpoint
ALTER TABLE "coupons" ENABLE ROW LEVEL SECURITY;
--> statement-breakpoint
CREATE POLICY tenant_isolation ON "coupons" TO orderly_app
  USING (tenant_id = current_setting('orderly.tenant_id', true))
  WITH CHECK (tenant_id = current_setting('orderly.tenant_id', true));
--> statement-breakpoint
ALTER TABLE "coupon_redemptions" ENABLE ROW LEVEL SECURITY;
--> statement-breakpoint
CREATE POLICY tenant_isolation ON "coupon_redemptions" TO orderly_app
  USING (tenant_id = current_setting('orderly.tenant_id', true))
  WITH CHECK (tenant_id = current_setting('orderly.tenant_id', true));
