-- ferry's state on PostgreSQL, first schema. The tables mirror the SQLite adapter's (docs/store.md), plus what
-- many workers sharing one database need: leases (owner, lease_until, fence) on the rows workers claim, and one
-- ledger row per (pipeline, system) that a take locks. Keys and versions compare byte-wise (COLLATE "C"), as
-- they do on SQLite: "latest wins" and key-ordered pages must not depend on the server's locale.

CREATE TABLE runs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pipeline text NOT NULL,
    started_at text NOT NULL,
    finished_at text,
    status text NOT NULL,
    stats text,
    error text,
    progress_at text,
    pid integer,
    host text,
    origin text NOT NULL DEFAULT 'manual'  -- manual | schedule | webhook | replay
);
CREATE INDEX runs_by_pipeline ON runs (pipeline, id);

CREATE TABLE read_states (
    pipeline text NOT NULL,
    stream text NOT NULL,
    state text NOT NULL,
    updated_at text NOT NULL,
    PRIMARY KEY (pipeline, stream)
);

-- Raw source records. planned_at/owner/lease_until/fence: a chunk claimed by one planner among many
-- (claim_staged); the single-planner path keeps the mark in ``marks`` as on SQLite.
CREATE TABLE staging (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pipeline text NOT NULL,
    stream text NOT NULL,
    key text COLLATE "C" NOT NULL,
    version text COLLATE "C" NOT NULL,
    payload bytea NOT NULL,
    run_id bigint NOT NULL,
    planned_at timestamptz,
    owner text,
    lease_until timestamptz,
    fence bigint NOT NULL DEFAULT 0,
    UNIQUE (pipeline, stream, key, version)
);
CREATE INDEX staging_by_seq ON staging (pipeline, seq);
-- Raw pages are large (a Shopify order is ~12 KB of JSON) and live for one run: stored as they are, not
-- compressed (pglz cost 45 ms of server CPU per 250-order page, half the server's time in a 10,000-order run).
ALTER TABLE staging ALTER COLUMN payload SET STORAGE EXTERNAL;

CREATE TABLE outbox (
    pipeline text NOT NULL,
    object text NOT NULL,
    key text COLLATE "C" NOT NULL,
    version text COLLATE "C" NOT NULL,
    payload bytea NOT NULL,
    source_payload bytea,
    source_seq bigint,
    attempts integer NOT NULL DEFAULT 0,
    history text,
    stream text,
    source_key text,
    owner text,
    lease_until timestamptz,
    fence bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (pipeline, object, key)
);
CREATE INDEX outbox_by_source ON outbox (pipeline, source_seq) WHERE source_seq IS NOT NULL;

CREATE TABLE versions (
    pipeline text NOT NULL,
    object text NOT NULL,
    key text COLLATE "C" NOT NULL,
    version text COLLATE "C" NOT NULL,
    target_id text,
    updated_at text NOT NULL,
    PRIMARY KEY (pipeline, object, key)
);

CREATE TABLE dlq (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pipeline text NOT NULL,
    run_id bigint,
    object text NOT NULL,
    record_key text COLLATE "C" NOT NULL,
    version text COLLATE "C",
    error_code text NOT NULL,
    message text NOT NULL,
    fields text NOT NULL,
    errors text NOT NULL,
    source_payload bytea,
    mapped_payload bytea,
    attempts integer NOT NULL DEFAULT 1,
    first_seen text NOT NULL,
    last_seen text NOT NULL,
    status text NOT NULL DEFAULT 'open',
    stream text,
    source_key text,
    history text,
    resolved_at text,
    resolution text,
    UNIQUE (pipeline, object, record_key)
);
CREATE INDEX dlq_open ON dlq (pipeline, status, object);

CREATE TABLE marks (
    pipeline text NOT NULL,
    name text NOT NULL,
    value bigint NOT NULL,
    PRIMARY KEY (pipeline, name)
);

-- Remote jobs: owner/lease_until/fence let a worker resume a job whose worker died, and only one worker.
CREATE TABLE bulk_jobs (
    pipeline text NOT NULL,
    object text NOT NULL,
    job_id text NOT NULL,
    created_at text NOT NULL,
    owner text,
    lease_until timestamptz,
    fence bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (pipeline, object, job_id)
);
CREATE TABLE bulk_job_records (
    pipeline text NOT NULL,
    object text NOT NULL,
    job_id text NOT NULL,
    key text COLLATE "C" NOT NULL,
    version text COLLATE "C" NOT NULL,
    ext text NOT NULL,
    position bigint GENERATED ALWAYS AS IDENTITY,  -- journal order (SQLite's rowid)
    PRIMARY KEY (pipeline, object, job_id, key)
);
CREATE INDEX bulk_job_records_by_ext ON bulk_job_records (pipeline, object, job_id, ext);

-- The API call ledger: per-minute buckets, and one row per (pipeline, system) that every take locks first, so
-- that the sum a take reads includes every take committed before it (docs/store.md, "The ledger's take").
CREATE TABLE api_ledgers (
    pipeline text NOT NULL,
    system text NOT NULL,
    PRIMARY KEY (pipeline, system)
);
CREATE TABLE api_calls (
    pipeline text NOT NULL,
    system text NOT NULL,
    minute integer NOT NULL,
    calls integer NOT NULL,
    PRIMARY KEY (pipeline, system, minute)
);
CREATE TABLE api_allocations (
    pipeline text NOT NULL,
    system text NOT NULL,
    daily_max integer NOT NULL,
    seen_at text NOT NULL,
    PRIMARY KEY (pipeline, system)
);
