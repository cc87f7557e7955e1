-- Saga progress per step (parallel steps, compensation in reverse dependency order) replaces the one
-- step index. Orderly had no deployment when this changed, so running sagas are not converted.
ALTER TABLE "sagas" ADD COLUMN "steps" jsonb DEFAULT '{}'::jsonb NOT NULL;--> statement-breakpoint
ALTER TABLE "sagas" ALTER COLUMN "steps" DROP DEFAULT;--> statement-breakpoint
ALTER TABLE "sagas" DROP COLUMN "results";--> statement-breakpoint
ALTER TABLE "sagas" DROP COLUMN "done";--> statement-breakpoint
ALTER TABLE "sagas" DROP COLUMN "step_index";--> statement-breakpoint
ALTER TABLE "sagas" DROP COLUMN "op";--> statement-breakpoint
ALTER TABLE "sagas" DROP COLUMN "attempts";--> statement-breakpoint
ALTER TABLE "sagas" DROP COLUMN "dead_lettered";
