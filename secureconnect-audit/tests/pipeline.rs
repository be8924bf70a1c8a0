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

/// A full queue: one event stuck in the hanging sink, `capacity` more queued.
async fn fill(pipeline: &AuditPipeline, sink: &Hanging, capacity: usize) {
    pipeline.record(event()).unwrap();
    sink.entered().await;
    for _ in 0..capacity {
        pipeline.record(event()).unwrap();
    }
}

#[tokio::test]
async fn block_mode_producers_wait_side_by_side_not_one_after_another() {
    let sink = Hanging::default();
    let timeout = Duration::from_millis(500);
    let config = AuditPipelineConfig::default()
        .capacity(1)
        .overflow(Overflow::Block(timeout));
    let pipeline = AuditPipeline::new(sink.clone(), config, &mut Registry::default()).unwrap();
    fill(&pipeline, &sink, 1).await;
    let waits: Vec<Duration> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let started = Instant::now();
                    let result = pipeline.record(event());
                    assert_eq!(result.map_err(|e| e.kind()), Err(ErrorKind::Dropped));
                    started.elapsed()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // Each waits its own timeout, at the same time as the others (holding the queue's
    // lock while waiting made the fourth wait four timeouts).
    for wait in &waits {
        assert!(
            *wait >= timeout && *wait < timeout * 2,
            "waits {waits:?}, timeout {timeout:?}"
        );
    }
    // Room that frees up while producers wait goes to them.
    let waiting = std::thread::scope(|s| {
        let producer = s.spawn(|| pipeline.record(event()));
        std::thread::sleep(Duration::from_millis(100));
        sink.release();
        producer.join().unwrap()
    });
    assert!(waiting.is_ok(), "{waiting:?}");
    let report = pipeline.shutdown(Duration::from_secs(2));
    assert_eq!((report.written, report.dropped), (3, 4));
}

#[test]
fn block_mode_parks_the_request_instead_of_stalling_the_runtime() {
    // One runtime thread: if the layer blocked it while waiting for room, nothing else
    // could run until the timeout.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let sink = Hanging::default();
        let config = AuditPipelineConfig::default()
            .capacity(1)
            .overflow(Overflow::Block(Duration::from_secs(30)));
        let pipeline = AuditPipeline::new(sink.clone(), config, &mut Registry::default()).unwrap();
        let app = app(&pipeline).route("/ok", get(|| async { "ok" }));
        fill(&pipeline, &sink, 1).await;
        let denial = {
            let app = app.clone();
            tokio::spawn(async move {
                let request = http::Request::get("/deny")
                    .body(axum::body::Body::empty())
                    .unwrap();
                app.oneshot(request).await.unwrap().status()
            })
        };
        // The denial runs until it waits for room.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let request = http::Request::get("/ok")
            .body(axum::body::Body::empty())
            .unwrap();
        assert_eq!(app.clone().oneshot(request).await.unwrap().status(), 200);
        assert!(
            !denial.is_finished(),
            "the denial waits for room while other requests are served"
        );
        sink.release();
        assert_eq!(denial.await.unwrap(), 403);
        let report = pipeline.shutdown(Duration::from_secs(2));
        assert_eq!(
            (report.written, report.dropped),
            (3, 0),
            "the waiting denial got its room"
        );
    });
}

#[tokio::test]
async fn fail_closed_refuses_before_the_handler_acts() {
    let sink = Hanging::default();
    let config = AuditPipelineConfig::default()
        .capacity(1)
        .overflow(Overflow::FailClosed);
    let mut registry = Registry::default();
    let pipeline = AuditPipeline::new(sink.clone(), config, &mut registry).unwrap();
    let writes = Arc::new(AtomicUsize::new(0));
    let app = {
        let writes = Arc::clone(&writes);
        axum::Router::new()
            .route(
                "/delete",
                axum::routing::post(move || async move {
                    // The handler commits its write, then the response is a denial.
                    writes.fetch_add(1, Ordering::SeqCst);
                    http::StatusCode::FORBIDDEN
                }),
            )
            .layer(AuditLayer::new(pipeline.clone(), AuditConfig::default()))
    };
    let delete = || async {
        let request = http::Request::post("/delete")
            .body(axum::body::Body::empty())
            .unwrap();
        app.clone().oneshot(request).await.unwrap().status()
    };
    fill(&pipeline, &sink, 1).await;
    assert_eq!(delete().await, 503);
    assert_eq!(
        writes.load(Ordering::SeqCst),
        0,
        "a refused request never reached its handler"
    );
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains("audit_requests_refused_total 1"), "{text}");
    sink.release();
    // Room again: the request runs and is recorded.
    for _ in 0..100 {
        if pipeline.written() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(delete().await, 403);
    assert_eq!(writes.load(Ordering::SeqCst), 1);
    let report = pipeline.shutdown(Duration::from_secs(2));
    assert_eq!((report.written, report.dropped), (3, 0));
}
