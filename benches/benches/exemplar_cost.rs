//! What exemplars add to the metrics layer's recording, measured interleaved: rounds of
//! 20,000 requests through `HttpMetrics` (around a service that answers at once, the
//! requests built beforehand) for each variant in turn, so that load from other
//! processes falls on all of them alike; the minimum and the median of the rounds per
//! variant, in ns per request.
//!
//! ```text
//! cargo bench -p secureconnect-benches --bench exemplar_cost
//! ```
//!
//! `http_metrics` measures the same variants with criterion (`exemplars_layer`, and
//! through an axum router, `exemplars`); on a busy machine their differences drown in
//! noise, which interleaving and the minimum remove.

#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Instant;

use futures_util::FutureExt;
use http::{Request, Response};
use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
use prometheus_client::registry::Registry;
use secureconnect_obs::{HttpMetrics, HttpMetricsConfig, RouteLabel};
use tower::Service;

const REQUESTS: usize = 20_000;
const ROUNDS: usize = 40;

fn context(flags: TraceFlags) -> SpanContext {
    SpanContext::new(
        TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
        SpanId::from_hex("00f067aa0ba902b7").unwrap(),
        flags,
        false,
        TraceState::default(),
    )
}

fn main() {
    let inner = tower::service_fn(|_: Request<()>| async {
        Ok::<_, std::convert::Infallible>(Response::new(()))
    });
    let classify = |_: &str| Some(RouteLabel::from_static("/users/{id}"));
    let service = |exemplars: bool| {
        let config = HttpMetricsConfig::default().exemplars(exemplars);
        HttpMetrics::new(inner, classify, config, &mut Registry::default()).unwrap()
    };
    let (sampled, unsampled) = (context(TraceFlags::SAMPLED), context(TraceFlags::default()));
    let mut variants = [
        (
            "exemplars off (today's layer)",
            service(false),
            sampled.clone(),
        ),
        ("exemplars on, unsampled", service(true), unsampled),
        ("exemplars on, sampled", service(true), sampled),
    ];
    let mut rounds: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for round in 0..=ROUNDS {
        for i in 0..variants.len() {
            // A different order each round.
            let v = (i + round) % variants.len();
            let (_, service, context) = &mut variants[v];
            let requests: Vec<Request<()>> = (0..REQUESTS)
                .map(|_| {
                    let mut request = Request::get("/users/42").body(()).unwrap();
                    request.extensions_mut().insert(context.clone());
                    request
                })
                .collect();
            let start = Instant::now();
            for request in requests {
                // The inner service answers at once; dropping the response (its body)
                // records the request.
                drop(black_box(service.call(request).now_or_never()));
            }
            let elapsed = start.elapsed();
            if round > 0 {
                // Round 0 warms up.
                rounds[v].push(elapsed.as_nanos() as f64 / REQUESTS as f64);
            }
        }
    }
    println!("ns per request, {ROUNDS} interleaved rounds of {REQUESTS}:");
    let base = stats(&rounds[0]);
    for ((name, _, _), times) in variants.iter().zip(&rounds) {
        let (min, median) = stats(times);
        println!(
            "{name:32} min {min:7.1}  median {median:7.1}  (min {:+6.1} vs off)",
            min - base.0
        );
    }
}

fn stats(times: &[f64]) -> (f64, f64) {
    let mut sorted = times.to_vec();
    sorted.sort_by(f64::total_cmp);
    (sorted[0], sorted[sorted.len() / 2])
}
