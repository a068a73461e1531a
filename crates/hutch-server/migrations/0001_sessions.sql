-- Sessions: one row per sandbox the control plane is responsible for.
--
-- Times are unix milliseconds. `metadata`, `resources` and `env` are JSON text.
-- `runtime_record` is the JSON of hutch_sandbox::SandboxRecord, NULL while the sandbox is
-- being created.
CREATE TABLE sessions (
    id             TEXT    PRIMARY KEY NOT NULL,
    tenant         TEXT    NOT NULL,
    status         TEXT    NOT NULL,
    image          TEXT    NOT NULL,
    metadata       TEXT    NOT NULL,
    resources      TEXT    NOT NULL,
    env            TEXT    NOT NULL,
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    runtime_record TEXT
) STRICT;

CREATE INDEX sessions_expires_at ON sessions (expires_at);
CREATE INDEX sessions_tenant_created ON sessions (tenant, created_at, id);
