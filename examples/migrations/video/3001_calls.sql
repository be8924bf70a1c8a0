-- The video service's call history: who created which call, when, and when it ended.
-- The live state of a call (its participants) is in Redis; this outlives it.
-- Portable SQL: the same file runs on SQLite and PostgreSQL.
CREATE TABLE IF NOT EXISTS video_calls (
    id TEXT PRIMARY KEY,
    creator TEXT NOT NULL,
    -- Unix milliseconds.
    created BIGINT NOT NULL,
    -- Unix milliseconds; NULL while the call is open.
    ended BIGINT
);

CREATE INDEX IF NOT EXISTS video_calls_creator ON video_calls (creator, created);
