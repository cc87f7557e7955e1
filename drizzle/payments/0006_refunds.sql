-- Refunds of refund_pending money through the payment provider: attempts, the next one due (or the
-- sender's lease), the last error, and the provider's refund id once done.
ALTER TABLE "payments" ADD COLUMN "refund_attempts" integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "payments" ADD COLUMN "refund_next_at" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "payments" ADD COLUMN "refund_error" text;--> statement-breakpoint
ALTER TABLE "payments" ADD COLUMN "provider_refund_id" text;--> statement-breakpoint
ALTER TABLE "payments" ADD COLUMN "refunded_at" timestamp with time zone;--> statement-breakpoint
CREATE INDEX "payments_refunds_due" ON "payments" USING btree ("refund_next_at") WHERE "payments"."status" = 'refund_pending';--> statement-breakpoint
-- Money kept before this version may have been refunded by hand meanwhile: it is parked (never due)
-- until an operator releases it to the refunder or marks it refunded (docs/operations.md).
UPDATE "payments" SET "refund_next_at" = 'infinity' WHERE "status" = 'refund_pending';
