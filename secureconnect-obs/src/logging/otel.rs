//! The OpenTelemetry side of the subscriber: a tracer provider for the service, the
//! `tracing-opentelemetry` layer that gives request spans their W3C trace context, and,
//! with the feature `otlp` and `OTEL_EXPORTER_OTLP_ENDPOINT` set, the OTLP/HTTP export.
//!
//! Without an endpoint nothing is exported: no exporter, no batch thread, no
//! connection; the provider only assigns ids and sampling decisions.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing::Subscriber;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// A tracer provider for `service`: it assigns trace and span ids and samples by
/// `OTEL_TRACES_SAMPLER` (default `parentbased_always_on`); spans are exported only
/// through the processors `configure` adds.
pub(crate) fn provider(
    service: &str,
    configure: impl FnOnce(
        opentelemetry_sdk::trace::TracerProviderBuilder,
    ) -> opentelemetry_sdk::trace::TracerProviderBuilder,
) -> SdkTracerProvider {
    let builder = SdkTracerProvider::builder().with_resource(
        Resource::builder_empty()
            .with_service_name(service.to_owned())
            .build(),
    );
    configure(builder).build()
}

/// Whether the environment names an OTLP endpoint for spans.
#[cfg(feature = "otlp")]
fn export_requested() -> bool {
    [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .iter()
    .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()))
}

/// The provider of `service`, exporting over OTLP/HTTP (protobuf) in batches when the
/// environment names an endpoint. The batch is bounded (`OTEL_BSP_MAX_QUEUE_SIZE`,
/// default 2,048 spans; a full queue drops spans, never blocks a request) and sent from
/// a thread of its own (`OTEL_BSP_SCHEDULE_DELAY`, `OTEL_EXPORTER_OTLP_TIMEOUT`).
#[cfg(feature = "otlp")]
pub(crate) fn exporting_provider(service: &str) -> Result<SdkTracerProvider, crate::Error> {
    if !export_requested() {
        return Ok(provider(service, |builder| builder));
    }
    use opentelemetry_otlp::WithExportConfig;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .build()
        .map_err(crate::Error::trace_export)?;
    Ok(provider(service, |builder| {
        builder.with_batch_exporter(exporter)
    }))
}

/// The provider of `service`; without the feature `otlp`, spans are never exported.
#[cfg(not(feature = "otlp"))]
pub(crate) fn exporting_provider(service: &str) -> Result<SdkTracerProvider, crate::Error> {
    Ok(provider(service, |builder| builder))
}

/// The `tracing-opentelemetry` layer on `provider`'s tracer: spans only (log lines stay
/// log lines, not span events), without thread, location or idle-time attributes, and
/// without switching the OpenTelemetry context on every poll.
pub(crate) fn layer<S>(provider: &SdkTracerProvider) -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("secureconnect-obs"))
        .with_threads(false)
        .with_location(false)
        .with_tracked_inactivity(false)
        .with_target(false)
        .with_context_activation(false)
        .with_filter(filter_fn(|meta| meta.is_span()))
}
