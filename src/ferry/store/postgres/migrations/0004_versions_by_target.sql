-- The id map read backwards (keys_for_targets): a two-way sync's direction finds the record the other wrote.
CREATE INDEX versions_by_target ON versions (pipeline, object, target_id);
