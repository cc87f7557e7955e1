CREATE TABLE "payment_intents" (
	"tenant_id" text NOT NULL,
	"order_id" text NOT NULL,
	"amount" bigint NOT NULL,
	"currency" text NOT NULL,
	"status" text NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "payment_intents_tenant_id_order_id_pk" PRIMARY KEY("tenant_id","order_id")
);
