-- The rows under a lease, per object: a distributed run's coordinator counts them on every poll (five times a
-- second per object being loaded, ``outbox_leased``) to tell a round still in flight from one that is done.
-- Without this index each count read the whole outbox, every object's queued rows and their payloads (40 ms at
-- 100,000 queued rows, and 5-10x that at 100,000 orders): the server's CPU grew with the square of the run.
-- A row's lease is set by a claim and cleared by a release or a failed attempt; a written row is deleted, so the
-- index holds the rows in flight (plus, until vacuum, those just written), whatever the outbox's size.
CREATE INDEX outbox_leased ON outbox (pipeline, object, lease_until) WHERE lease_until IS NOT NULL;
