//! The batched log writer over a real socket: lines arrive whole and in order, a
//! normal shutdown loses none, and a reader that stops reading costs counted lines,
//! never a blocked writer.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use secureconnect_obs::logging::{BatchWriter, BatchWriterConfig};
use secureconnect_obs::JsonLayer;
use tracing_subscriber::layer::SubscriberExt;

/// Reads the socket to its end on a thread of its own.
fn read_all(mut reader: UnixStream) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        reader.read_to_string(&mut text).unwrap();
        text
    })
}

/// `(thread, sequence)` of each line `"t<thread> n<sequence> …"`, asserting it is whole.
fn parse(line: &str) -> (usize, usize) {
    let mut parts = line.split(' ');
    let thread = parts
        .next()
        .unwrap()
        .strip_prefix('t')
        .unwrap()
        .parse()
        .unwrap();
    let seq = parts
        .next()
        .unwrap()
        .strip_prefix('n')
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(parts.next(), Some(&*"x".repeat(100)), "cut line {line:?}");
    (thread, seq)
}

#[test]
fn lines_from_several_threads_arrive_whole_in_order_and_none_lost_at_shutdown() {
    const THREADS: usize = 4;
    const LINES: usize = 20_000;
    let (out, reader) = UnixStream::pair().unwrap();
    let received = read_all(reader);
    let mut registry = Registry::default();
    let writer = BatchWriter::new(
        out,
        // Room for every line: nothing may be dropped.
        BatchWriterConfig::default()
            .capacity(THREADS * LINES)
            .batch_bytes(4096),
        &mut registry,
    )
    .unwrap();
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let lines = writer.lines();
            scope.spawn(move || {
                let padding = "x".repeat(100);
                for n in 0..LINES {
                    (&lines)
                        .write_all(format!("t{t} n{n} {padding}\n").as_bytes())
                        .unwrap();
                }
            });
        }
    });
    assert_eq!(writer.lines_dropped(), 0);
    // Dropped at once: whatever is still queued must be written now.
    drop(writer);
    let text = received.join().unwrap();
    assert!(text.ends_with('\n'));
    let mut next = [0usize; THREADS];
    for line in text.lines() {
        let (t, n) = parse(line);
        assert_eq!(n, next[t], "thread {t}: line {n} out of order");
        next[t] += 1;
    }
    assert_eq!(next, [LINES; THREADS], "lines lost");
}

#[test]
fn json_lines_logged_just_before_the_guard_drops_are_written() {
    let (out, reader) = UnixStream::pair().unwrap();
    let received = read_all(reader);
    let writer =
        BatchWriter::new(out, BatchWriterConfig::default(), &mut Registry::default()).unwrap();
    let subscriber = tracing_subscriber::registry().with(JsonLayer::new("auth", writer.lines()));
    tracing::subscriber::with_default(subscriber, || {
        for i in 0..1000 {
            tracing::info!(i, "request finished");
        }
    });
    drop(writer);
    let text = received.join().unwrap();
    let seen: Vec<u64> = text
        .lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            value["i"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(seen, (0..1000).collect::<Vec<_>>());
}

#[test]
fn a_reader_that_stops_reading_costs_counted_lines_not_a_blocked_writer() {
    const LINES: usize = 50_000;
    let (out, reader) = UnixStream::pair().unwrap();
    let mut registry = Registry::default();
    let writer = BatchWriter::new(
        out,
        BatchWriterConfig::default()
            .capacity(64)
            .shutdown_timeout(Duration::from_millis(200)),
        &mut registry,
    )
    .unwrap();
    let lines = writer.lines();
    // Far more than the socket buffer and the queue hold together, with nobody reading:
    // a writer that blocked would never finish (the deadline only detects a hang).
    let (done_tx, done) = mpsc::channel();
    let logger = std::thread::spawn(move || {
        let padding = "x".repeat(100);
        for n in 0..LINES {
            (&lines)
                .write_all(format!("t0 n{n} {padding}\n").as_bytes())
                .unwrap();
        }
        done_tx.send(()).unwrap();
    });
    done.recv_timeout(Duration::from_secs(60))
        .expect("the logger blocked on a stalled reader");
    logger.join().unwrap();
    let dropped = writer.lines_dropped();
    assert!(dropped > 0, "nothing dropped although nobody read");
    let mut exposition = String::new();
    prometheus_client::encoding::text::encode(&mut exposition, &registry).unwrap();
    assert!(
        exposition.contains(&format!("log_lines_dropped_total {dropped}\n")),
        "{exposition}"
    );
    // The shutdown gives up after its timeout instead of hanging on the stalled write.
    let (dropped_tx, dropped_rx) = mpsc::channel();
    std::thread::spawn(move || {
        drop(writer);
        dropped_tx.send(()).unwrap();
    });
    dropped_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("dropping the writer hung on a stalled reader");
    // What did get through is whole lines, in order, and no more than was not dropped.
    reader.set_nonblocking(true).unwrap();
    let mut bytes = Vec::new();
    let _ = (&reader).read_to_end(&mut bytes);
    let text = String::from_utf8(bytes).unwrap();
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    let mut last = None;
    let mut count = 0u64;
    for line in complete.lines() {
        let (_, n) = parse(line);
        assert!(last < Some(n), "line {n} after {last:?}");
        last = Some(n);
        count += 1;
    }
    assert!(count > 0, "nothing written at all");
    assert!(count + dropped <= LINES as u64);
}
