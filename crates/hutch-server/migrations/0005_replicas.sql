-- Several servers on one store (used on PostgreSQL; on SQLite, one server, these stay empty).
-- `owner` is the replica that created or last took over a session (NULL: rows from before, or
-- a server without a replica identity). `claimed_until` (unix ms) is how long the destroy of a
-- DELETING row belongs to whoever marked it; after that any replica may take it again.
ALTER TABLE sessions ADD COLUMN owner TEXT;
ALTER TABLE sessions ADD COLUMN claimed_until INTEGER;

-- One row per replica: refreshed every few seconds; a replica whose heartbeat is older than
-- the lease counts as dead.
CREATE TABLE replicas (
    id           TEXT    PRIMARY KEY NOT NULL,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL
);
