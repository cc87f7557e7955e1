CREATE TABLE "payments" (
	"tenant_id" text NOT NULL,
	"order_id" text NOT NULL,
	"external_txn_id" text NOT NULL,
	"amount" bigint NOT NULL,
	"currency" text NOT NULL,
	"status" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "payments_tenant_id_order_id_external_txn_id_pk" PRIMARY KEY("tenant_id","order_id","external_txn_id")
);
--> statement-breakpoint
CREATE TABLE "wallet_entries" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"tenant_id" text NOT NULL,
	"user_id" text NOT NULL,
	"kind" text NOT NULL,
	"amount" bigint NOT NULL,
	"order_id" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "wallets" (
	"tenant_id" text NOT NULL,
	"user_id" text NOT NULL,
	"balance" bigint NOT NULL,
	"currency" text NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "wallets_tenant_id_user_id_pk" PRIMARY KEY("tenant_id","user_id"),
	CONSTRAINT "wallet_balance_not_negative" CHECK ("wallets"."balance" >= 0)
);
--> statement-breakpoint
CREATE UNIQUE INDEX "payments_one_capture_per_order" ON "payments" USING btree ("tenant_id","order_id") WHERE "payments"."status" = 'captured';--> statement-breakpoint
CREATE UNIQUE INDEX "wallet_entries_once_per_order" ON "wallet_entries" USING btree ("tenant_id","order_id","kind") WHERE "wallet_entries"."order_id" is not null;