-- The PostgreSQL schema: the same tables and columns as the SQLite migrations in
-- `migrations/` (0001 to 0004), so that every statement of the store reads and writes both.
--
-- Times are unix milliseconds (BIGINT). Ids and JSON values are TEXT, as in SQLite: the store
-- binds and decodes the same Rust types on both.
CREATE TABLE sessions (
    id             TEXT   PRIMARY KEY NOT NULL,
    tenant         TEXT   NOT NULL,
    status         TEXT   NOT NULL,
    image          TEXT   NOT NULL,
    metadata       TEXT   NOT NULL,
    resources      TEXT   NOT NULL,
    env            TEXT   NOT NULL,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    runtime_record TEXT,
    network        TEXT,
    paused_at      BIGINT,
    pause_cause    TEXT,
    auto_pause     TEXT
);

CREATE INDEX sessions_expires_at ON sessions (expires_at);
CREATE INDEX sessions_tenant_created ON sessions (tenant, created_at, id);

CREATE TABLE storage_contexts (
    id         TEXT   PRIMARY KEY NOT NULL,
    tenant     TEXT   NOT NULL,
    name       TEXT   NOT NULL,
    version    BIGINT NOT NULL,
    size_bytes BIGINT NOT NULL,
    blob       TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (tenant, name)
);

CREATE INDEX storage_contexts_tenant_created ON storage_contexts (tenant, created_at, id);

CREATE TABLE session_context_syncs (
    session_id TEXT   NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    position   BIGINT NOT NULL,
    context_id TEXT   NOT NULL,
    path       TEXT   NOT NULL,
    policy     TEXT   NOT NULL,
    PRIMARY KEY (session_id, position)
);

CREATE TABLE context_tasks (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id    TEXT   NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    context_id    TEXT   NOT NULL,
    path          TEXT   NOT NULL,
    task_type     TEXT   NOT NULL,
    status        TEXT   NOT NULL,
    version       BIGINT NOT NULL,
    start_time    BIGINT NOT NULL,
    finish_time   BIGINT NOT NULL,
    error_message TEXT   NOT NULL
);

CREATE INDEX context_tasks_session ON context_tasks (session_id, id);
