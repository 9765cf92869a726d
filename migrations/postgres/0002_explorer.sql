-- provenix explorer (PostgreSQL): a derived index of the log's entries, written only by the indexer task
-- (server/src/explorer/index.rs) and rebuilt from the entries table if lost. Its progress is the
-- meta row `explorer_indexed`. Append-only history: never edit a migration, add a new one.

-- One row per (lookup key, entry): what that entry claims for that key. Values are as the
-- builder claimed them (the log verified the signature at submission, nothing more).
CREATE TABLE explorer_claims (
    key           TEXT NOT NULL,     -- store-path hash part, or realisation id
    idx           BIGINT NOT NULL,  -- leaf index
    output_path   TEXT NOT NULL,
    nar_hash      BYTEA NOT NULL,     -- 32 bytes
    builder       TEXT NOT NULL,     -- DSSE keyid
    built_locally BIGINT,           -- 1, 0, or NULL when not stated
    derivation    TEXT,              -- .drv path as claimed
    drv_hash      TEXT,              -- its hash part (searchable)
    attestation   BIGINT NOT NULL,  -- 0 no quote, 1 tpm2-quote present, 2 malformed quote
    logged_at     BIGINT NOT NULL,  -- created_at of the first checkpoint covering idx
    PRIMARY KEY (key, idx)
);
CREATE INDEX explorer_claims_builder ON explorer_claims (builder, idx);
CREATE INDEX explorer_claims_drv ON explorer_claims (drv_hash) WHERE drv_hash IS NOT NULL;

-- Per-builder counts. outputs: distinct (key, output path, NAR hash) the builder claimed;
-- matched: those of them at least one other builder claimed identically.
CREATE TABLE explorer_builders (
    builder   TEXT PRIMARY KEY,
    entries   BIGINT NOT NULL,
    outputs   BIGINT NOT NULL,
    matched   BIGINT NOT NULL,
    attested  BIGINT NOT NULL,  -- entries carrying a tpm2-quote byproduct
    first_idx BIGINT NOT NULL,
    last_idx  BIGINT NOT NULL,
    last_at   BIGINT NOT NULL
);

-- Keys whose claims disagree (more than one distinct output path / NAR hash), with the entry
-- and time at which the disagreement appeared.
CREATE TABLE explorer_conflicts (
    key       TEXT PRIMARY KEY,
    idx       BIGINT NOT NULL,
    logged_at BIGINT NOT NULL
);
CREATE INDEX explorer_conflicts_idx ON explorer_conflicts (idx, key);

-- The ingest chart reads checkpoints by time.
CREATE INDEX checkpoints_created_at ON checkpoints (created_at);
