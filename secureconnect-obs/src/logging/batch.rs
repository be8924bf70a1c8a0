//! [`BatchWriter`]: log lines handed to a writer thread over a bounded channel and
//! written in batches, one `write` per batch, so that a request never waits on a
//! syscall for its line (and never blocks on a stalled reader: lines that do not fit
//! are dropped and counted).

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

use crate::Error;

/// Settings of a [`BatchWriter`].
///
/// ```
/// use secureconnect_obs::logging::BatchWriterConfig;
///
/// let config = BatchWriterConfig::default().capacity(4096).batch_bytes(32 * 1024);
/// # let _ = config;
/// ```
#[derive(Clone, Copy, Debug)]
pub struct BatchWriterConfig {
    capacity: usize,
    batch_bytes: usize,
    shutdown_timeout: Duration,
}

impl Default for BatchWriterConfig {
    fn default() -> Self {
        Self {
            capacity: 8192,
            batch_bytes: 64 * 1024,
            shutdown_timeout: Duration::from_secs(5),
        }
    }
}

impl BatchWriterConfig {
    /// How many lines may wait for the writer thread (default 8192, at least 1); a
    /// line that finds the queue full is dropped and counted in
    /// `log_lines_dropped_total`.
    pub fn capacity(mut self, lines: usize) -> Self {
        self.capacity = lines.max(1);
        self
    }

    /// How many bytes one `write` carries at most (default 64 KiB, at least 1; a
    /// longer line is written alone).
    pub fn batch_bytes(mut self, bytes: usize) -> Self {
        self.batch_bytes = bytes.max(1);
        self
    }

    /// How long dropping the [`BatchWriter`] waits for the queued lines to be written
    /// (default 5 s): a reader that never reads delays the exit by this much at most.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }
}

enum Message {
    Line(Vec<u8>),
    /// Write what is queued, then stop.
    Shutdown,
}

/// What the handles and the thread share.
struct Shared<W> {
    lines: Sender<Message>,
    /// Line buffers written and handed back for reuse.
    pool: Receiver<Vec<u8>>,
    dropped: Counter,
    /// Set once the writer thread stopped: lines are then written on the caller's thread.
    closed: AtomicBool,
    out: Mutex<W>,
}

/// A writer thread that writes log lines in batches.
///
/// [`lines`](Self::lines) gives the handle that loggers write to (a
/// [`MakeWriter`](tracing_subscriber::fmt::MakeWriter) and an [`io::Write`]): each
/// `write` is one line, copied into a buffer taken from a pool of reused buffers and
/// queued; the thread takes whatever is queued, up to
/// [`batch_bytes`](BatchWriterConfig::batch_bytes), and writes it with one call. A
/// line that finds the queue full is dropped and counted in
/// `log_lines_dropped_total`: a reader that stops reading (a full pipe) costs lines,
/// never a blocked request. Dropping the `BatchWriter` writes what is queued (waiting
/// at most [`shutdown_timeout`](BatchWriterConfig::shutdown_timeout)); lines written
/// after that go straight to the output, on the caller's thread.
///
/// ```
/// use prometheus_client::registry::Registry;
/// use secureconnect_obs::logging::{BatchWriter, BatchWriterConfig};
/// use secureconnect_obs::JsonLayer;
/// use tracing_subscriber::layer::SubscriberExt;
///
/// let mut registry = Registry::default();
/// let writer = BatchWriter::new(std::io::stdout(), BatchWriterConfig::default(), &mut registry)?;
/// let subscriber = tracing_subscriber::registry().with(JsonLayer::new("auth", writer.lines()));
/// tracing::subscriber::with_default(subscriber, || tracing::info!("hello"));
/// drop(writer); // the line is written by now
/// # Ok::<(), secureconnect_obs::Error>(())
/// ```
pub struct BatchWriter<W: Write + Send + 'static> {
    shared: Arc<Shared<W>>,
    thread: Option<JoinHandle<()>>,
    done: Receiver<()>,
    shutdown_timeout: Duration,
}

impl<W: Write + Send + 'static> std::fmt::Debug for BatchWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchWriter")
            .field("lines_dropped", &self.lines_dropped())
            .finish_non_exhaustive()
    }
}

impl<W: Write + Send + 'static> BatchWriter<W> {
    /// Starts the writer thread writing to `out`, and registers
    /// `log_lines_dropped_total` in `registry`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::LogWriter`](crate::ErrorKind::LogWriter) if the thread cannot be
    /// started.
    pub fn new(out: W, config: BatchWriterConfig, registry: &mut Registry) -> Result<Self, Error> {
        let (lines, queue) = crossbeam_channel::bounded(config.capacity);
        let (recycle, pool) = crossbeam_channel::bounded(config.capacity);
        let (done_tx, done) = crossbeam_channel::bounded(1);
        let dropped = Counter::default();
        registry.register(
            "log_lines_dropped",
            "Log lines dropped because the queue to the log writer was full",
            dropped.clone(),
        );
        let shared = Arc::new(Shared {
            lines,
            pool,
            dropped,
            closed: AtomicBool::new(false),
            out: Mutex::new(out),
        });
        let thread_shared = Arc::clone(&shared);
        let batch_bytes = config.batch_bytes;
        let thread = std::thread::Builder::new()
            .name("log-writer".to_owned())
            .spawn(move || {
                run(&thread_shared, &queue, &recycle, batch_bytes);
                let _ = done_tx.send(());
            })
            .map_err(Error::log_writer)?;
        Ok(Self {
            shared,
            thread: Some(thread),
            done,
            shutdown_timeout: config.shutdown_timeout,
        })
    }

    /// The handle loggers write lines to; cheap to clone.
    pub fn lines(&self) -> BatchLines<W> {
        BatchLines {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Lines dropped so far because the queue was full.
    pub fn lines_dropped(&self) -> u64 {
        self.shared.dropped.get()
    }

    /// The counter behind `log_lines_dropped_total`, to register elsewhere too.
    pub(crate) fn dropped_counter(&self) -> Counter {
        self.shared.dropped.clone()
    }
}

impl<W: Write + Send + 'static> Drop for BatchWriter<W> {
    fn drop(&mut self) {
        let sent = self
            .shared
            .lines
            .send_timeout(Message::Shutdown, self.shutdown_timeout);
        if sent.is_ok() && self.done.recv_timeout(self.shutdown_timeout).is_ok() {
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
        // A stalled thread is left behind: it holds nothing the process needs.
    }
}

/// The writer thread: a batch of what is queued, one write, buffers back to the pool.
fn run<W: Write>(
    shared: &Shared<W>,
    queue: &Receiver<Message>,
    recycle: &Sender<Vec<u8>>,
    batch_bytes: usize,
) {
    let mut batch = Vec::with_capacity(batch_bytes);
    let mut stop = false;
    while !stop {
        let first = match queue.recv_timeout(Duration::from_secs(1)) {
            Ok(message) => message,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Line(line) => {
                    batch.extend_from_slice(&line);
                    give_back(recycle, line);
                }
                Message::Shutdown => stop = true,
            }
            if batch.len() >= batch_bytes {
                break;
            }
            next = queue.try_recv().ok();
        }
        if stop {
            // What was queued before the shutdown is written with this batch.
            shared.closed.store(true, Ordering::Release);
            while let Ok(Message::Line(line)) = queue.try_recv() {
                batch.extend_from_slice(&line);
            }
        }
        write_batch(shared, &mut batch);
    }
}

fn write_batch<W: Write>(shared: &Shared<W>, batch: &mut Vec<u8>) {
    if batch.is_empty() {
        return;
    }
    let mut out = shared.out.lock().unwrap_or_else(|e| e.into_inner());
    // A failed write loses this batch, not the writer.
    let _ = out.write_all(batch).and_then(|()| out.flush());
    drop(out);
    batch.clear();
    if batch.capacity() > 1024 * 1024 {
        batch.shrink_to(64 * 1024);
    }
}

fn give_back(recycle: &Sender<Vec<u8>>, mut line: Vec<u8>) {
    if line.capacity() <= 16 * 1024 {
        line.clear();
        let _ = recycle.try_send(line);
    }
}

/// The handle of a [`BatchWriter`] that lines are written to (`&BatchLines`
/// implements [`io::Write`]): each `write` call is one line (as [`JsonLayer`](crate::JsonLayer) makes them), queued for the writer
/// thread or dropped and counted when the queue is full.
pub struct BatchLines<W: Write + Send + 'static> {
    shared: Arc<Shared<W>>,
}

impl<W: Write + Send + 'static> Clone for BatchLines<W> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<W: Write + Send + 'static> std::fmt::Debug for BatchLines<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchLines").finish_non_exhaustive()
    }
}

impl<W: Write + Send + 'static> Write for &BatchLines<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let shared = &*self.shared;
        if shared.closed.load(Ordering::Acquire) {
            let mut out = shared.out.lock().unwrap_or_else(|e| e.into_inner());
            out.write_all(buf)?;
            out.flush()?;
            return Ok(buf.len());
        }
        let mut line = shared.pool.try_recv().unwrap_or_default();
        line.extend_from_slice(buf);
        match shared.lines.try_send(Message::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                shared.dropped.inc();
            }
            Err(TrySendError::Disconnected(_)) => {
                // The thread stopped between the check and the send.
                let mut out = shared.out.lock().unwrap_or_else(|e| e.into_inner());
                out.write_all(buf)?;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a, W: Write + Send + 'static> tracing_subscriber::fmt::MakeWriter<'a> for BatchLines<W> {
    type Writer = &'a Self;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}
