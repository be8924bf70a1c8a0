-- The auth service's tables: accounts, conversations and their members.
-- Portable SQL: the same file runs on SQLite and PostgreSQL.
CREATE TABLE IF NOT EXISTS auth_users (
    id TEXT PRIMARY KEY,
    -- Lower-cased and trimmed.
    email TEXT NOT NULL UNIQUE,
    -- Argon2id, PHC string format.
    password_hash TEXT NOT NULL,
    -- Unix seconds.
    created BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS auth_conversations (
    id TEXT PRIMARY KEY,
    created_by TEXT NOT NULL,
    created BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS auth_conversation_members (
    conversation_id TEXT NOT NULL REFERENCES auth_conversations (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL,
    PRIMARY KEY (conversation_id, user_id)
);
