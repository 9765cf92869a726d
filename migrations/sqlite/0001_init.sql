-- provenix log schema, SQLite. Append-only history: never edit a migration, add a new one.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- One row per leaf. idx is the leaf index (contiguous from 0); data is the canonical leaf bytes.
CREATE TABLE entries (
    idx       INTEGER PRIMARY KEY,
    leaf_hash BLOB NOT NULL,
    data      BLOB NOT NULL
);

-- Lookup keys (store-path hash parts, realisation ids) of each entry.
CREATE TABLE entry_keys (
    key TEXT NOT NULL,
    idx INTEGER NOT NULL,
    PRIMARY KEY (key, idx)
) WITHOUT ROWID;

-- Every checkpoint the log signed, by size.
CREATE TABLE checkpoints (
    size       INTEGER PRIMARY KEY,
    note       TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

-- The builder allow-list.
CREATE TABLE builders (
    name     TEXT PRIMARY KEY,
    key      TEXT NOT NULL,
    added_at INTEGER NOT NULL
) WITHOUT ROWID;
