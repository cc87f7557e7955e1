CREATE TABLE "order_catalogue" (
	"tenant_id" text NOT NULL,
	"sku" text NOT NULL,
	"name" text NOT NULL,
	"price" bigint NOT NULL,
	"updated_at" timestamp with time zone NOT NULL,
	CONSTRAINT "order_catalogue_tenant_id_sku_pk" PRIMARY KEY("tenant_id","sku")
);
