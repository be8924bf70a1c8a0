//! `PUT /v1/storage/blobs/{file_id}`: the upload through a signed URL.
//!
//! The URL uploads once. The upload claims the file record first: a second PUT while
//! it runs, or after it succeeded, gets 409 and touches nothing. The body goes to a
//! temporary file beside the others (`.<file_id>.<random>.part`), flushed to disk and
//! renamed into place only once complete; a body larger than announced (413), an
//! interrupted one, or a client that goes away leaves no file and the record
//! not uploaded (the URL may be used again until it expires).
//!
//! A body that stalls for [`IDLE_LIMIT`] ends the upload (408). A temporary file
//! nobody has written to for [`ABANDONED_AFTER`] (a crash left it, here or in another
//! process sharing the folder) is removed, at start and every minute.
//!
//! A refused upload's body is read and dropped (up to [`DRAIN_LIMIT`]) before the
//! answer, so that the client, still sending, reads the 409 instead of a reset.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::records::ClaimRefused;
use super::{Signed, StorageState};
use crate::error::ApiError;
use crate::token::unix_now;

/// How much of a refused upload's body is read before the connection is closed
/// instead.
pub const DRAIN_LIMIT: u64 = 8 * 1024 * 1024;

/// How long reading a refused body may take.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// `refusal`, after reading and dropping what the client sends (up to
/// [`DRAIN_LIMIT`]); if more is coming, the connection closes after the answer.
async fn refuse_after_drain(body: Body, refusal: ApiError) -> Response {
    let drained = tokio::time::timeout(DRAIN_TIME, async {
        let mut read = 0u64;
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let Ok(chunk) = chunk else { return false };
            read += chunk.len() as u64;
            if read > DRAIN_LIMIT {
                return false;
            }
        }
        true
    })
    .await;
    let mut response = refusal.into_response();
    if !matches!(drained, Ok(true)) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// An upload whose body sends nothing for this long fails (408).
pub const IDLE_LIMIT: Duration = Duration::from_secs(60);

/// A temporary file not written to for this long belongs to no upload under way; so
/// does a claim not refreshed for this long.
pub const ABANDONED_AFTER: Duration = Duration::from_secs(600);

/// How often an upload under way refreshes its claim in the database.
const SIGN_OF_LIFE_EVERY: Duration = Duration::from_secs(60);

/// Whether `name` is a temporary upload file.
fn is_partial(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".part")
}

/// Removes the temporary files in `dir` not written to for [`ABANDONED_AFTER`] by
/// `now`; how many. Blocking.
pub(super) fn remove_abandoned(dir: &FsPath, now: SystemTime) -> std::io::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if !entry.file_name().to_str().is_some_and(is_partial) {
            continue;
        }
        let Ok(modified) = entry.metadata().and_then(|m| m.modified()) else {
            continue;
        };
        if modified + ABANDONED_AFTER <= now {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(removed)
}

/// An upload under way: if it does not finish, its temporary file goes and its record
/// is reserved again.
struct Claim {
    state: Arc<StorageState>,
    id: String,
    temp: PathBuf,
    done: bool,
}

impl Drop for Claim {
    fn drop(&mut self) {
        if !self.done {
            // Also when the request is dropped mid-body (the client went away).
            let _ = std::fs::remove_file(&self.temp);
            let (records, id) = (self.state.records.clone(), std::mem::take(&mut self.id));
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    // Without the database, the claim stays until the next start.
                    if let Err(e) = records.unclaim(&id).await {
                        tracing::warn!(file = %id, error = ?e, "cannot release a failed upload");
                    }
                });
            }
        }
    }
}

fn refused(refusal: ClaimRefused) -> ApiError {
    match refusal {
        ClaimRefused::NotFound => ApiError::not_found("no such file"),
        ClaimRefused::InProgress => ApiError::new(
            StatusCode::CONFLICT,
            "upload_in_progress",
            "this file is being uploaded through another request",
        ),
        ClaimRefused::AlreadyUploaded => ApiError::new(
            StatusCode::CONFLICT,
            "already_uploaded",
            "this upload URL was used already; ask for a new one",
        ),
        ClaimRefused::Db(e) => e.into(),
    }
}

fn store_failed(e: &std::io::Error) -> ApiError {
    tracing::error!(error = %e, "cannot store an upload");
    ApiError::internal("cannot store the file")
}

pub(super) async fn upload(
    State(state): State<Arc<StorageState>>,
    Path(id): Path<String>,
    Query(signed): Query<Signed>,
    body: Body,
) -> Result<StatusCode, Response> {
    if !state.verify("PUT", &id, &signed) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "bad_signature",
            "the upload URL is invalid or expired",
        )
        .into_response());
    }
    let meta = match state.records.claim(&id, unix_now()).await {
        Ok(claimed) => claimed,
        Err(refusal) => return Err(refuse_after_drain(body, refused(refusal)).await),
    };
    store(&state, &id, meta.size, body)
        .await
        .map_err(IntoResponse::into_response)
}

/// Stores the body of the claimed upload of `id` (at most `size` bytes).
async fn store(
    state: &Arc<StorageState>,
    id: &str,
    size: u64,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let mut claim = Claim {
        temp: state
            .dir
            .join(format!(".{id}.{}.part", uuid::Uuid::new_v4().simple())),
        state: Arc::clone(state),
        id: id.to_owned(),
        done: false,
    };
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&claim.temp)
        .await
        .map_err(|e| store_failed(&e))?;
    let mut received = 0u64;
    let mut last_sign = std::time::Instant::now();
    let mut stream = body.into_data_stream();
    loop {
        let Ok(next) = tokio::time::timeout(IDLE_LIMIT, stream.next()).await else {
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "upload_stalled",
                format!(
                    "no bytes for {} s: the upload was abandoned",
                    IDLE_LIMIT.as_secs()
                ),
            ));
        };
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|_| {
            ApiError::bad_request("upload_interrupted", "the upload was interrupted")
        })?;
        received += chunk.len() as u64;
        if received > size {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                "more bytes than announced",
            ));
        }
        file.write_all(&chunk).await.map_err(|e| store_failed(&e))?;
        if last_sign.elapsed() >= SIGN_OF_LIFE_EVERY {
            // Keeps the claim from looking abandoned; a failure only risks that.
            last_sign = std::time::Instant::now();
            if let Err(e) = state.records.touch(&claim.id, unix_now()).await {
                tracing::warn!(file = %claim.id, error = ?e, "cannot refresh an upload's claim");
            }
        }
    }
    file.flush().await.map_err(|e| store_failed(&e))?;
    file.sync_all().await.map_err(|e| store_failed(&e))?;
    drop(file);
    let path = state.dir.join(&claim.id);
    tokio::fs::rename(&claim.temp, &path)
        .await
        .map_err(|e| store_failed(&e))?;
    match state.records.complete(&claim.id, received).await {
        Ok(true) => {
            claim.done = true;
            Ok(StatusCode::CREATED)
        }
        Ok(false) => {
            // Deleted while it was being uploaded.
            claim.done = true;
            let _ = tokio::fs::remove_file(&path).await;
            Err(ApiError::not_found(
                "the file was deleted during its upload",
            ))
        }
        Err(e) => {
            // Not recorded: the bytes go, the claim is released (on drop) for a retry.
            let _ = tokio::fs::remove_file(&path).await;
            Err(e.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_abandoned_temporary_files_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        for name in [".f-1.a.part", "f-1", ".f-2.b.part.x", "f-2.part"] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let names = || {
            let mut names: Vec<String> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };
        let now = SystemTime::now();
        assert_eq!(remove_abandoned(dir.path(), now).unwrap(), 0, "fresh");
        let later = now + ABANDONED_AFTER + Duration::from_secs(1);
        assert_eq!(remove_abandoned(dir.path(), later).unwrap(), 1);
        assert_eq!(names(), vec![".f-2.b.part.x", "f-1", "f-2.part"]);
    }
}
