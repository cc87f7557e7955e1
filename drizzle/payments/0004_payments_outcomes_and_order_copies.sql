-- A payment row per reported outcome (succeeded after failed is news, not a duplicate), and the
-- payments service's copy of each order, versioned, kept from the orders service's events.
ALTER TABLE "payments" ADD COLUMN "outcome" text DEFAULT 'succeeded' NOT NULL;--> statement-breakpoint
UPDATE "payments" SET "outcome" = 'failed' WHERE "status" = 'failed';--> statement-breakpoint
ALTER TABLE "payments" DROP CONSTRAINT "payments_tenant_id_order_id_external_txn_id_pk";--> statement-breakpoint
ALTER TABLE "payments" ADD CONSTRAINT "payments_tenant_id_order_id_external_txn_id_outcome_pk" PRIMARY KEY("tenant_id","order_id","external_txn_id","outcome");--> statement-breakpoint
ALTER TABLE "payment_intents" ADD COLUMN "payment_method" text DEFAULT 'external' NOT NULL;--> statement-breakpoint
ALTER TABLE "payment_intents" ADD COLUMN "order_status" text DEFAULT 'CREATED' NOT NULL;--> statement-breakpoint
ALTER TABLE "payment_intents" ADD COLUMN "payment_status" text DEFAULT 'pending' NOT NULL;--> statement-breakpoint
ALTER TABLE "payment_intents" ADD COLUMN "order_version" integer DEFAULT 0 NOT NULL;--> statement-breakpoint
UPDATE "payment_intents" SET "order_status" = CASE "status" WHEN 'paid' THEN 'PAID' WHEN 'closed' THEN 'CANCELLED' ELSE 'CREATED' END,
  "payment_status" = CASE "status" WHEN 'paid' THEN 'captured' WHEN 'closed' THEN 'voided' ELSE 'pending' END;--> statement-breakpoint
ALTER TABLE "payment_intents" DROP COLUMN "status";
