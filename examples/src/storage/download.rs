//! How a stored file is served: never as something a browser would run.
//!
//! - `Content-Type` is the stored type only when it is one of [`INERT_TYPES`] (matched
//!   on its essence, case-insensitively, parameters dropped); anything else — HTML, SVG,
//!   JavaScript, XML, an unknown or empty type — is `application/octet-stream`.
//! - `Content-Disposition: attachment`, with the file name as an ASCII fallback
//!   (`filename="…"`) and in full, UTF-8 percent-encoded (`filename*=UTF-8''…`,
//!   RFC 6266 and RFC 8187), so no name can break out of the header.
//! - `X-Content-Type-Options: nosniff`, and `Content-Security-Policy: default-src
//!   'none'; sandbox` in case a client renders it anyway.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::records::Stage;
use super::{Signed, StorageState};
use crate::error::ApiError;

/// The stored types served as such: images, PDF and plain text, which browsers display
/// without running anything of the page's origin.
pub const INERT_TYPES: [&str; 5] = [
    "application/pdf",
    "image/gif",
    "image/jpeg",
    "image/png",
    "text/plain",
];

/// The type everything else is served as.
pub const FALLBACK_TYPE: &str = "application/octet-stream";

/// What a download carries besides its type and disposition.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; sandbox";

/// The `Content-Type` to serve a file stored as `stored` with.
pub fn served_type(stored: &str) -> &'static str {
    let essence = stored.split(';').next().unwrap_or("").trim();
    INERT_TYPES
        .iter()
        .find(|inert| inert.eq_ignore_ascii_case(essence))
        .copied()
        .unwrap_or(FALLBACK_TYPE)
}

/// `attachment; filename="<ASCII fallback>"; filename*=UTF-8''<percent-encoded name>`.
pub fn content_disposition(name: &str) -> HeaderValue {
    let mut value = String::with_capacity(name.len() * 4 + 40);
    value.push_str("attachment; filename=\"");
    let start = value.len();
    for c in name.chars() {
        // Visible ASCII but the quoted-string specials, `%` (some clients decode it) and
        // path separators; everything else becomes `_`.
        let keep = c.is_ascii_graphic() && !matches!(c, '"' | '\\' | '%' | '/') || c == ' ';
        value.push(if keep { c } else { '_' });
    }
    if value.len() == start {
        value.push_str("download");
    }
    value.push_str("\"; filename*=UTF-8''");
    for byte in name.bytes() {
        // RFC 8187 attr-char.
        if byte.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&byte) {
            value.push(char::from(byte));
        } else {
            value.push_str(&format!("%{byte:02X}"));
        }
    }
    HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("attachment"))
}

/// `GET /v1/storage/blobs/{file_id}`: the download through a signed URL.
pub(super) async fn download(
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
        .records
        .get(&id)
        .await?
        .filter(|m| m.stage == Stage::Uploaded)
        .ok_or_else(|| ApiError::not_found("no such file"))?;
    let file = tokio::fs::File::open(state.dir.join(&id))
        .await
        .map_err(|_| ApiError::not_found("no such file"))?;
    let length = file
        .metadata()
        .await
        .map_err(|_| ApiError::not_found("no such file"))?
        .len();
    let headers = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static(served_type(&meta.content_type)),
        ),
        (header::CONTENT_LENGTH, HeaderValue::from(length)),
        (header::CONTENT_DISPOSITION, content_disposition(&meta.name)),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
    ];
    Ok((headers, Body::from_stream(chunks(file))).into_response())
}

/// Reads a file as a stream of chunks.
fn chunks(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_inert_types_are_served_as_stored() {
        assert_eq!(served_type("image/png"), "image/png");
        assert_eq!(served_type("Text/Plain; charset=utf-8"), "text/plain");
        assert_eq!(served_type(" application/pdf "), "application/pdf");
        for active in [
            "text/html",
            "text/html; charset=utf-8",
            "image/svg+xml",
            "application/javascript",
            "text/xml",
            "application/xhtml+xml",
            "multipart/x-mixed-replace",
            "",
            "text/plain, text/html",
            "image/png\u{0}",
        ] {
            assert_eq!(served_type(active), FALLBACK_TYPE, "{active:?}");
        }
    }

    #[test]
    fn any_name_stays_inside_the_header() {
        let cases = [
            (
                "notes.txt",
                "attachment; filename=\"notes.txt\"; filename*=UTF-8''notes.txt",
            ),
            (
                "a \"b\".html",
                "attachment; filename=\"a _b_.html\"; filename*=UTF-8''a%20%22b%22.html",
            ),
            (
                "x\r\nSet-Cookie: a=b",
                "attachment; filename=\"x__Set-Cookie: a=b\"; filename*=UTF-8''x%0D%0ASet-Cookie%3A%20a%3Db",
            ),
            (
                "résumé.pdf",
                "attachment; filename=\"r_sum_.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf",
            ),
            (
                "../../etc/passwd",
                "attachment; filename=\".._.._etc_passwd\"; filename*=UTF-8''..%2F..%2Fetc%2Fpasswd",
            ),
            (
                "日本",
                "attachment; filename=\"__\"; filename*=UTF-8''%E6%97%A5%E6%9C%AC",
            ),
        ];
        for (name, want) in cases {
            assert_eq!(content_disposition(name), want, "{name:?}");
        }
        assert_eq!(
            content_disposition(""),
            "attachment; filename=\"download\"; filename*=UTF-8''"
        );
    }
}
