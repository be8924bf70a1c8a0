//! Content negotiation: which exposition format an `Accept` header asks for, and
//! whether `Accept-Encoding` accepts gzip. Pure functions over header values.

use super::Format;

/// Picks the format from an `Accept` header value.
///
/// OpenMetrics is chosen when the client gives `application/openmetrics-text` a
/// quality at least as high as `text/plain` (or `*/*`); anything else, a missing
/// header included, gets the Prometheus text format.
///
/// ```
/// use secureconnect_obs::endpoint::{negotiate, Format};
///
/// // What Prometheus sends by default:
/// let prometheus = "application/openmetrics-text;version=1.0.0;q=0.5,\
///     application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
/// assert_eq!(negotiate(Some(prometheus)), Format::OpenMetrics);
/// assert_eq!(negotiate(Some("text/plain")), Format::Prometheus);
/// assert_eq!(negotiate(None), Format::Prometheus);
/// ```
pub fn negotiate(accept: Option<&str>) -> Format {
    let Some(accept) = accept else {
        return Format::Prometheus;
    };
    let mut openmetrics = 0.0f32;
    let mut text = 0.0f32;
    for (media_type, params) in media_ranges(accept) {
        let q = quality(params);
        if media_type.eq_ignore_ascii_case("application/openmetrics-text") {
            let version_ok = params
                .split(';')
                .filter_map(|p| p.trim().split_once('='))
                .filter(|(k, _)| k.trim().eq_ignore_ascii_case("version"))
                .all(|(_, v)| v.trim() == "1.0.0");
            if version_ok {
                openmetrics = openmetrics.max(q);
            }
        } else if media_type.eq_ignore_ascii_case("text/plain")
            || media_type == "text/*"
            || media_type == "*/*"
        {
            text = text.max(q);
        }
    }
    if openmetrics > 0.0 && openmetrics >= text {
        Format::OpenMetrics
    } else {
        Format::Prometheus
    }
}

/// Whether an `Accept-Encoding` header value accepts gzip (`gzip` or `*` with a
/// non-zero quality).
///
/// ```
/// use secureconnect_obs::endpoint::accepts_gzip;
///
/// assert!(accepts_gzip(Some("gzip, deflate")));
/// assert!(!accepts_gzip(Some("gzip;q=0, br")));
/// assert!(!accepts_gzip(None));
/// ```
pub fn accepts_gzip(accept_encoding: Option<&str>) -> bool {
    accept_encoding.is_some_and(|value| {
        media_ranges(value).any(|(coding, params)| {
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && quality(params) > 0.0
        })
    })
}

/// Splits a header value into `(token, parameters)` pairs.
fn media_ranges(value: &str) -> impl Iterator<Item = (&str, &str)> {
    value.split(',').filter_map(|part| {
        let part = part.trim();
        let (token, params) = part.split_once(';').unwrap_or((part, ""));
        let token = token.trim();
        (!token.is_empty()).then_some((token, params))
    })
}

/// The `q` parameter of a media range, 1 when absent, 0 when malformed.
fn quality(params: &str) -> f32 {
    params
        .split(';')
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
        .map_or(1.0, |(_, v)| {
            v.trim()
                .parse::<f32>()
                .ok()
                .filter(|q| (0.0..=1.0).contains(q))
                .unwrap_or(0.0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation() {
        assert_eq!(
            negotiate(Some("application/openmetrics-text")),
            Format::OpenMetrics
        );
        assert_eq!(
            negotiate(Some("application/openmetrics-text;version=0.0.1")),
            Format::Prometheus,
            "only OpenMetrics 1.0.0 is rendered"
        );
        assert_eq!(
            negotiate(Some("text/plain;q=0.9, application/openmetrics-text;q=0.5")),
            Format::Prometheus
        );
        assert_eq!(
            negotiate(Some("application/openmetrics-text;q=0")),
            Format::Prometheus
        );
        assert_eq!(negotiate(Some("garbage;;;,,q=x")), Format::Prometheus);
    }

    #[test]
    fn gzip_and_quality() {
        assert!(accepts_gzip(Some("*")));
        assert!(accepts_gzip(Some("br;q=1.0, GZIP;q=0.5")));
        assert!(!accepts_gzip(Some("identity")));
        assert!(!accepts_gzip(Some("gzip;q=nonsense")));
    }
}
