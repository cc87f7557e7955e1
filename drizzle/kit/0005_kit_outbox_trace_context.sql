-- Trace context across services: an outbox row keeps the W3C traceparent of the work that wrote it,
-- read from the transaction's setting orderly.traceparent (set with the tenant, one statement, by
-- whoever opened the transaction while a span was active). Every writer of the outbox, TypeScript or
-- SQL (orders_record, orders_settle), goes through this function, so none of them needs to pass it.
CREATE OR REPLACE FUNCTION outbox_enqueue(p_id text, p_tenant text, p_topic text, p_payload jsonb, p_consumer text, p_redrive_of text, p_at timestamptz)
RETURNS void LANGUAGE sql AS $$
  INSERT INTO outbox_messages (id, tenant_id, topic, payload, consumer, redrive_of, status, next_attempt_at, created_at, traceparent)
  VALUES (p_id, p_tenant, p_topic, p_payload, p_consumer, p_redrive_of, 'pending', p_at, p_at, nullif(current_setting('orderly.traceparent', true), ''))
$$;
