-- Pausing: when a PAUSED session was paused (unix ms) and why (`request`: by
-- `POST /v1/sessions/{id}/pause`, which only a resume undoes; `idle`: by auto-pause, which any
-- request undoes); both NULL unless PAUSED. `auto_pause` is the JSON text of
-- hutch_api::AutoPause, NULL for sessions that never pause themselves.
ALTER TABLE sessions ADD COLUMN paused_at INTEGER;
ALTER TABLE sessions ADD COLUMN pause_cause TEXT;
ALTER TABLE sessions ADD COLUMN auto_pause TEXT;
