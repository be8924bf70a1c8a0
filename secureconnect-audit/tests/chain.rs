//! The hash chain (plain and keyed) and the `audit-verify` binary against edited,
//! deleted, reordered, inserted, rewritten and cut-off files.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::files::{audit_verify, lines, save};
use secureconnect_audit::chain::{ChainKey, Checkpoint};
use secureconnect_audit::{AuditEvent, AuditSink, FileSink, FileSinkConfig, Format, Outcome};

const KEY: &[u8] = b"0123456789abcdef0123456789abcdef-audit";

fn write_events(path: &Path, checkpoint: &Path, n: usize, config: FileSinkConfig) {
    let mut sink = FileSink::open(path, config.checkpoint_file(checkpoint)).unwrap();
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
    let verdict = audit_verify(path, checkpoint, None);
    assert!(matches!(verdict.code, 0 | 1), "{}", verdict.text);
    (verdict.code == 0, verdict.text)
}

#[test]
fn an_intact_chain_verifies_and_continues_across_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let (path, cp) = (dir.path().join("a.jsonl"), dir.path().join("a.checkpoint"));
    write_events(&path, &cp, 10, FileSinkConfig::default());
    write_events(&path, &cp, 5, FileSinkConfig::default()); // a restarted service appends
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
    write_events(
        &path,
        &cp,
        12,
        FileSinkConfig::default().format(Format::Ocsf),
    );
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
fn every_break_is_reported_not_only_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let (path, cp) = (dir.path().join("a.jsonl"), dir.path().join("a.checkpoint"));
    write_events(&path, &cp, 12, FileSinkConfig::default());
    let mut edited = lines(&path);
    edited[2] = edited[2].replace("file:2", "file:X");
    edited[8] = edited[8].replace("file:8", "file:Y");
    save(&path, &edited);
    let verdict = audit_verify(&path, None, None);
    assert_eq!(verdict.code, 1, "{}", verdict.text);
    assert!(
        verdict.text.contains("line 4:") && verdict.text.contains("line 10:"),
        "both edits are reported: {}",
        verdict.text
    );
    assert!(verdict.text.contains("2 break(s)"), "{}", verdict.text);
}

#[test]
fn a_keyed_chain_cannot_be_rewritten_without_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let (path, cp) = (dir.path().join("a.jsonl"), dir.path().join("a.checkpoint"));
    let keyed = FileSinkConfig::default().chain_key(ChainKey::new(KEY).unwrap());
    write_events(&path, &cp, 8, keyed.clone());
    write_events(&path, &cp, 4, keyed); // a restart continues the keyed chain
    let original = lines(&path);
    assert!(original.iter().all(|l| l.contains("\"prev_hmac\":")));

    let verdict = audit_verify(&path, Some(&cp), Some(KEY));
    assert_eq!(verdict.code, 0, "{}", verdict.text);
    assert!(
        verdict.text.starts_with("ok: 12 lines, keyed chain intact"),
        "{}",
        verdict.text
    );
    // Without the key nothing can be vouched for.
    let verdict = audit_verify(&path, None, None);
    assert_eq!(verdict.code, 1, "{}", verdict.text);
    assert!(verdict.text.contains("set AUDIT_KEY"), "{}", verdict.text);
    // Another key: every link fails.
    let verdict = audit_verify(
        &path,
        None,
        Some(b"another key, also thirty-two bytes long"),
    );
    assert_eq!(verdict.code, 1, "{}", verdict.text);
    let verdict = audit_verify(&path, None, Some(b"short"));
    assert_eq!(verdict.code, 2, "{}", verdict.text);
    assert!(
        verdict.text.contains("at least 32 bytes"),
        "{}",
        verdict.text
    );

    // The attacker edits line 3 and rebuilds a consistent chain the only way open to
    // them: plain SHA-256, as an unkeyed file would have. Without a key that passes;
    // with the key every forged line is reported.
    let mut forged = Vec::new();
    let mut prev = secureconnect_audit::chain::GENESIS.to_owned();
    for (i, line) in original.iter().enumerate() {
        let mut value: serde_json::Value = serde_json::from_str(line).unwrap();
        let object = value.as_object_mut().unwrap();
        object.remove("prev_hmac");
        if i == 2 {
            object.insert("outcome".into(), "allowed".into());
        }
        object.insert("prev_hash".into(), prev.clone().into());
        let text = value.to_string();
        prev = secureconnect_audit::chain::line_hash(text.as_bytes());
        forged.push(text);
    }
    save(&path, &forged);
    assert_eq!(
        audit_verify(&path, None, None).code,
        0,
        "an unkeyed chain can be forged"
    );
    let verdict = audit_verify(&path, None, Some(KEY));
    assert_eq!(verdict.code, 1, "{}", verdict.text);
    assert!(
        verdict.text.contains("lines 1-12: not keyed"),
        "{}",
        verdict.text
    );

    // An edit that keeps the keyed links breaks at the next line.
    let mut edited = original.clone();
    edited[2] = edited[2].replace("file:2", "file:X");
    save(&path, &edited);
    let verdict = audit_verify(&path, Some(&cp), Some(KEY));
    assert_eq!(verdict.code, 1, "{}", verdict.text);
    assert!(verdict.text.contains("line 4:"), "{}", verdict.text);
    // Rewriting the last line, whose link no later line carries: the keyed checkpoint
    // catches it, and cannot be recomputed without the key.
    let mut last = original.clone();
    last[11] = last[11].replace("file:3", "file:Z");
    save(&path, &last);
    let verdict = audit_verify(&path, Some(&cp), Some(KEY));
    assert_eq!(verdict.code, 1, "{}", verdict.text);
    assert!(verdict.text.contains("checkpoint"), "{}", verdict.text);
}

#[test]
fn a_keyed_chain_starts_in_a_new_file_and_keeps_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let (plain, keyed) = (
        dir.path().join("plain.jsonl"),
        dir.path().join("keyed.jsonl"),
    );
    let key = ChainKey::new(KEY).unwrap();
    let cp = dir.path().join("cp");
    write_events(&plain, &cp, 3, FileSinkConfig::default());
    write_events(
        &keyed,
        &cp,
        3,
        FileSinkConfig::default().chain_key(key.clone()),
    );

    let error =
        FileSink::open(&plain, FileSinkConfig::default().chain_key(key.clone())).unwrap_err();
    assert!(
        error.is_invalid() && error.to_string().contains("new file"),
        "{error}"
    );
    let error = FileSink::open(&keyed, FileSinkConfig::default()).unwrap_err();
    assert!(
        error.is_invalid() && error.to_string().contains("AUDIT_KEY"),
        "{error}"
    );
    let other = ChainKey::new(b"another key, also thirty-two bytes long").unwrap();
    let error = FileSink::open(&keyed, FileSinkConfig::default().chain_key(other)).unwrap_err();
    assert!(error.to_string().contains("does not match"), "{error}");
    // Unkeyed files of earlier versions verify as before.
    assert_eq!(audit_verify(&plain, None, None).code, 0);
    let error = FileSink::open(
        &plain,
        FileSinkConfig::default().hash_chain(false).chain_key(key),
    )
    .unwrap_err();
    assert!(error.is_invalid(), "{error}");
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
