-- Storage contexts: named persistent storage of a tenant, synchronised into sessions.
--
-- Times are unix milliseconds. `blob` names the content of the current version in the blob
-- store (NULL while the context is empty, at version 0); it changes in the same statement
-- that bumps `version`, so a reader sees one whole version or the other.
CREATE TABLE storage_contexts (
    id         TEXT    PRIMARY KEY NOT NULL,
    tenant     TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    size_bytes INTEGER NOT NULL,
    blob       TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (tenant, name)
) STRICT;

CREATE INDEX storage_contexts_tenant_created ON storage_contexts (tenant, created_at, id);

-- The contexts a session binds to paths (`contextSyncs` on create). `policy` is JSON text.
CREATE TABLE session_context_syncs (
    session_id TEXT    NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    position   INTEGER NOT NULL,
    context_id TEXT    NOT NULL,
    path       TEXT    NOT NULL,
    policy     TEXT    NOT NULL,
    PRIMARY KEY (session_id, position)
) STRICT;

-- Transfers between a session and a context: the task log of `context/info`. A task of a
-- server that stopped while it ran is marked Failed at the next start.
CREATE TABLE context_tasks (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id    TEXT    NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    context_id    TEXT    NOT NULL,
    path          TEXT    NOT NULL,
    task_type     TEXT    NOT NULL,
    status        TEXT    NOT NULL,
    version       INTEGER NOT NULL,
    start_time    INTEGER NOT NULL,
    finish_time   INTEGER NOT NULL,
    error_message TEXT    NOT NULL
) STRICT;

CREATE INDEX context_tasks_session ON context_tasks (session_id, id);
