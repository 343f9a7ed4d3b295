-- Deliveries go through four channels now. The queue knows each row's channel (so rows of a channel whose
-- circuit breaker is open are left waiting) and, for Telegram, its chat (so rows of a chat at its rate limit
-- are left waiting), without loading the notification.
ALTER TABLE delivery_queue
    ADD COLUMN channel text NOT NULL DEFAULT 'telegram',
    ADD COLUMN chat_id bigint;
UPDATE delivery_queue q
   SET chat_id = (e.payload::jsonb->'NotificationPlanned'->'channel'->>'chat_id')::bigint
  FROM events e
 WHERE e.aggregate_type = 'Notification' AND e.aggregate_id = q.notification_id::text
   AND e.event_type = 'NotificationPlanned';

-- The push contacts a provider said are gone are found by their token or endpoint.
CREATE INDEX contacts_by_address ON contacts USING gin (address jsonb_path_ops) WHERE NOT removed;

-- A subscriber may have a run's verdict edit its "started" Telegram message instead of sending a second one.
ALTER TABLE subscribers ADD COLUMN edit_in_place boolean NOT NULL DEFAULT false;
