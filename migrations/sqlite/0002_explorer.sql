-- provenix explorer: a derived index of the log's entries, written only by the indexer task
-- (server/src/explorer/index.rs) and rebuilt from the entries table if lost. Its progress is the
-- meta row `explorer_indexed`. Append-only history: never edit a migration, add a new one.

-- One row per (lookup key, entry): what that entry claims for that key. Values are as the
-- builder claimed them (the log verified the signature at submission, nothing more).
CREATE TABLE explorer_claims (
    key           TEXT NOT NULL,     -- store-path hash part, or realisation id
    idx           INTEGER NOT NULL,  -- leaf index
    output_path   TEXT NOT NULL,
    nar_hash      BLOB NOT NULL,     -- 32 bytes
    builder       TEXT NOT NULL,     -- DSSE keyid
    built_locally INTEGER,           -- 1, 0, or NULL when not stated
    derivation    TEXT,              -- .drv path as claimed
    drv_hash      TEXT,              -- its hash part (searchable)
    attestation   INTEGER NOT NULL,  -- 0 no quote, 1 tpm2-quote present, 2 malformed quote
    logged_at     INTEGER NOT NULL,  -- created_at of the first checkpoint covering idx
    PRIMARY KEY (key, idx)
) WITHOUT ROWID;
CREATE INDEX explorer_claims_builder ON explorer_claims (builder, idx);
CREATE INDEX explorer_claims_drv ON explorer_claims (drv_hash) WHERE drv_hash IS NOT NULL;

-- Per-builder counts. outputs: distinct (key, output path, NAR hash) the builder claimed;
-- matched: those of them at least one other builder claimed identically.
CREATE TABLE explorer_builders (
    builder   TEXT PRIMARY KEY,
    entries   INTEGER NOT NULL,
    outputs   INTEGER NOT NULL,
    matched   INTEGER NOT NULL,
    attested  INTEGER NOT NULL,  -- entries carrying a tpm2-quote byproduct
    first_idx INTEGER NOT NULL,
    last_idx  INTEGER NOT NULL,
    last_at   INTEGER NOT NULL
) WITHOUT ROWID;

-- Keys whose claims disagree (more than one distinct output path / NAR hash), with the entry
-- and time at which the disagreement appeared.
CREATE TABLE explorer_conflicts (
    key       TEXT PRIMARY KEY,
    idx       INTEGER NOT NULL,
    logged_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX explorer_conflicts_idx ON explorer_conflicts (idx, key);

-- The ingest chart reads checkpoints by time.
CREATE INDEX checkpoints_created_at ON checkpoints (created_at);
