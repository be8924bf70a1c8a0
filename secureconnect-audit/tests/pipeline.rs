//! Sinks that hang, fail or panic: requests stay fast, every loss is counted, and
//! fail-closed refuses. Shutdown writes what is queued.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use axum::routing::get;
use prometheus_client::registry::Registry;
use secureconnect_audit::{
    AuditConfig, AuditEvent, AuditLayer, AuditPipeline, AuditPipelineConfig, AuditSink, Error,
    ErrorKind, FileSink, FileSinkConfig, MemorySink, Outcome, Overflow,
};
use tower::ServiceExt;

/// Blocks every write until released.
#[derive(Clone, Default)]
struct Hanging(Arc<(Mutex<bool>, Condvar)>, Arc<AtomicUsize>);

impl Hanging {
    fn release(&self) {
        *self.0 .0.lock().unwrap() = true;
        self.0 .1.notify_all();
    }

    /// Waits until the writer is stuck inside the sink.
    async fn entered(&self) {
        for _ in 0..400 {
            if self.1.load(Ordering::SeqCst) > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("the writer never reached the sink");
    }
}

impl AuditSink for Hanging {
    fn write(&mut self, _: &[AuditEvent]) -> Result<(), Error> {
        self.1.fetch_add(1, Ordering::SeqCst);
        let (lock, cv) = &*self.0;
        let mut released = lock.lock().unwrap();
        while !*released {
            released = cv.wait(released).unwrap();
        }
        Ok(())
    }
}

struct Failing;
impl AuditSink for Failing {
    fn write(&mut self, _: &[AuditEvent]) -> Result<(), Error> {
        Err(Error::sink("disk on fire"))
    }
}

/// Panics on its first write, then works.
struct PanicsOnce(Arc<AtomicUsize>, MemorySink);
impl AuditSink for PanicsOnce {
    fn write(&mut self, events: &[AuditEvent]) -> Result<(), Error> {
        if self.0.fetch_add(1, Ordering::SeqCst) == 0 {
            panic!("sink bug");
        }
        self.1.write(events)
    }
}

fn app(pipeline: &AuditPipeline) -> axum::Router {
    axum::Router::new()
        .route("/deny", get(|| async { http::StatusCode::FORBIDDEN }))
        .layer(AuditLayer::new(pipeline.clone(), AuditConfig::default()))
}

async fn deny(app: &axum::Router) -> http::StatusCode {
    let request = http::Request::get("/deny")
        .body(axum::body::Body::empty())
        .unwrap();
    tokio::time::timeout(Duration::from_secs(2), app.clone().oneshot(request))
        .await
        .expect("a request never waits on a hung sink")
        .unwrap()
        .status()
}

fn event() -> AuditEvent {
    AuditEvent::builder("test", Outcome::Denied).build()
}

#[tokio::test]
async fn a_hanging_sink_drops_and_counts_without_slowing_requests() {
    let sink = Hanging::default();
    let mut registry = Registry::default();
    let pipeline = AuditPipeline::new(
        sink.clone(),
        AuditPipelineConfig::default().capacity(10),
        &mut registry,
    )
    .unwrap();
    let app = app(&pipeline);
    // One event takes the writer into the sink, where it hangs.
    assert_eq!(deny(&app).await, 403);
    sink.entered().await;
    for _ in 0..100 {
        assert_eq!(
            deny(&app).await,
            403,
            "requests are answered while the sink hangs"
        );
    }
    assert_eq!(pipeline.produced(), 101);
    assert_eq!(
        pipeline.dropped(),
        90,
        "ten fit in the queue, the rest are counted"
    );
    sink.release();
    let report = pipeline.shutdown(Duration::from_secs(2));
    assert_eq!(
        (report.written, report.dropped),
        (11, 90),
        "produced = written + dropped"
    );
    assert_eq!(report.abandoned, 0);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains("audit_events_dropped_total{reason=\"queue_full\"}"),
        "{text}"
    );
    assert!(text.contains("audit_events_produced_total 101"));
}

#[tokio::test]
async fn fail_closed_answers_503_when_the_trail_cannot_take_the_event() {
    let sink = Hanging::default();
    let config = AuditPipelineConfig::default()
        .capacity(2)
        .overflow(Overflow::FailClosed);
    let pipeline = AuditPipeline::new(sink.clone(), config, &mut Registry::default()).unwrap();
    let app = app(&pipeline);
    assert_eq!(deny(&app).await, 403);
    sink.entered().await;
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(deny(&app).await.as_u16());
    }
    // The writer is stuck with the first event, the queue takes two more; then every
    // denial is refused.
    assert_eq!(statuses, [&[403, 403][..], &[503; 8][..]].concat());
    sink.release();
    pipeline.shutdown(Duration::from_secs(2));
}

#[tokio::test]
async fn block_mode_waits_its_timeout_then_drops() {
    let sink = Hanging::default();
    let config = AuditPipelineConfig::default()
        .capacity(1)
        .overflow(Overflow::Block(Duration::from_millis(50)));
    let pipeline = AuditPipeline::new(sink.clone(), config, &mut Registry::default()).unwrap();
    for _ in 0..5 {
        let _ = pipeline.record(event());
    }
    assert!(pipeline.dropped() >= 3);
    sink.release();
    let report = pipeline.shutdown(Duration::from_secs(2));
    assert_eq!(report.written + report.dropped, 5);
}

#[tokio::test]
async fn failing_and_panicking_sinks_are_counted_and_survived() {
    let pipeline = AuditPipeline::new(
        Failing,
        AuditPipelineConfig::default(),
        &mut Registry::default(),
    )
    .unwrap();
    for _ in 0..10 {
        pipeline.record(event()).unwrap();
    }
    let report = pipeline.shutdown(Duration::from_secs(2));
    assert_eq!((report.written, report.dropped), (0, 10));

    let memory = MemorySink::new();
    let pipeline = AuditPipeline::new(
        PanicsOnce(Arc::new(AtomicUsize::new(0)), memory.clone()),
        AuditPipelineConfig::default(),
        &mut Registry::default(),
    )
    .unwrap();
    pipeline.record(event()).unwrap();
    // Let the first batch (and its panic) happen alone.
    for _ in 0..100 {
        if pipeline.dropped() == 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    for _ in 0..5 {
        pipeline.record(event()).unwrap();
    }
    let report = pipeline.shutdown(Duration::from_secs(2));
    assert_eq!(
        (report.written, report.dropped),
        (5, 1),
        "the writer survived the panic"
    );
    let seqs: Vec<u64> = memory.events().iter().map(AuditEvent::seq).collect();
    assert_eq!(seqs, vec![2, 3, 4, 5, 6], "the gap at 1 shows the loss");
}

#[tokio::test]
async fn shutdown_writes_every_queued_event() {
    /// A slow file: 2 ms a batch.
    struct Slow(FileSink);
    impl AuditSink for Slow {
        fn write(&mut self, events: &[AuditEvent]) -> Result<(), Error> {
            std::thread::sleep(Duration::from_millis(2));
            self.0.write(events)
        }
        fn flush(&mut self) -> Result<(), Error> {
            self.0.flush()
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let sink = Slow(FileSink::open(&path, FileSinkConfig::default()).unwrap());
    let pipeline = AuditPipeline::new(
        sink,
        AuditPipelineConfig::default(),
        &mut Registry::default(),
    )
    .unwrap();
    for _ in 0..5000 {
        pipeline.record(event()).unwrap();
    }
    let report = pipeline.shutdown(Duration::from_secs(10));
    assert_eq!(
        (report.written, report.dropped, report.abandoned),
        (5000, 0, 0)
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap().lines().count(),
        5000
    );
    assert_eq!(
        pipeline.record(event()).map_err(|e| e.kind()),
        Err(ErrorKind::Closed)
    );
}

#[tokio::test]
async fn shutdown_with_a_hung_sink_counts_what_it_abandons() {
    let sink = Hanging::default();
    let pipeline = AuditPipeline::new(
        sink.clone(),
        AuditPipelineConfig::default(),
        &mut Registry::default(),
    )
    .unwrap();
    for _ in 0..50 {
        pipeline.record(event()).unwrap();
    }
    let started = Instant::now();
    let report = pipeline.shutdown(Duration::from_millis(200));
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(
        report.abandoned, 50,
        "the batch stuck in the sink is counted"
    );
    assert_eq!((report.written, report.dropped), (0, 50));
    // If the sink wakes up later, nothing is counted twice.
    sink.release();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(pipeline.written() + pipeline.dropped(), 50);
}
