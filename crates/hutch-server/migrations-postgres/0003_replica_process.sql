-- The runtime process of each replica (SQLite's `migrations/0006_replica_process.sql`): the
-- linux runtime's id on the data directory, written with its heartbeat, so that a replica on
-- the same host whose process is gone is known dead at once, before its lease lapses.
ALTER TABLE replicas ADD COLUMN process TEXT;
