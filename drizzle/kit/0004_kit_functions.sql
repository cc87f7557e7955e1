-- The kit's SQL functions, called by its TypeScript front door and by the placement composed from
-- the modules' steps (src/flows/composed.ts), so each statement exists once.
CREATE OR REPLACE FUNCTION outbox_enqueue(p_id text, p_tenant text, p_topic text, p_payload jsonb, p_consumer text, p_redrive_of text, p_at timestamptz)
RETURNS void LANGUAGE sql AS $$
  INSERT INTO outbox_messages (id, tenant_id, topic, payload, consumer, redrive_of, status, next_attempt_at, created_at)
  VALUES (p_id, p_tenant, p_topic, p_payload, p_consumer, p_redrive_of, 'pending', p_at, p_at)
$$;
