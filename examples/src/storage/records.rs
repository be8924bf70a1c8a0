//! [`Records`]: the storage service's file records and each owner's quota use, in the
//! database (table `storage_files`, see `examples/migrations/storage`).
//!
//! A file is *reserved* when its upload URL is issued: its declared size counts against
//! its owner's quota from then on. The check and the reservation are one statement (an
//! `INSERT … SELECT … WHERE` the sum fits), serialized per owner: SQLite runs one writer
//! at a time, PostgreSQL takes a transaction-scoped advisory lock on the owner, so
//! concurrent requests, from one instance or several, cannot all pass a quota that fits
//! only some. A reservation not used by its expiry no longer counts and is deleted by
//! the sweep. An upload *claims* the file (one at a time, and only while reserved); it
//! ends *uploaded*, with the size corrected to the bytes received, or goes back to
//! reserved if it failed. An upload under way refreshes its claim ([`Records::touch`]);
//! a process killed during an upload leaves a claim that nobody refreshes, and
//! [`Records::recover`] returns such files to reserved (at start and every minute), without
//! touching the uploads that other instances sharing the database have under way.

use sqlx::migrate::Migrator;
use sqlx::{Acquire, Executor, Row};

use crate::db::{Db, DbError};

/// The storage service's migrations, embedded in the binary.
pub fn migrations() -> Migrator {
    sqlx::migrate!("migrations/storage")
}

/// Where a file is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stage {
    /// An upload URL was issued; unused, the reservation ends at `expires` (Unix
    /// seconds).
    Reserved {
        /// When the reservation ends.
        expires: u64,
    },
    /// An upload is under way.
    Uploading,
    /// The bytes are stored.
    Uploaded,
}

/// A file's record.
#[derive(Clone, Debug)]
pub(super) struct FileMeta {
    pub(super) owner: String,
    pub(super) name: String,
    /// Declared while reserved or uploading, received once uploaded: what counts
    /// against the quota.
    pub(super) size: u64,
    pub(super) content_type: String,
    pub(super) stage: Stage,
}

/// Why an upload cannot start.
#[derive(Debug)]
pub(super) enum ClaimRefused {
    /// No such file (never reserved, deleted, or its reservation expired).
    NotFound,
    /// Another upload of the file is under way.
    InProgress,
    /// The file was uploaded already: upload URLs work once.
    AlreadyUploaded,
    /// The database failed.
    Db(DbError),
}

fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn uint(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// See the [module docs](self).
#[derive(Clone, Debug)]
pub(super) struct Records {
    db: Db,
}

impl Records {
    pub(super) fn new(db: Db) -> Self {
        Self { db }
    }

    /// Returns to reserved (until their reservation ends) the files whose upload has
    /// shown no life since `before`: the process uploading them stopped. How many.
    pub(super) async fn recover(&self, before: u64) -> Result<u64, DbError> {
        self.db
            .run(|mut conn| async move {
                sqlx::query(
                    "UPDATE storage_files SET stage = 'reserved' \
                     WHERE stage = 'uploading' AND claimed < $1",
                )
                .bind(int(before))
                .execute(&mut *conn)
                .await
                .map(|done| done.rows_affected())
            })
            .await
    }

    /// Reserves `meta.size` bytes of `meta.owner`'s `quota` for file `id` until
    /// `expires`, unless that would exceed the quota: `Ok(false)` then.
    pub(super) async fn reserve(
        &self,
        id: &str,
        meta: FileMeta,
        quota: u64,
        expires: u64,
        now: u64,
    ) -> Result<bool, DbError> {
        debug_assert!(expires >= now);
        let id = id.to_owned();
        let postgres = self.db.is_postgres();
        self.db
            .run(|mut conn| async move {
                let mut tx = conn.begin().await?;
                if postgres {
                    sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
                        .bind(meta.owner.as_str())
                        .execute(&mut *tx)
                        .await?;
                }
                let inserted = sqlx::query(
                    "INSERT INTO storage_files \
                       (id, owner, name, size, content_type, stage, expires, created) \
                     SELECT $1, $2, $3, $4, $5, 'reserved', $6, $7 \
                     WHERE (SELECT COALESCE(SUM(size), 0) FROM storage_files \
                            WHERE owner = $2 AND (stage <> 'reserved' OR expires >= $7)) \
                           + $4 <= $8",
                )
                .bind(id)
                .bind(meta.owner)
                .bind(meta.name)
                .bind(int(meta.size))
                .bind(meta.content_type)
                .bind(int(expires))
                .bind(int(now))
                .bind(int(quota))
                .execute(&mut *tx)
                .await?
                .rows_affected();
                tx.commit().await?;
                Ok(inserted == 1)
            })
            .await
    }

    /// Starts the upload of `id`: its record, now uploading.
    pub(super) async fn claim(&self, id: &str, now: u64) -> Result<FileMeta, ClaimRefused> {
        let id = id.to_owned();
        let claimed = self
            .db
            .run(|mut conn| async move {
                let claimed = sqlx::query(
                    "UPDATE storage_files SET stage = 'uploading', claimed = $2 \
                     WHERE id = $1 AND stage = 'reserved' AND expires >= $2",
                )
                .bind(id.as_str())
                .bind(int(now))
                .execute(&mut *conn)
                .await?
                .rows_affected()
                    == 1;
                Ok((claimed, fetch(&mut *conn, &id).await?))
            })
            .await
            .map_err(ClaimRefused::Db)?;
        match claimed {
            (true, Some((meta, _))) => Ok(meta),
            (_, None) => Err(ClaimRefused::NotFound),
            (false, Some((meta, _))) => Err(match meta.stage {
                Stage::Uploaded => ClaimRefused::AlreadyUploaded,
                Stage::Uploading => ClaimRefused::InProgress,
                Stage::Reserved { .. } => ClaimRefused::NotFound,
            }),
        }
    }

    /// The upload of `id` is still under way at `now`.
    pub(super) async fn touch(&self, id: &str, now: u64) -> Result<(), DbError> {
        let id = id.to_owned();
        self.db
            .run(|mut conn| async move {
                sqlx::query(
                    "UPDATE storage_files SET claimed = $2 WHERE id = $1 AND stage = 'uploading'",
                )
                .bind(id)
                .bind(int(now))
                .execute(&mut *conn)
                .await
                .map(drop)
            })
            .await
    }

    /// The upload of `id` failed: reserved again (it may be retried until the
    /// reservation ends).
    pub(super) async fn unclaim(&self, id: &str) -> Result<(), DbError> {
        let id = id.to_owned();
        self.db
            .run(|mut conn| async move {
                sqlx::query(
                    "UPDATE storage_files SET stage = 'reserved' \
                     WHERE id = $1 AND stage = 'uploading'",
                )
                .bind(id)
                .execute(&mut *conn)
                .await
                .map(drop)
            })
            .await
    }

    /// The upload of `id` stored `received` bytes (at most the reserved size): the
    /// rest of the reservation goes back to the quota. `false` if the file was deleted
    /// meanwhile.
    pub(super) async fn complete(&self, id: &str, received: u64) -> Result<bool, DbError> {
        let id = id.to_owned();
        self.db
            .run(|mut conn| async move {
                sqlx::query(
                    "UPDATE storage_files SET stage = 'uploaded', size = $2 \
                     WHERE id = $1 AND stage = 'uploading'",
                )
                .bind(id)
                .bind(int(received))
                .execute(&mut *conn)
                .await
                .map(|done| done.rows_affected() == 1)
            })
            .await
    }

    /// The record of `id`.
    pub(super) async fn get(&self, id: &str) -> Result<Option<FileMeta>, DbError> {
        let id = id.to_owned();
        self.db
            .run(|mut conn| async move { fetch(&mut *conn, &id).await })
            .await
            .map(|found| found.map(|(meta, _)| meta))
    }

    /// Removes the record of `id`, releasing its bytes; whether there was one.
    pub(super) async fn remove(&self, id: &str) -> Result<bool, DbError> {
        let id = id.to_owned();
        self.db
            .run(|mut conn| async move {
                sqlx::query("DELETE FROM storage_files WHERE id = $1")
                    .bind(id)
                    .execute(&mut *conn)
                    .await
                    .map(|done| done.rows_affected() == 1)
            })
            .await
    }

    /// Deletes the reservations that ended by `now`; how many.
    pub(super) async fn sweep(&self, now: u64) -> Result<u64, DbError> {
        self.db
            .run(|mut conn| async move {
                sqlx::query("DELETE FROM storage_files WHERE stage = 'reserved' AND expires < $1")
                    .bind(int(now))
                    .execute(&mut *conn)
                    .await
                    .map(|done| done.rows_affected())
            })
            .await
    }

    /// The bytes counted against `owner`'s quota at `now`.
    #[cfg(test)]
    pub(super) async fn used_by(&self, owner: &str, now: u64) -> u64 {
        let owner = owner.to_owned();
        self.db
            .run(|mut conn| async move {
                sqlx::query(
                    "SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM storage_files \
                     WHERE owner = $1 AND (stage <> 'reserved' OR expires >= $2)",
                )
                .bind(owner)
                .bind(int(now))
                .fetch_one(&mut *conn)
                .await?
                .try_get::<i64, _>(0)
            })
            .await
            .map(uint)
            .unwrap()
    }
}

/// The record of `id` and its reservation's end.
async fn fetch<'c, E>(conn: E, id: &str) -> Result<Option<(FileMeta, u64)>, sqlx::Error>
where
    E: Executor<'c, Database = sqlx::Any>,
{
    let Some(row) = sqlx::query(
        "SELECT owner, name, size, content_type, stage, expires FROM storage_files WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(conn)
    .await?
    else {
        return Ok(None);
    };
    let expires = uint(row.try_get(5)?);
    let stage = match row.try_get::<String, _>(4)?.as_str() {
        "uploading" => Stage::Uploading,
        "uploaded" => Stage::Uploaded,
        _ => Stage::Reserved { expires },
    };
    Ok(Some((
        FileMeta {
            owner: row.try_get(0)?,
            name: row.try_get(1)?,
            size: uint(row.try_get(2)?),
            content_type: row.try_get(3)?,
            stage,
        },
        expires,
    )))
}

#[cfg(test)]
#[path = "records_tests.rs"]
mod tests;
