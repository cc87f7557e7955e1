-- The two-phase-commit coordinator's decision log (src/flows/two-phase-placement.ts): a row per placement decided, committed before any of its prepared transactions is finished.
CREATE TABLE "placement_decisions" (
	"order_id" text PRIMARY KEY NOT NULL,
	"tenant_id" text,
	"decision" text NOT NULL,
	"participants" text[] DEFAULT '{}' NOT NULL,
	"decided_at" timestamp with time zone DEFAULT now() NOT NULL,
	"completed_at" timestamp with time zone
);
--> statement-breakpoint
CREATE INDEX "placement_decisions_open" ON "placement_decisions" USING btree ("decided_at") WHERE completed_at is null;