-- The effective network policy of a session: JSON text of hutch_api::NetworkPolicy, written
-- on create and on each policy change. NULL on rows of servers that kept no policy, read as
-- `egress: none`.
ALTER TABLE sessions ADD COLUMN network TEXT;
