-- The run that last saved each stream's read state: a save by an earlier run is refused (the store's ``stage``
-- raises ReadSuperseded and stages nothing). A worker still reading a stream for a coordinator that was killed
-- cannot move the state a new run's prepare (Shopify's bulk operations) or reader saved since. Staging without a
-- run (webhook deliveries and change feeds: run 0) is never refused and leaves the column as it is.
ALTER TABLE read_states ADD COLUMN run_id bigint NOT NULL DEFAULT 0;
