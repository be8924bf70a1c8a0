//! The file sink's integrity under sharing, crashes and a full disk: one chain per file
//! in a process, a torn end cut off and recorded at open, a failed write cut back so
//! the chain stays verifiable, another process kept out.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::files::{audit_verify, denials, events};
use prometheus_client::registry::Registry;
use secureconnect_audit::{
    AuditEvent, AuditPipeline, AuditPipelineConfig, AuditSink, ErrorKind, FileSink, FileSinkConfig,
    Format, Outcome,
};
use secureconnect_testkit::exposition::{parse, value};
use secureconnect_testkit::tmpfs::Tmpfs;

#[test]
fn a_file_opened_twice_in_one_process_is_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    std::os::unix::fs::symlink(dir.path(), dir.path().join("link")).unwrap();
    let mut a = FileSink::open(&path, FileSinkConfig::default()).unwrap();
    // The same file by another name.
    let mut b = FileSink::open(
        dir.path().join("link/./audit.jsonl"),
        FileSinkConfig::default(),
    )
    .unwrap();
    for round in 0..5 {
        a.write(&denials(2, &format!("a{round}-"))).unwrap();
        b.write(&denials(3, &format!("b{round}-"))).unwrap();
    }
    let verdict = audit_verify(&path, None, None);
    assert_eq!(verdict.code, 0, "{}", verdict.text);
    assert!(verdict.text.starts_with("ok: 25 lines"), "{}", verdict.text);
    assert_eq!(a.checkpoint(), b.checkpoint());

    // Another configuration on an open file is refused, clearly.
    let error = FileSink::open(&path, FileSinkConfig::default().format(Format::Ocsf)).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidConfig);
    assert!(
        error.to_string().contains("already open in this process"),
        "{error}"
    );
    // Once every sink on it is gone, the file can be opened afresh.
    drop((a, b));
    FileSink::open(&path, FileSinkConfig::default().fsync(true)).unwrap();
}

#[test]
fn pipelines_of_several_services_share_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let pipelines: Vec<AuditPipeline> = (0..4)
        .map(|_| {
            let sink = FileSink::open(&path, FileSinkConfig::default()).unwrap();
            AuditPipeline::new(
                sink,
                AuditPipelineConfig::default().batch(7),
                &mut Registry::default(),
            )
            .unwrap()
        })
        .collect();
    std::thread::scope(|s| {
        for (i, pipeline) in pipelines.iter().enumerate() {
            s.spawn(move || {
                for _ in 0..250 {
                    let event = AuditEvent::builder("http.request", Outcome::Denied)
                        .service(format!("service-{i}"))
                        .build();
                    pipeline.record(event).unwrap();
                }
            });
        }
    });
    for pipeline in &pipelines {
        assert_eq!(pipeline.shutdown(Duration::from_secs(5)).written, 250);
    }
    let verdict = audit_verify(&path, None, None);
    assert_eq!(verdict.code, 0, "{}", verdict.text);
    assert!(
        verdict.text.starts_with("ok: 1000 lines"),
        "{}",
        verdict.text
    );
    assert!(
        !verdict.text.contains("seq jumps"),
        "no seq gap per service: {}",
        verdict.text
    );
}

#[test]
fn a_torn_last_line_is_cut_off_and_the_loss_recorded_in_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let (path, cp) = (dir.path().join("audit.jsonl"), dir.path().join("cp"));
    let config = FileSinkConfig::default().checkpoint_file(&cp);
    FileSink::open(&path, config.clone())
        .unwrap()
        .write(&denials(5, "before-"))
        .unwrap();
    // What a crash in the middle of a write leaves: the start of a line.
    let torn = br#"{"schema_version":1,"seq":6,"time":"2026-"#;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all_at_end(torn);
    FileSink::open(&path, config)
        .unwrap()
        .write(&denials(2, "after-"))
        .unwrap();

    let verdict = audit_verify(&path, Some(&cp), None);
    assert_eq!(verdict.code, 0, "{}", verdict.text);
    let events = events(&path);
    assert_eq!(events.len(), 5 + 1 + 2);
    let note = &events[5];
    assert_eq!(note["action"], "audit.recovered");
    assert_eq!(note["outcome"], "error");
    assert_eq!(note["reason"]["code"], "torn_tail");
    let text = note["reason"]["text"].as_str().unwrap();
    assert!(
        text.starts_with(&format!("{} bytes lost", torn.len())),
        "{text}"
    );
    assert_eq!(events[6]["resource"], "file:after-0");
}

trait AppendAll {
    fn write_all_at_end(self, bytes: &[u8]);
}

impl AppendAll for std::fs::File {
    fn write_all_at_end(mut self, bytes: &[u8]) {
        std::io::Write::write_all(&mut self, bytes).unwrap();
    }
}

#[test]
fn a_full_disk_loses_batches_not_the_chain() {
    let Some(fs) = Tmpfs::mount(256 * 1024) else {
        return;
    };
    let path = fs.path().join("audit.jsonl");
    let checkpoint_dir = tempfile::tempdir().unwrap();
    let cp = checkpoint_dir.path().join("cp");
    let mut registry = Registry::default();
    let sink = FileSink::open(&path, FileSinkConfig::default().checkpoint_file(&cp)).unwrap();
    let handle = sink.clone();
    let pipeline = AuditPipeline::new(sink, AuditPipelineConfig::default(), &mut registry).unwrap();
    let record = |n: usize| {
        for event in denials(n, "") {
            // The producer is never refused: a full disk costs events, not requests.
            pipeline.record(event).unwrap();
        }
        settle(&pipeline);
    };
    record(20);
    let before = std::fs::metadata(&path).unwrap().len();
    assert_eq!(handle.checkpoint().lines, 20);

    let filler = fs.fill("filler");
    // Batches large enough to be written in part before the disk is full.
    record(400);
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        before,
        "a failed write is cut back to the last whole line"
    );
    assert_eq!(handle.checkpoint().lines, 20, "nothing was committed");
    assert_eq!(pipeline.written(), 20);
    assert_eq!(pipeline.dropped(), 400);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let samples = parse(&text);
    assert_eq!(
        value(
            &samples,
            "audit_events_dropped_total",
            &[("reason", "sink_error")]
        ),
        Some(400.0),
        "{text}"
    );
    assert!(value(&samples, "audit_sink_errors_total", &[]).unwrap() >= 1.0);
    let verdict = audit_verify(&path, Some(&cp), None);
    assert_eq!(
        verdict.code, 0,
        "verifiable while the disk is full: {}",
        verdict.text
    );

    std::fs::remove_file(filler).unwrap();
    record(30);
    assert_eq!(pipeline.written(), 50);
    pipeline.shutdown(Duration::from_secs(5));
    let verdict = audit_verify(&path, Some(&cp), None);
    assert_eq!(verdict.code, 0, "{}", verdict.text);
    assert!(verdict.text.starts_with("ok: 50 lines"), "{}", verdict.text);
}

/// Waits until the pipeline's writer has taken care of everything produced.
fn settle(pipeline: &AuditPipeline) {
    for _ in 0..500 {
        if pipeline.written() + pipeline.dropped() == pipeline.produced() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("the audit writer did not catch up");
}

#[test]
fn another_process_cannot_write_the_same_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    std::fs::write(&path, b"").unwrap();
    // flock(1) holds the same advisory lock a FileSink takes, in another process
    // (`-o`: not in the `sleep` it runs, so that killing it frees the file).
    let mut holder = Command::new("flock")
        .arg("-o")
        .arg(&path)
        .args(["sleep", "30"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_until_locked(&path);
    let error = FileSink::open(&path, FileSinkConfig::default()).unwrap_err();
    assert!(error.is_locked(), "{error}");
    assert!(error.to_string().contains("another process"), "{error}");
    holder.kill().unwrap();
    holder.wait().unwrap();
    FileSink::open(&path, FileSinkConfig::default()).unwrap();
}

fn wait_until_locked(path: &Path) {
    for _ in 0..200 {
        let free = Command::new("flock")
            .args(["-n"])
            .arg(path)
            .arg("true")
            .status()
            .unwrap()
            .success();
        if !free {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("flock never took the lock");
}
