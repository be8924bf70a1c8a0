//! The storage service: signed upload and download URLs, bytes on local disk.
//!
//! | route | |
//! |---|---|
//! | `POST /v1/storage/upload-url` | `{"file_name","file_size","content_type"}`, quota checked and reserved → `{"file_id","upload_url","expires_in"}` |
//! | `PUT /v1/storage/blobs/{file_id}?expires=…&signature=…` | the upload itself (the signed URL is the credential), once: 409 afterwards ([`upload`]) |
//! | `GET /v1/storage/download-url/{file_id}` | owner only → `{"download_url","expires_in"}` |
//! | `GET /v1/storage/blobs/{file_id}?expires=…&signature=…` | the download, as an attachment of an inert type ([`download`]) |
//! | `DELETE /v1/storage/files/{file_id}` | owner only → 204 |
//!
//! Issuing an upload URL reserves the announced size in the owner's quota
//! (`STORAGE_QUOTA_BYTES`), atomically with the check; the reservation ends with the
//! URL, `STORAGE_RESERVATION_TTL_SECS` later, if no upload started by then.
//!
//! File records (owner, name, size, type, stage, reservation end) live in the database
//! ([`crate::db`], table `storage_files`), so a restart loses no file; the bytes live in
//! `STORAGE_DIR` (default `DATA_DIR/files`).
//!
//! Every allowed or denied file access is an audit event (`file.upload_url`,
//! `file.download`, `file.delete`); signed URLs never reach the audit trail.

pub mod download;
mod records;
pub mod upload;

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use hmac::{Hmac, Mac};
use secureconnect_audit::{Actor, Auditor, FileAction, FileInfo, Outcome};
use serde::Deserialize;
use sha2::Sha256;

pub use self::records::migrations;
use self::records::{FileMeta, Records, Stage};
use crate::error::{ApiError, JsonBody};
use crate::kit::Kit;
use crate::token::{unix_now as now, Authn, AuthnState, User};

/// How long a download URL is valid.
const DOWNLOAD_URL_TTL: Duration = Duration::from_secs(300);
const MAX_FILE: u64 = 1 << 30;
/// How often expired reservations are dropped in the background (they are also dropped
/// before every quota check).
const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// Abandoned temporary files are looked for every this many sweeps (a minute).
const ABANDONED_SWEEP_EVERY: u64 = 6;

#[derive(Debug)]
struct StorageState {
    records: Records,
    dir: PathBuf,
    quota: u64,
    /// How long an upload URL, and the quota it reserves, lasts.
    reservation_ttl: Duration,
    /// Keyed once; cloned per signature.
    mac: Hmac<Sha256>,
    authn: Authn,
}

impl AuthnState for StorageState {
    fn authn(&self) -> &Authn {
        &self.authn
    }
}

impl StorageState {
    fn sign(&self, method: &str, id: &str, expires: u64) -> String {
        let mut mac = self.mac.clone();
        mac.update(format!("{method}\n{id}\n{expires}").as_bytes());
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn verify(&self, method: &str, id: &str, query: &Signed) -> bool {
        if query.expires < now() {
            return false;
        }
        let expected = self.sign(method, id, query.expires);
        expected.len() == query.signature.len()
            && expected
                .bytes()
                .zip(query.signature.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    fn url(&self, method: &str, id: &str, expires: u64) -> String {
        format!(
            "/v1/storage/blobs/{id}?expires={expires}&signature={}",
            self.sign(method, id, expires)
        )
    }
}

#[derive(Deserialize)]
struct UploadRequest {
    file_name: String,
    file_size: u64,
    #[serde(default)]
    content_type: String,
}

#[derive(Deserialize)]
struct Signed {
    expires: u64,
    signature: String,
}

fn file_info(id: &str, meta: &FileMeta) -> FileInfo {
    FileInfo {
        id: id.to_owned(),
        owner: Some(meta.owner.clone()),
        name: Some(meta.name.clone()),
        size: Some(meta.size),
    }
}

/// Records a file event; in fail-closed mode a trail that cannot take it stops the
/// operation.
fn audit_file(
    auditor: &Auditor,
    user: &str,
    action: FileAction,
    file: FileInfo,
    outcome: Outcome,
    reason: Option<(&str, &str)>,
) -> Result<(), ApiError> {
    match auditor.file(Actor::user(user), action, file, outcome, reason) {
        Err(e) if e.is_refused() => Err(ApiError::unavailable("audit trail unavailable")),
        _ => Ok(()),
    }
}

async fn upload_url(
    State(state): State<Arc<StorageState>>,
    auditor: Auditor,
    User(claims): User,
    JsonBody(body): JsonBody<UploadRequest>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let name = body.file_name.trim();
    if name.is_empty() || name.len() > 255 {
        return Err(ApiError::bad_request(
            "invalid_file_name",
            "file_name must be 1 to 255 bytes",
        ));
    }
    if body.file_size == 0 || body.file_size > MAX_FILE {
        return Err(ApiError::bad_request(
            "invalid_file_size",
            "file_size must be 1 byte to 1 GiB",
        ));
    }
    if body.content_type.len() > 255 {
        return Err(ApiError::bad_request(
            "invalid_content_type",
            "content_type must be at most 255 bytes",
        ));
    }
    let id = format!("f-{}", uuid::Uuid::new_v4().simple());
    let now = now();
    let expires = now + state.reservation_ttl.as_secs();
    let meta = FileMeta {
        owner: claims.sub.clone(),
        name: name.to_owned(),
        size: body.file_size,
        content_type: body.content_type,
        stage: Stage::Reserved { expires },
    };
    let info = file_info(&id, &meta);
    if !state
        .records
        .reserve(&id, meta, state.quota, expires, now)
        .await?
    {
        audit_file(
            &auditor,
            &claims.sub,
            FileAction::UploadUrlIssued,
            info,
            Outcome::Denied,
            Some(("quota_exceeded", "the upload would exceed the user's quota")),
        )?;
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "quota_exceeded",
            "the upload would exceed your quota",
        ));
    }
    if let Err(e) = audit_file(
        &auditor,
        &claims.sub,
        FileAction::UploadUrlIssued,
        info,
        Outcome::Allowed,
        None,
    ) {
        // The trail refused the event: no URL, no reservation. Should the database
        // fail too, the reservation ends by itself.
        let _ = state.records.remove(&id).await;
        return Err(e);
    }
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({
            "file_id": id,
            "upload_url": state.url("PUT", &id, expires),
            "expires_in": state.reservation_ttl.as_secs(),
        })),
    ))
}

/// Lets only the file's owner through; audits the decision either way.
async fn owner_only(
    state: &StorageState,
    auditor: &Auditor,
    user: &str,
    id: &str,
    action: FileAction,
) -> Result<FileMeta, ApiError> {
    let meta = state
        .records
        .get(id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such file"))?;
    if meta.owner != user {
        let reason = ("not_owner", "the file belongs to another user");
        audit_file(
            auditor,
            user,
            action,
            file_info(id, &meta),
            Outcome::Denied,
            Some(reason),
        )?;
        return Err(ApiError::forbidden(
            Actor::user(user),
            "this file belongs to another user",
        ));
    }
    audit_file(
        auditor,
        user,
        action,
        file_info(id, &meta),
        Outcome::Allowed,
        None,
    )?;
    Ok(meta)
}

async fn download_url(
    State(state): State<Arc<StorageState>>,
    auditor: Auditor,
    User(claims): User,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    owner_only(&state, &auditor, &claims.sub, &id, FileAction::Download).await?;
    let expires = now() + DOWNLOAD_URL_TTL.as_secs();
    Ok(Json(serde_json::json!({
        "download_url": state.url("GET", &id, expires),
        "expires_in": DOWNLOAD_URL_TTL.as_secs(),
    })))
}

async fn delete_file(
    State(state): State<Arc<StorageState>>,
    auditor: Auditor,
    User(claims): User,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    owner_only(&state, &auditor, &claims.sub, &id, FileAction::Delete).await?;
    state.records.remove(&id).await?;
    let _ = tokio::fs::remove_file(state.dir.join(&id)).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Drops expired reservations every [`SWEEP_EVERY`], and abandoned temporary files
/// every [`ABANDONED_SWEEP_EVERY`] of those, for as long as the service lives.
async fn sweep(state: Weak<StorageState>) {
    let mut every = tokio::time::interval(SWEEP_EVERY);
    for round in 0u64.. {
        every.tick().await;
        let Some(state) = state.upgrade() else {
            return;
        };
        match state.records.sweep(now()).await {
            Ok(0) => {}
            Ok(dropped) => tracing::info!(dropped, "unused upload reservations expired"),
            // Tried again next round; the expired ones do not count meanwhile.
            Err(e) => tracing::warn!(error = ?e, "cannot drop expired upload reservations"),
        }
        if round % ABANDONED_SWEEP_EVERY == ABANDONED_SWEEP_EVERY - 1 {
            let before = now().saturating_sub(upload::ABANDONED_AFTER.as_secs());
            match state.records.recover(before).await {
                Ok(0) | Err(_) => {}
                Ok(released) => tracing::info!(released, "abandoned uploads reserved again"),
            }
            let dir = state.dir.clone();
            let removed = tokio::task::spawn_blocking(move || {
                upload::remove_abandoned(&dir, std::time::SystemTime::now())
            })
            .await;
            match removed {
                Ok(Ok(0)) => {}
                Ok(Ok(removed)) => tracing::info!(removed, "abandoned upload files removed"),
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot remove abandoned upload files"),
                Err(_) => {}
            }
        }
    }
}

/// The storage service's routes, on `db` (opened with [`migrations`]).
///
/// # Errors
///
/// If `STORAGE_DIR` cannot be created or cleaned of abandoned uploads, or the uploads
/// a stopped process left claimed cannot be released.
pub async fn router(
    kit: &Kit,
    config: &crate::config::Config,
    signing_secret: &str,
    db: crate::db::Db,
) -> Result<Router, String> {
    let dir = &config.storage_dir;
    std::fs::create_dir_all(dir)
        .and_then(|()| upload::remove_abandoned(dir, std::time::SystemTime::now()))
        .map_err(|e| format!("STORAGE_DIR={}: {e}", dir.display()))?;
    let mac = Hmac::<Sha256>::new_from_slice(format!("storage-urls:{signing_secret}").as_bytes())
        .map_err(|e| format!("signing key: {e}"))?;
    let records = Records::new(db);
    let before = now().saturating_sub(upload::ABANDONED_AFTER.as_secs());
    match records.recover(before).await {
        Ok(0) => {}
        Ok(released) => tracing::info!(released, "abandoned uploads reserved again"),
        Err(e) => return Err(format!("storage records: {e:?}")),
    }
    let state = Arc::new(StorageState {
        records,
        dir: dir.clone(),
        quota: config.storage_quota,
        reservation_ttl: config.storage_reservation_ttl,
        mac,
        authn: kit.authn(),
    });
    tokio::spawn(sweep(Arc::downgrade(&state)));
    Ok(Router::new()
        .route("/v1/storage/upload-url", post(upload_url))
        .route(
            "/v1/storage/blobs/{file_id}",
            put(upload::upload)
                .layer(DefaultBodyLimit::disable())
                .get(download::download),
        )
        .route("/v1/storage/download-url/{file_id}", get(download_url))
        .route("/v1/storage/files/{file_id}", delete(delete_file))
        .with_state(state))
}
