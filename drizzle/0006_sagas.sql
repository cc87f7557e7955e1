CREATE TABLE "sagas" (
	"id" text PRIMARY KEY NOT NULL,
	"tenant_id" text NOT NULL,
	"type" text NOT NULL,
	"status" text NOT NULL,
	"context" jsonb NOT NULL,
	"results" jsonb NOT NULL,
	"done" jsonb NOT NULL,
	"step_index" integer NOT NULL,
	"op" text NOT NULL,
	"attempts" integer DEFAULT 0 NOT NULL,
	"next_attempt_at" timestamp with time zone NOT NULL,
	"abort_reason" text,
	"dead_lettered" boolean DEFAULT false NOT NULL,
	"created_at" timestamp with time zone NOT NULL,
	"updated_at" timestamp with time zone NOT NULL
);
--> statement-breakpoint
CREATE INDEX "sagas_due" ON "sagas" USING btree ("next_attempt_at") WHERE "sagas"."status" in ('running', 'compensating');