-- provenix log schema, PostgreSQL. Append-only history: never edit a migration, add a new one.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE entries (
    idx       BIGINT PRIMARY KEY,
    leaf_hash BYTEA NOT NULL,
    data      BYTEA NOT NULL
);

CREATE TABLE entry_keys (
    key TEXT NOT NULL,
    idx BIGINT NOT NULL,
    PRIMARY KEY (key, idx)
);

CREATE TABLE checkpoints (
    size       BIGINT PRIMARY KEY,
    note       TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE builders (
    name     TEXT PRIMARY KEY,
    key      TEXT NOT NULL,
    added_at BIGINT NOT NULL
);
