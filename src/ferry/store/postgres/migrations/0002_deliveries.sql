-- Inbound deliveries (webhooks) already made durable by `ferry serve`, by the key its receiver derives from the
-- sender's delivery id: a retry or duplicate of one is acknowledged and dropped (the Deliveries port). The primary
-- key decides between two workers taking the same delivery at once: one insert wins, the other stores nothing.
CREATE TABLE deliveries (
    pipeline text NOT NULL,
    delivery_key text COLLATE "C" NOT NULL,
    received_at text NOT NULL,
    PRIMARY KEY (pipeline, delivery_key)
);
CREATE INDEX deliveries_by_time ON deliveries (received_at);
