CREATE TABLE "reconciliation_runs" (
	"id" text PRIMARY KEY NOT NULL,
	"scope" text NOT NULL,
	"checks" jsonb NOT NULL,
	"started_at" timestamp with time zone NOT NULL,
	"finished_at" timestamp with time zone NOT NULL,
	"findings" jsonb NOT NULL
);
--> statement-breakpoint
CREATE INDEX "reconciliation_runs_latest" ON "reconciliation_runs" USING btree ("scope","started_at" DESC NULLS LAST);