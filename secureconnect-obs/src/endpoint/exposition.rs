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
        Format::OpenMetrics => prometheus_client::encoding::text::encode(buffer, registry),
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
