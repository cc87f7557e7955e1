CREATE TABLE "shipments" (
	"tenant_id" text NOT NULL,
	"order_id" text NOT NULL,
	"waybill" text NOT NULL,
	"carrier" text,
	"tracking_number" text,
	"status" text NOT NULL,
	"address" jsonb NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "shipments_tenant_id_order_id_pk" PRIMARY KEY("tenant_id","order_id")
);
--> statement-breakpoint
CREATE UNIQUE INDEX "shipments_waybill" ON "shipments" USING btree ("waybill");