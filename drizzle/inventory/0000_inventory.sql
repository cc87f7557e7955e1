CREATE TABLE "products" (
	"tenant_id" text NOT NULL,
	"sku" text NOT NULL,
	"name" text NOT NULL,
	"price" bigint NOT NULL,
	"currency" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "products_tenant_id_sku_pk" PRIMARY KEY("tenant_id","sku")
);
--> statement-breakpoint
CREATE TABLE "stock_adjustments" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"tenant_id" text NOT NULL,
	"sku" text NOT NULL,
	"delta" bigint NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "stock_levels" (
	"tenant_id" text NOT NULL,
	"sku" text NOT NULL,
	"initial" bigint NOT NULL,
	"adjusted" bigint DEFAULT 0 NOT NULL,
	"available" bigint NOT NULL,
	"reserved" bigint DEFAULT 0 NOT NULL,
	"sold" bigint DEFAULT 0 NOT NULL,
	CONSTRAINT "stock_levels_tenant_id_sku_pk" PRIMARY KEY("tenant_id","sku"),
	CONSTRAINT "stock_available_not_negative" CHECK ("stock_levels"."available" >= 0),
	CONSTRAINT "stock_reserved_not_negative" CHECK ("stock_levels"."reserved" >= 0),
	CONSTRAINT "stock_sold_not_negative" CHECK ("stock_levels"."sold" >= 0)
);
--> statement-breakpoint
CREATE TABLE "stock_reservations" (
	"tenant_id" text NOT NULL,
	"order_id" text NOT NULL,
	"sku" text NOT NULL,
	"quantity" bigint NOT NULL,
	"status" text NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "stock_reservations_tenant_id_order_id_sku_pk" PRIMARY KEY("tenant_id","order_id","sku")
);
--> statement-breakpoint
CREATE INDEX "products_newest" ON "products" USING btree ("tenant_id","created_at" DESC NULLS LAST,"sku" DESC NULLS LAST);