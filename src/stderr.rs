//! stigmer server's own messages on stderr, written by a thread of their
//! own so that the supervisor never waits on stderr: when stderr is a pipe
//! nobody reads, messages are dropped (and counted), never queued without
//! bound, and the event loop goes on.

use std::io::{self, Write as _};
use std::os::fd::AsFd as _;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::time::{Duration, Instant};

/// Messages waiting to be written, at most.
const QUEUE: usize = 1024;

enum Msg {
    Text(Vec<u8>),
    /// Answer once everything before it was written.
    Flush(SyncSender<()>),
}

static QUEUE_TX: OnceLock<SyncSender<Msg>> = OnceLock::new();
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Starts the writer thread. Once per process, after any fork.
pub(crate) fn start() {
    let (tx, rx) = mpsc::sync_channel::<Msg>(QUEUE);
    // Its own copy of descriptor 2, so std's stderr lock is never held by
    // a blocked write. A closed stderr: everything is dropped.
    let out = io::stderr().as_fd().try_clone_to_owned().map(std::fs::File::from).ok();
    let spawned = std::thread::Builder::new().name("stigmer-stderr".into()).spawn(move || {
        let mut out = out;
        for msg in rx {
            match msg {
                Msg::Text(bytes) => {
                    let Some(out) = &mut out else { continue };
                    let dropped = DROPPED.swap(0, Ordering::Relaxed);
                    if dropped > 0 {
                        let note = crate::logging::dropped_line(dropped);
                        let _ = out.write_all(note.as_bytes());
                    }
                    let _ = out.write_all(&bytes);
                }
                Msg::Flush(done) => {
                    let _ = done.send(());
                }
            }
        }
    });
    if spawned.is_ok() {
        let _ = QUEUE_TX.set(tx);
    }
}

/// Queues `bytes`; drops them when the queue is full. Writes directly
/// (blocking) when [`start`] was not called.
pub(crate) fn write(bytes: &[u8]) {
    match QUEUE_TX.get() {
        Some(tx) => match tx.try_send(Msg::Text(bytes.to_vec())) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {}
        },
        None => {
            let _ = io::stderr().write_all(bytes);
        }
    }
}

/// Waits at most `within` for everything queued so far to be written.
pub(crate) fn flush(within: Duration) {
    let Some(tx) = QUEUE_TX.get() else { return };
    let deadline = Instant::now() + within;
    let (done_tx, done) = mpsc::sync_channel(1);
    let mut msg = Msg::Flush(done_tx);
    loop {
        match tx.try_send(msg) {
            Ok(()) => break,
            Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                msg = back;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => return,
        }
    }
    let _ = done.recv_timeout(deadline.saturating_duration_since(Instant::now()));
}

/// A `tracing` writer: each event is one [`write`], and goes into the
/// server's journal too, if there is one.
pub(crate) struct Lossy(pub(crate) Option<stigmer::supervise::Journal>);

impl io::Write for Lossy {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        write(buf);
        if let Some(journal) = &self.0 {
            journal.record_own(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
