CREATE TABLE "coupon_redemptions" (
	"tenant_id" text NOT NULL,
	"order_id" text NOT NULL,
	"code" text NOT NULL,
	"user_id" text NOT NULL,
	"status" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "coupon_redemptions_tenant_id_order_id_pk" PRIMARY KEY("tenant_id","order_id")
);
--> statement-breakpoint
CREATE TABLE "coupons" (
	"tenant_id" text NOT NULL,
	"code" text NOT NULL,
	"discount_type" text NOT NULL,
	"discount_value" bigint NOT NULL,
	"user_id" text,
	"min_subtotal" bigint,
	"expires_at" timestamp with time zone,
	"max_redemptions" integer NOT NULL,
	"redemptions" integer DEFAULT 0 NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "coupons_tenant_id_code_pk" PRIMARY KEY("tenant_id","code"),
	CONSTRAINT "coupon_redemptions_within_limit" CHECK ("coupons"."redemptions" >= 0 and "coupons"."redemptions" <= "coupons"."max_redemptions")
);
