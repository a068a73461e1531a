-- The runtime process of each replica (the linux runtime's id on the data directory), written
-- with its heartbeat: a replica on the same host whose process is gone is known dead at once,
-- before its lease lapses. NULL when its runtime cannot tell.
ALTER TABLE replicas ADD COLUMN process TEXT;
