//! The hash chain and the `audit-verify` binary against edited, deleted, reordered,
//! inserted and cut-off files.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use secureconnect_audit::chain::Checkpoint;
use secureconnect_audit::{AuditEvent, AuditSink, FileSink, FileSinkConfig, Format, Outcome};

fn write_events(path: &Path, checkpoint: &Path, n: usize, format: Format) {
    let mut sink = FileSink::open(
        path,
        FileSinkConfig::default()
            .format(format)
            .checkpoint_file(checkpoint),
    )
    .unwrap();
    let events: Vec<AuditEvent> = (0..n)
        .map(|i| {
            AuditEvent::builder("file.download", Outcome::Allowed)
                .resource(format!("file:{i}"))
                .build()
        })
        .collect();
    sink.write(&events).unwrap();
}

fn verify(path: &Path, checkpoint: Option<&Path>) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_audit-verify"));
    cmd.arg(path);
    if let Some(c) = checkpoint {
        cmd.arg("--checkpoint-file").arg(c);
    }
    let out = cmd.output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(matches!(out.status.code(), Some(0 | 1)), "{text}");
    (out.status.success(), text)
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn save(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

#[test]
fn an_intact_chain_verifies_and_continues_across_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let (path, cp) = (dir.path().join("a.jsonl"), dir.path().join("a.checkpoint"));
    write_events(&path, &cp, 10, Format::Native);
    write_events(&path, &cp, 5, Format::Native); // a restarted service appends
    let (ok, text) = verify(&path, Some(&cp));
    assert!(ok, "{text}");
    assert!(text.starts_with("ok: 15 lines"), "{text}");
    let checkpoint: Checkpoint = std::fs::read_to_string(&cp).unwrap().parse().unwrap();
    assert_eq!(checkpoint.lines, 15);
}

#[test]
fn every_kind_of_tampering_is_caught_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let (path, cp) = (dir.path().join("a.jsonl"), dir.path().join("a.checkpoint"));
    write_events(&path, &cp, 12, Format::Ocsf);
    let original = lines(&path);

    let mut edited = original.clone();
    edited[4] = edited[4].replace("file:4", "file:X");
    let mut deleted = original.clone();
    deleted.remove(4);
    let mut reordered = original.clone();
    reordered.swap(4, 5);
    let mut inserted = original.clone();
    // A forged line that even carries the right prev_hash for its place.
    let forged = original[4].replace("file:4", "file:forged");
    inserted.insert(5, forged);

    for (name, tampered, line) in [
        ("edited", &edited, 6),
        ("deleted", &deleted, 5),
        ("reordered", &reordered, 5),
        ("inserted", &inserted, 6),
    ] {
        save(&path, tampered);
        let (ok, text) = verify(&path, None);
        assert!(!ok, "{name} not caught");
        assert!(text.contains(&format!("line {line}:")), "{name}: {text}");
    }

    // A cut-off tail leaves a valid chain; the kept checkpoint catches it.
    save(&path, &original[..9]);
    let (ok, text) = verify(&path, None);
    assert!(ok, "the chain alone cannot see a cut tail: {text}");
    let (ok, text) = verify(&path, Some(&cp));
    assert!(!ok);
    assert!(text.contains("tail was cut off"), "{text}");

    // Rewriting the last line (no line after it to break) is caught by the checkpoint.
    let mut last = original.clone();
    last[11] = last[11].replace("file:11", "file:Y");
    save(&path, &last);
    let (ok, text) = verify(&path, Some(&cp));
    assert!(!ok, "{text}");
}

#[test]
fn ocsf_lines_carry_the_required_fields() {
    let http = AuditEvent::builder("http.request", Outcome::Denied)
        .http("GET", "/admin", Some(403))
        .client_ip("203.0.113.9".parse().unwrap())
        .request_id("r1")
        .build();
    let v = secureconnect_audit::ocsf::render(&http);
    for field in [
        "activity_id",
        "category_uid",
        "class_uid",
        "metadata",
        "severity_id",
        "time",
        "type_uid",
        "http_request",
        "web_resources",
    ] {
        assert!(v.get(field).is_some(), "6004 needs {field}: {v}");
    }
    assert_eq!(v["class_uid"], 6004);
    assert_eq!(v["activity_id"], 2, "Access Deny");
    assert_eq!(v["type_uid"], 600402);
    assert_eq!(v["http_response"]["code"], 403);
    assert_eq!(v["metadata"]["version"], "1.3.0");

    let file = AuditEvent::builder("file.delete", Outcome::Allowed)
        .actor(secureconnect_audit::Actor::user("u1"))
        .file(secureconnect_audit::FileInfo {
            id: "f1".into(),
            owner: Some("u1".into()),
            name: None,
            size: Some(3),
        })
        .build();
    let v = secureconnect_audit::ocsf::render(&file);
    for field in [
        "activity_id",
        "actor",
        "category_uid",
        "class_uid",
        "cloud",
        "file",
        "metadata",
        "severity_id",
        "src_endpoint",
        "time",
        "type_uid",
    ] {
        assert!(v.get(field).is_some(), "6006 needs {field}: {v}");
    }
    assert_eq!(
        (v["class_uid"].as_u64(), v["activity_id"].as_u64()),
        (Some(6006), Some(4))
    );
    assert_eq!(v["file"]["type_id"], 1);
    assert_eq!(v["actor"]["user"]["uid"], "u1");
}
