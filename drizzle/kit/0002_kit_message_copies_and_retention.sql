ALTER TABLE "dead_letters" ADD COLUMN "topic" text;--> statement-breakpoint
ALTER TABLE "dead_letters" ADD COLUMN "payload" jsonb;--> statement-breakpoint
ALTER TABLE "outbox_messages" ADD COLUMN "consumer" text;--> statement-breakpoint
ALTER TABLE "outbox_messages" ADD COLUMN "redrive_of" text;--> statement-breakpoint
ALTER TABLE "outbox_messages" ADD COLUMN "traceparent" text;--> statement-breakpoint
CREATE INDEX "dead_letters_closed" ON "dead_letters" USING btree ("updated_at") WHERE "dead_letters"."status" <> 'open';--> statement-breakpoint
CREATE INDEX "inbox_age" ON "inbox_messages" USING btree ("processed_at");--> statement-breakpoint
CREATE INDEX "outbox_published" ON "outbox_messages" USING btree ("published_at") WHERE "outbox_messages"."status" = 'published';--> statement-breakpoint
CREATE INDEX "saga_barriers_age" ON "saga_barriers" USING btree ("created_at");--> statement-breakpoint
CREATE INDEX "sagas_finished" ON "sagas" USING btree ("updated_at") WHERE "sagas"."status" in ('completed', 'compensated');