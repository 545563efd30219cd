-- The buckets of internal/store: one row per key, bucket and key as the
-- interface names them, the value as stored (JSON for the stores that
-- exist so far, but the store does not care).
--
-- A key is 1 to 4096 bytes, more than a btree index entry holds (about 2700
-- bytes), so rows are identified by the key's SHA-256 and ordered by its
-- first 1024 bytes, then the whole key: bytea compares bytewise (memcmp,
-- shorter first on a tie), which is bbolt's order, and ordering by a
-- prefix of the key and then the key is ordering by the key.
CREATE TABLE kv (
	bucket   text  NOT NULL CHECK (bucket <> ''),
	key      bytea NOT NULL CHECK (octet_length(key) BETWEEN 1 AND 4096),
	value    bytea NOT NULL,
	key_hash bytea NOT NULL GENERATED ALWAYS AS (sha256(key)) STORED,
	key_head bytea NOT NULL GENERATED ALWAYS AS (substring(key FROM 1 FOR 1024)) STORED,
	PRIMARY KEY (bucket, key_hash)
);
CREATE INDEX kv_order ON kv (bucket, key_head);

COMMENT ON TABLE kv IS 'bastiond''s state (internal/store): buckets of byte-ordered keys; write only through bastiond';

-- For DBAs, read-only: kv with keys as text (hex, \x..., when not UTF-8)
-- and values as JSON (NULL when not JSON), e.g.
--   SELECT key, value->>'roles' FROM kv_json WHERE bucket = 'users';
CREATE FUNCTION kv_text(b bytea) RETURNS text LANGUAGE plpgsql IMMUTABLE STRICT AS $$
BEGIN
	RETURN convert_from(b, 'UTF8');
EXCEPTION WHEN others THEN
	RETURN '\x' || encode(b, 'hex');
END $$;
CREATE FUNCTION kv_jsonb(b bytea) RETURNS jsonb LANGUAGE plpgsql IMMUTABLE STRICT AS $$
BEGIN
	RETURN convert_from(b, 'UTF8')::jsonb;
EXCEPTION WHEN others THEN
	RETURN NULL;
END $$;
CREATE VIEW kv_json AS SELECT bucket, kv_text(key) AS key, kv_jsonb(value) AS value FROM kv;
COMMENT ON VIEW kv_json IS 'bastiond''s state, keys as text and values as JSON, for reading';
