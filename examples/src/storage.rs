//! The storage service: signed upload and download URLs, bytes on local disk.
//!
//! | route | |
//! |---|---|
//! | `POST /v1/storage/upload-url` | `{"file_name","file_size","content_type"}`, quota checked → `{"file_id","upload_url","expires_in"}` |
//! | `PUT /v1/storage/blobs/{file_id}?expires=…&signature=…` | the upload itself (the signed URL is the credential) |
//! | `GET /v1/storage/download-url/{file_id}` | owner only → `{"download_url","expires_in"}` |
//! | `GET /v1/storage/blobs/{file_id}?expires=…&signature=…` | the download |
//! | `DELETE /v1/storage/files/{file_id}` | owner only → 204 |
//!
//! Every allowed or denied file access is an audit event (`file.upload_url`,
//! `file.download`, `file.delete`); signed URLs never reach the audit trail.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use futures_util::StreamExt;
use hmac::{Hmac, Mac};
use secureconnect_audit::{Actor, Auditor, FileAction, FileInfo, Outcome};
use serde::Deserialize;
use sha2::Sha256;
use tokio::io::AsyncWriteExt;

use crate::error::{ApiError, JsonBody};
use crate::kit::Kit;
use crate::token::User;

const URL_TTL: Duration = Duration::from_secs(300);
const MAX_FILE: u64 = 1 << 30;

#[derive(Clone, Debug)]
struct FileMeta {
    owner: String,
    name: String,
    size: u64,
    content_type: String,
    uploaded: bool,
}

#[derive(Debug)]
struct StorageState {
    files: Mutex<HashMap<String, FileMeta>>,
    dir: PathBuf,
    quota: u64,
    /// Keyed once; cloned per signature.
    mac: Hmac<Sha256>,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
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

    fn url(&self, method: &str, id: &str) -> String {
        let expires = now() + URL_TTL.as_secs();
        format!(
            "/v1/storage/blobs/{id}?expires={expires}&signature={}",
            self.sign(method, id, expires)
        )
    }

    fn meta(&self, id: &str) -> Option<FileMeta> {
        self.files
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    fn used_by(&self, owner: &str) -> u64 {
        self.files
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter(|m| m.owner == owner)
            .map(|m| m.size)
            .sum()
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
    let id = format!("f-{}", uuid::Uuid::new_v4().simple());
    let meta = FileMeta {
        owner: claims.sub.clone(),
        name: name.to_owned(),
        size: body.file_size,
        content_type: body.content_type,
        uploaded: false,
    };
    if state.used_by(&claims.sub) + body.file_size > state.quota {
        audit_file(
            &auditor,
            &claims.sub,
            FileAction::UploadUrlIssued,
            file_info(&id, &meta),
            Outcome::Denied,
            Some(("quota_exceeded", "the upload would exceed the user's quota")),
        )?;
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "quota_exceeded",
            "the upload would exceed your quota",
        ));
    }
    audit_file(
        &auditor,
        &claims.sub,
        FileAction::UploadUrlIssued,
        file_info(&id, &meta),
        Outcome::Allowed,
        None,
    )?;
    state
        .files
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(id.clone(), meta);
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({
            "file_id": id,
            "upload_url": state.url("PUT", &id),
            "expires_in": URL_TTL.as_secs(),
        })),
    ))
}

async fn upload(
    State(state): State<Arc<StorageState>>,
    Path(id): Path<String>,
    Query(signed): Query<Signed>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    if !state.verify("PUT", &id, &signed) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "bad_signature",
            "the upload URL is invalid or expired",
        ));
    }
    let meta = state
        .meta(&id)
        .ok_or_else(|| ApiError::not_found("no such file"))?;
    let path = state.dir.join(&id);
    let mut file = tokio::fs::File::create(&path)
        .await
        .map_err(|e| ApiError::internal(format!("cannot store the file: {e}")))?;
    let mut written = 0u64;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| {
            ApiError::bad_request("upload_interrupted", "the upload was interrupted")
        })?;
        written += chunk.len() as u64;
        if written > meta.size {
            drop(file);
            let _ = tokio::fs::remove_file(&path).await;
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                "more bytes than announced",
            ));
        }
        file.write_all(&chunk)
            .await
            .map_err(|e| ApiError::internal(format!("cannot store the file: {e}")))?;
    }
    file.flush()
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    if let Some(m) = state
        .files
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get_mut(&id)
    {
        m.uploaded = true;
        m.size = written;
    }
    Ok(StatusCode::CREATED)
}

/// Lets only the file's owner through; audits the decision either way.
fn owner_only(
    state: &StorageState,
    auditor: &Auditor,
    user: &str,
    id: &str,
    action: FileAction,
) -> Result<FileMeta, ApiError> {
    let meta = state
        .meta(id)
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
    owner_only(&state, &auditor, &claims.sub, &id, FileAction::Download)?;
    Ok(Json(serde_json::json!({
        "download_url": state.url("GET", &id),
        "expires_in": URL_TTL.as_secs(),
    })))
}

async fn download(
    State(state): State<Arc<StorageState>>,
    Path(id): Path<String>,
    Query(signed): Query<Signed>,
) -> Result<Response, ApiError> {
    if !state.verify("GET", &id, &signed) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "bad_signature",
            "the download URL is invalid or expired",
        ));
    }
    let meta = state
        .meta(&id)
        .filter(|m| m.uploaded)
        .ok_or_else(|| ApiError::not_found("no such file"))?;
    let file = tokio::fs::File::open(state.dir.join(&id))
        .await
        .map_err(|_| ApiError::not_found("no such file"))?;
    let body = Body::from_stream(tokio_util_stream(file));
    let content_type = if meta.content_type.is_empty() {
        "application/octet-stream".to_owned()
    } else {
        meta.content_type
    };
    Ok(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

/// Reads a file as a stream of chunks.
fn tokio_util_stream(
    file: tokio::fs::File,
) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> {
    use tokio::io::AsyncReadExt;
    futures_util::stream::unfold(file, |mut file| async move {
        let mut buf = vec![0u8; 64 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    })
}

async fn delete_file(
    State(state): State<Arc<StorageState>>,
    auditor: Auditor,
    User(claims): User,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    owner_only(&state, &auditor, &claims.sub, &id, FileAction::Delete)?;
    state
        .files
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&id);
    let _ = tokio::fs::remove_file(state.dir.join(&id)).await;
    Ok(StatusCode::NO_CONTENT)
}

/// The storage service's routes.
///
/// # Errors
///
/// If `STORAGE_DIR` cannot be created.
pub fn router(
    kit: &Kit,
    config: &crate::config::Config,
    signing_secret: &str,
) -> Result<Router, String> {
    std::fs::create_dir_all(&config.storage_dir)
        .map_err(|e| format!("STORAGE_DIR={}: {e}", config.storage_dir.display()))?;
    let _ = kit;
    let mac = Hmac::<Sha256>::new_from_slice(format!("storage-urls:{signing_secret}").as_bytes())
        .map_err(|e| format!("signing key: {e}"))?;
    let state = Arc::new(StorageState {
        files: Mutex::new(HashMap::new()),
        dir: config.storage_dir.clone(),
        quota: config.storage_quota,
        mac,
    });
    Ok(Router::new()
        .route("/v1/storage/upload-url", post(upload_url))
        .route(
            "/v1/storage/blobs/{file_id}",
            put(upload).layer(DefaultBodyLimit::disable()).get(download),
        )
        .route("/v1/storage/download-url/{file_id}", get(download_url))
        .route("/v1/storage/files/{file_id}", delete(delete_file))
        .with_state(state))
}
