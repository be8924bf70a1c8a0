//! [`CallHistory`]: the video service's record of its calls in the database (table
//! `video_calls`, see `examples/migrations/video`): who created which call, when, and
//! when it ended. The live state of a call (its participants, its owner) is the call
//! store's, in Redis; this is what outlives it, for an operator or for billing.
//!
//! A call is recorded when it is created, before it is announced: a database that does
//! not answer gets the creation a 503 and the call is ended at once, so no call runs
//! unrecorded. Its end is recorded by a task that follows the hub's ended calls
//! ([`CallHub::ended_calls`]); an end that cannot be written (the database away) is
//! retried, and one the task fell too far behind to see is left open and logged.

use std::time::Duration;

use secureconnect_callstate::CallHub;
use sqlx::migrate::Migrator;
use sqlx::Row;
use tokio::sync::broadcast::error::RecvError;

use crate::db::{Db, DbError};

/// The video service's migrations, embedded in the binary.
pub fn migrations() -> Migrator {
    sqlx::migrate!("migrations/video")
}

/// How often an end that could not be written is tried again, and how many times.
const RETRY_PAUSE: Duration = Duration::from_secs(1);
const RETRIES: u32 = 60;

/// A call as the history has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallRecord {
    /// The call.
    pub id: String,
    /// Its creator (a user id).
    pub creator: String,
    /// When it was created, Unix milliseconds.
    pub created_ms: i64,
    /// When it ended, Unix milliseconds; `None` while it is open.
    pub ended_ms: Option<i64>,
}

/// The call history, in the service's database. Cheap to clone.
#[derive(Clone, Debug)]
pub struct CallHistory {
    db: Db,
}

impl CallHistory {
    /// The history kept in `db` (migrated with [`migrations`]).
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Records that `creator` created call `id` now.
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`] past the database deadline.
    pub async fn created(&self, id: &str, creator: &str) -> Result<(), DbError> {
        let (id, creator) = (id.to_owned(), creator.to_owned());
        self.db
            .run(|mut conn| async move {
                sqlx::query("INSERT INTO video_calls (id, creator, created) VALUES ($1, $2, $3)")
                    .bind(id)
                    .bind(creator)
                    .bind(now_ms())
                    .execute(&mut *conn)
                    .await
                    .map(drop)
            })
            .await
    }

    /// Records that call `id` ended now (if it was open).
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`] past the database deadline.
    pub async fn ended(&self, id: &str) -> Result<(), DbError> {
        let id = id.to_owned();
        self.db
            .run(|mut conn| async move {
                sqlx::query("UPDATE video_calls SET ended = $1 WHERE id = $2 AND ended IS NULL")
                    .bind(now_ms())
                    .bind(id)
                    .execute(&mut *conn)
                    .await
                    .map(drop)
            })
            .await
    }

    /// The record of call `id`.
    ///
    /// # Errors
    ///
    /// [`DbError::Unavailable`] past the database deadline.
    pub async fn get(&self, id: &str) -> Result<Option<CallRecord>, DbError> {
        let id = id.to_owned();
        self.db
            .run(|mut conn| async move {
                let row = sqlx::query(
                    "SELECT id, creator, created, ended FROM video_calls WHERE id = $1",
                )
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?;
                row.map(|row| {
                    Ok(CallRecord {
                        id: row.try_get(0)?,
                        creator: row.try_get(1)?,
                        created_ms: row.try_get(2)?,
                        ended_ms: row.try_get(3)?,
                    })
                })
                .transpose()
            })
            .await
    }

    /// Follows `hub`'s ended calls and records each end, in the background, for as
    /// long as the hub lives. Must be called inside a Tokio runtime.
    pub fn follow(&self, hub: &CallHub) {
        let mut ended = hub.ended_calls();
        let history = self.clone();
        tokio::spawn(async move {
            loop {
                match ended.recv().await {
                    Ok(call) => history.record_end(&call).await,
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(
                            missed,
                            "call history fell behind: these calls stay open in it"
                        );
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        });
    }

    /// Writes an end, retried while the database is away (for about a minute).
    async fn record_end(&self, call: &str) {
        for attempt in 1..=RETRIES {
            match self.ended(call).await {
                Ok(()) => return,
                Err(DbError::Unavailable(reason)) if attempt < RETRIES => {
                    tracing::debug!(call, reason, "recording a call's end: retrying");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(e) => {
                    tracing::warn!(call, error = ?e, "could not record a call's end");
                    return;
                }
            }
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
#[path = "history_tests.rs"]
mod tests;
