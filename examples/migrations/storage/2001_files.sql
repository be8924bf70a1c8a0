-- The storage service's file records. The bytes live in STORAGE_DIR, named by id.
-- Portable SQL: the same file runs on SQLite and PostgreSQL.
CREATE TABLE IF NOT EXISTS storage_files (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    name TEXT NOT NULL,
    -- Declared while reserved or uploading, received once uploaded: what counts
    -- against the owner's quota.
    size BIGINT NOT NULL,
    content_type TEXT NOT NULL,
    -- reserved, uploading or uploaded.
    stage TEXT NOT NULL,
    -- When the reservation (the upload URL) ends, Unix seconds.
    expires BIGINT NOT NULL,
    -- While uploading: when the upload last showed life (claimed, or wrote bytes);
    -- a claim silent for 10 minutes was left by a process that stopped.
    claimed BIGINT NOT NULL DEFAULT 0,
    created BIGINT NOT NULL
);

CREATE INDEX IF NOT EXISTS storage_files_owner ON storage_files (owner);
CREATE INDEX IF NOT EXISTS storage_files_reserved ON storage_files (stage, expires);
