-- What ferry last wrote per key, as a digest of the mapped payload (the WrittenDigests port): a two-way sync's
-- own write coming back maps to the same payload and is dropped as an echo, not written again.
CREATE TABLE written_digests (
    pipeline text NOT NULL,
    object text NOT NULL,
    key text COLLATE "C" NOT NULL,
    digest text NOT NULL,
    PRIMARY KEY (pipeline, object, key)
);
