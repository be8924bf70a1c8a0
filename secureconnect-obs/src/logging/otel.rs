//! The OpenTelemetry side of the subscriber: a tracer provider for the service, and the
//! `tracing-opentelemetry` layer that gives request spans their W3C trace context.

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
