//! Rendering, kept apart from serving: the exposition [`Format`]s, [`render`] (a
//! registry to text) and gzip. Pure functions: no HTTP, no state.

use prometheus_client::registry::Registry;

/// An exposition format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format, version 0.0.4.
    Prometheus,
    /// OpenMetrics text, version 1.0.0.
    OpenMetrics,
}

impl Format {
    /// The exact `Content-Type` of the format.
    pub const fn content_type(self) -> &'static str {
        match self {
            Self::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// Encodes `registry` in `format` into `buffer`.
///
/// In OpenMetrics, the buckets of `http_server_request_duration_seconds` carry their
/// exemplars (`# {trace_id="…"} <duration> <time>`); the Prometheus text format has
/// none.
///
/// # Errors
///
/// Fails only if a registered metric or collector fails to encode itself.
pub fn render(
    buffer: &mut String,
    registry: &Registry,
    format: Format,
) -> Result<(), std::fmt::Error> {
    match format {
        Format::Prometheus => {
            prometheus_client::encoding::prometheus_text::encode(buffer, registry)
        }
        Format::OpenMetrics => {
            let start = buffer.len();
            let (result, families) = crate::exemplar::collect(|| {
                prometheus_client::encoding::text::encode(buffer, registry)
            });
            result?;
            if !families.is_empty() {
                let mut text = buffer.split_off(start);
                super::exemplars::splice(&mut text, &families);
                buffer.push_str(&text);
            }
            Ok(())
        }
    }
}

/// Compresses `data` with gzip.
pub(super) fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4 + 64),
        flate2::Compression::fast(),
    );
    encoder.write_all(data)?;
    encoder.finish()
}
