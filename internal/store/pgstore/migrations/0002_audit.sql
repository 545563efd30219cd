-- A copy of every instance's audit trail, for reading the cluster's events
-- in one place (`bastionctl audit events`). Each instance's chained file
-- (logging.audit_file) stays the source of truth, with one writer; each
-- instance copies its lines here as it writes them (daemon/auditship,
-- destination "database"), at least once: a line sent again after an
-- outage is the same line, with the same SHA-256, and the primary key
-- keeps it once. Rows older than store.postgres.audit_keep are deleted by
-- the instances (a periodic, idempotent DELETE).
--
-- hash is the line's SHA-256, the "prev" of the line after it in its file,
-- so a row can be checked against the file, and line is the line exactly
-- as written (text, not jsonb, which would reorder its keys and lose the
-- bytes the hash covers): sha256(convert_to(line, 'UTF8')) = hash.
-- The other columns are taken from the line, for the queries' filters.
-- id orders the rows of one writer as its file does (a writer inserts its
-- lines in order; duplicates are not inserted).
CREATE TABLE audit_events (
	hash       bytea       PRIMARY KEY CHECK (octet_length(hash) = 32),
	id         bigint      GENERATED ALWAYS AS IDENTITY,
	written_by text        NOT NULL, -- the instance whose file holds the line
	instance   text        NOT NULL, -- the line's instance: the one a session ran on, or written_by
	at         timestamptz NOT NULL, -- the line's time
	event      text        NOT NULL,
	actor      text        NOT NULL,
	user_name  text        NOT NULL, -- the line's user, '' when it has none
	line       text        NOT NULL
);
CREATE INDEX audit_events_at ON audit_events (at, id);
CREATE INDEX audit_events_user ON audit_events (user_name, at) WHERE user_name <> '';
-- An instance starting finds the last line it copied, to copy what its
-- file gained since (lines still queued when it stopped).
CREATE INDEX audit_events_writer ON audit_events (written_by, id);

COMMENT ON TABLE audit_events IS 'a copy of every bastiond instance''s audit trail (the files are the source of truth); written only by bastiond';
COMMENT ON COLUMN audit_events.hash IS 'SHA-256 of line: the prev field of the next line of its file';
COMMENT ON COLUMN audit_events.line IS 'the audit line as written, JSON (docs/audit.md); line::jsonb to query its fields';

-- For DBAs, read-only: the lines as JSON, e.g.
--   SELECT at, instance, doc->>'target' FROM audit_events_json
--    WHERE event = 'session_start' AND at > now() - interval '1 day';
CREATE VIEW audit_events_json AS
	SELECT at, written_by, instance, event, actor, user_name, encode(hash, 'hex') AS hash, line::jsonb AS doc FROM audit_events;
COMMENT ON VIEW audit_events_json IS 'bastiond''s audit copy, each line as JSON, for reading';
