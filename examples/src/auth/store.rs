//! [`AuthStore`]: accounts and conversations in the database (tables `auth_*`, see
//! `examples/migrations/auth`).

use sqlx::migrate::Migrator;
use sqlx::{Acquire, Row};

use crate::db::{Db, DbError};

/// The auth service's migrations, embedded in the binary.
pub fn migrations() -> Migrator {
    sqlx::migrate!("migrations/auth")
}

/// Accounts and conversations.
#[derive(Clone, Debug)]
pub(super) struct AuthStore {
    db: Db,
}

/// Why a registration did not happen.
#[derive(Debug)]
pub(super) enum RegisterRefused {
    /// The email has an account already.
    Taken,
    /// The database failed.
    Db(DbError),
}

impl AuthStore {
    pub(super) fn new(db: Db) -> Self {
        Self { db }
    }

    /// Whether `email` has an account.
    pub(super) async fn email_taken(&self, email: &str) -> Result<bool, DbError> {
        let email = email.to_owned();
        self.db
            .run(|mut conn| async move {
                sqlx::query("SELECT id FROM auth_users WHERE email = $1")
                    .bind(email)
                    .fetch_optional(&mut *conn)
                    .await
                    .map(|row| row.is_some())
            })
            .await
    }

    /// Adds an account.
    pub(super) async fn register(
        &self,
        id: &str,
        email: &str,
        password_hash: &str,
        now: u64,
    ) -> Result<(), RegisterRefused> {
        let (id, email, hash) = (id.to_owned(), email.to_owned(), password_hash.to_owned());
        let result = self
            .db
            .run(|mut conn| async move {
                sqlx::query(
                    "INSERT INTO auth_users (id, email, password_hash, created) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(id)
                .bind(email)
                .bind(hash)
                .bind(seconds(now))
                .execute(&mut *conn)
                .await
            })
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(DbError::Duplicate) => Err(RegisterRefused::Taken),
            Err(e) => Err(RegisterRefused::Db(e)),
        }
    }

    /// The id and password hash of the account of `email`.
    pub(super) async fn account(&self, email: &str) -> Result<Option<(String, String)>, DbError> {
        let email = email.to_owned();
        self.db
            .run(|mut conn| async move {
                let row = sqlx::query("SELECT id, password_hash FROM auth_users WHERE email = $1")
                    .bind(email)
                    .fetch_optional(&mut *conn)
                    .await?;
                row.map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
                    .transpose()
            })
            .await
    }

    /// Creates conversation `id` with `members` (its creator among them), in one
    /// transaction.
    pub(super) async fn create_conversation(
        &self,
        id: &str,
        creator: &str,
        members: Vec<String>,
        now: u64,
    ) -> Result<(), DbError> {
        let (id, creator) = (id.to_owned(), creator.to_owned());
        self.db
            .run(|mut conn| async move {
                let mut tx = conn.begin().await?;
                sqlx::query(
                    "INSERT INTO auth_conversations (id, created_by, created) VALUES ($1, $2, $3)",
                )
                .bind(id.as_str())
                .bind(creator)
                .bind(seconds(now))
                .execute(&mut *tx)
                .await?;
                for member in members {
                    sqlx::query(
                        "INSERT INTO auth_conversation_members (conversation_id, user_id) \
                         VALUES ($1, $2)",
                    )
                    .bind(id.as_str())
                    .bind(member)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await
            })
            .await
    }

    /// The members of conversation `id`, sorted; empty if there is no such conversation
    /// (a conversation has its creator at least).
    pub(super) async fn members(&self, id: &str) -> Result<Vec<String>, DbError> {
        let id = id.to_owned();
        self.db
            .run(|mut conn| async move {
                sqlx::query(
                    "SELECT user_id FROM auth_conversation_members \
                     WHERE conversation_id = $1 ORDER BY user_id",
                )
                .bind(id)
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(|row| row.try_get(0))
                .collect()
            })
            .await
    }
}

/// Unix seconds as the database's BIGINT.
pub(crate) fn seconds(unix: u64) -> i64 {
    i64::try_from(unix).unwrap_or(i64::MAX)
}
