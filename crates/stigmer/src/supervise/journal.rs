//! The server's output: what `stigmer server logs` reads.
//!
//! Every line a service writes, and every message of stigmer's own, is kept
//! with the time it was read, in a ring per source of at most
//! [`LINES_PER_SOURCE`] lines and [`BYTES_PER_SOURCE`] bytes; older lines
//! go first. Followers (`logs -f`) get each new line through a bounded
//! broadcast; one that cannot keep up misses lines and is told how many,
//! and never slows the services.
//!
//! Where the server has a private folder ([`Journal::keep_in`]: its
//! `run/`), every line is also appended, as one JSON object, to
//! [`LOG_FILE`] there, by a thread of its own: at [`MAX_LOG_FILE`] bytes
//! the file becomes [`OLD_LOG_FILE`] (the previous one goes), so the two
//! never hold more than twice that. A disk too slow or full loses lines
//! from the file (and says so in it, and once in the ring), never stalls a
//! service. [`read_files`] reads them back once the server is gone. With
//! nowhere to write (a read-only root) the ring is all there is.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{self, BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::broadcast;

/// The most lines kept per source (a service, or stigmer itself).
pub const LINES_PER_SOURCE: usize = 2000;
/// The most bytes of lines kept per source.
pub const BYTES_PER_SOURCE: usize = 1 << 20;
/// The source name of stigmer's own messages.
pub const OWN: &str = "stigmer";
/// Lines a follower may fall behind by before it misses some.
const FOLLOW_BACKLOG: usize = 4096;
/// The log file in the server's folder.
pub const LOG_FILE: &str = "server.log";
/// The log file before the last rotation.
pub const OLD_LOG_FILE: &str = "server.log.1";
/// The size at which the log file is rotated.
pub const MAX_LOG_FILE: u64 = 8 << 20;
/// Lines the file writer may fall behind by before lines are dropped.
const FILE_BACKLOG: usize = 16 * 1024;

/// Which stream a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// The service's standard output.
    Stdout,
    /// The service's standard error, or stigmer's own messages.
    Stderr,
}

/// One line, as kept.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct Entry {
    /// When stigmer read it.
    #[serde(with = "rfc3339")]
    pub at: SystemTime,
    /// The service, or [`OWN`] for stigmer's own messages.
    pub source: String,
    /// Its stream.
    pub stream: Stream,
    /// The line, without its newline (bytes that are not UTF-8 replaced).
    pub line: String,
}

/// A handle on a server's journal; clones share it.
#[derive(Clone, Debug)]
pub struct Journal {
    inner: Arc<Mutex<Rings>>,
    follow: broadcast::Sender<Arc<Entry>>,
    /// The log file's writer, once [`Journal::keep_in`] started one.
    file: Arc<Mutex<Option<SyncSender<Arc<Entry>>>>>,
    /// Lines the writer could not take.
    dropped: Arc<AtomicU64>,
    /// Told by the writer once it has written everything and ended.
    done: Arc<Mutex<Option<Receiver<()>>>>,
}

#[derive(Debug, Default)]
struct Rings {
    by_source: HashMap<String, Ring>,
    /// Sources in the order first seen, so a merged read is stable.
    order: Vec<String>,
    /// Counts every line ever recorded: merges keep their order.
    seq: u64,
}

#[derive(Debug, Default)]
struct Ring {
    lines: VecDeque<(u64, Arc<Entry>)>,
    bytes: usize,
}

impl Default for Journal {
    fn default() -> Journal {
        Journal::new()
    }
}

impl Journal {
    /// An empty journal.
    pub fn new() -> Journal {
        let (follow, _) = broadcast::channel(FOLLOW_BACKLOG);
        Journal {
            inner: Arc::default(),
            follow,
            file: Arc::default(),
            dropped: Arc::default(),
            done: Arc::default(),
        }
    }

    /// Appends every line from now on to [`LOG_FILE`] in `dir` (a private
    /// folder of the server's), rotated at [`MAX_LOG_FILE`].
    pub fn keep_in(&self, dir: &Path) {
        let (tx, rx) = std::sync::mpsc::sync_channel(FILE_BACKLOG);
        let dir = dir.to_owned();
        // The writer notes its troubles in the ring only, never to itself.
        let ring = Journal { file: Arc::default(), done: Arc::default(), ..self.clone() };
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let spawned =
            std::thread::Builder::new().name("stigmer-log-file".into()).spawn(move || {
                write_files(&dir, &rx, &ring);
                let _ = done_tx.send(());
            });
        if spawned.is_ok() {
            *self.file.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
            *self.done.lock().unwrap_or_else(|p| p.into_inner()) = Some(done_rx);
        }
    }

    /// Stops writing the log file, once what was recorded is written (or
    /// `within` has passed: a stuck disk does not hold the server's exit).
    pub fn close_file(&self, within: Duration) {
        drop(self.file.lock().unwrap_or_else(|p| p.into_inner()).take());
        if let Some(done) = self.done.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = done.recv_timeout(within);
        }
    }

    /// Records a line of `source` read now.
    pub fn record(&self, source: &str, stream: Stream, line: &[u8]) {
        let mut text = String::from_utf8_lossy(line).into_owned();
        if text.ends_with('\n') {
            text.pop();
        }
        let entry = Arc::new(Entry {
            at: SystemTime::now(),
            source: source.to_owned(),
            stream,
            line: text,
        });
        {
            let mut rings = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            rings.seq += 1;
            let seq = rings.seq;
            if !rings.by_source.contains_key(source) {
                rings.order.push(source.to_owned());
            }
            let ring = rings.by_source.entry(source.to_owned()).or_default();
            ring.bytes += entry.line.len();
            ring.lines.push_back((seq, Arc::clone(&entry)));
            while ring.lines.len() > LINES_PER_SOURCE
                || (ring.bytes > BYTES_PER_SOURCE && ring.lines.len() > 1)
            {
                if let Some((_, old)) = ring.lines.pop_front() {
                    ring.bytes -= old.line.len();
                }
            }
            // Under the lock, so that `tail_and_follow` sees each line in
            // exactly one of its two halves. Nobody following is fine.
            let _ = self.follow.send(Arc::clone(&entry));
        }
        if let Some(file) = &*self.file.lock().unwrap_or_else(|p| p.into_inner()) {
            if let Err(TrySendError::Full(_)) = file.try_send(entry) {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Records one of stigmer's own messages (one or more lines, maybe
    /// coloured for a terminal: the colours are left out).
    pub fn record_own(&self, message: &[u8]) {
        let plain = without_escapes(message);
        for line in plain.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            self.record(OWN, Stream::Stderr, without_timestamp(line));
        }
    }

    /// The last `n` lines of `sources` (every source when empty), oldest
    /// first, interleaved in the order they were read.
    pub fn tail(&self, sources: &[String], n: usize) -> Vec<Arc<Entry>> {
        let rings = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        Journal::tail_of(&rings, sources, n)
    }

    /// [`Journal::tail`], and every line recorded after it: none is in
    /// both, none is missed.
    pub fn tail_and_follow(
        &self,
        sources: &[String],
        n: usize,
    ) -> (Vec<Arc<Entry>>, broadcast::Receiver<Arc<Entry>>) {
        let rings = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        (Journal::tail_of(&rings, sources, n), self.follow.subscribe())
    }

    fn tail_of(rings: &Rings, sources: &[String], n: usize) -> Vec<Arc<Entry>> {
        let mut picked: Vec<&(u64, Arc<Entry>)> = rings
            .order
            .iter()
            .filter(|s| sources.is_empty() || sources.contains(s))
            .filter_map(|s| rings.by_source.get(s))
            .flat_map(|ring| ring.lines.iter().rev().take(n))
            .collect();
        picked.sort_unstable_by_key(|(seq, _)| *seq);
        let skip = picked.len().saturating_sub(n);
        picked.into_iter().skip(skip).map(|(_, e)| Arc::clone(e)).collect()
    }
}

/// The log file writer: appends each entry of `rx` to `dir/LOG_FILE` as a
/// JSON line, rotating it at [`MAX_LOG_FILE`], until the journal is gone.
fn write_files(dir: &Path, rx: &Receiver<Arc<Entry>>, ring: &Journal) {
    let path = log_path(dir);
    let mut out: Option<(io::BufWriter<File>, u64)> = None;
    let mut failing = false;
    let mut last_try = std::time::Instant::now() - Duration::from_secs(60);
    while let Ok(entry) = rx.recv() {
        let mut batch = vec![entry];
        batch.extend(rx.try_iter().take(1024));
        let dropped = ring.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            let note = format!("{dropped} line(s) not written to this file: the disk was too slow");
            batch.insert(0, Arc::new(own_entry(note)));
        }
        if out.is_none() {
            // At most once a second while it fails (a full disk).
            if last_try.elapsed() < Duration::from_secs(1) {
                ring.dropped.fetch_add(batch.len() as u64, Ordering::Relaxed);
                continue;
            }
            last_try = std::time::Instant::now();
            match open_log(&path) {
                Ok((file, len)) => out = Some((io::BufWriter::new(file), len)),
                Err(e) => {
                    if !failing {
                        ring.record_own(format!("cannot write {}: {e}", path.display()).as_bytes());
                        failing = true;
                    }
                    ring.dropped.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    continue;
                }
            }
        }
        for entry in &batch {
            let Some((writer, len)) = &mut out else {
                ring.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let mut line = serde_json::to_vec(&**entry).unwrap_or_default();
            line.push(b'\n');
            let mut result = writer.write_all(&line);
            *len += line.len() as u64;
            let full = *len >= MAX_LOG_FILE;
            if full {
                result = result.and_then(|()| writer.flush());
            }
            match result {
                Err(e) => {
                    if !failing {
                        ring.record_own(format!("cannot write {}: {e}", path.display()).as_bytes());
                        failing = true;
                    }
                    out = None;
                }
                Ok(()) if full => {
                    out = None;
                    let _ = std::fs::rename(&path, dir.join(OLD_LOG_FILE));
                    // A new file at once: the batch goes on.
                    if let Ok((file, len)) = open_log(&path) {
                        out = Some((io::BufWriter::new(file), len));
                    }
                }
                Ok(()) => failing = false,
            }
        }
        if let Some((writer, _)) = &mut out {
            if writer.flush().is_err() {
                out = None;
            }
        }
    }
}

/// Opens the log file for appending (created private; never through a
/// symlink), and its length.
fn open_log(path: &Path) -> io::Result<(File, u64)> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)?;
    let len = file.metadata()?.len();
    Ok((file, len))
}

fn own_entry(line: String) -> Entry {
    Entry { at: SystemTime::now(), source: OWN.to_owned(), stream: Stream::Stderr, line }
}

/// The last `n` lines of `sources` (every source when empty) in the log
/// files of `dir`, oldest first: what a server that is gone left.
/// `Ok(None)` when there is no log file.
pub fn read_files(dir: &Path, sources: &[String], n: usize) -> io::Result<Option<Vec<Entry>>> {
    let mut kept: VecDeque<Entry> = VecDeque::new();
    let mut found = false;
    for name in [OLD_LOG_FILE, LOG_FILE] {
        let file = match File::open(dir.join(name)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        found = true;
        for line in io::BufReader::new(file).split(b'\n') {
            // A line cut short by a kill, or garbage: skipped.
            let Ok(entry) = serde_json::from_slice::<Entry>(&line?) else { continue };
            if sources.is_empty() || sources.contains(&entry.source) {
                kept.push_back(entry);
                if kept.len() > n {
                    kept.pop_front();
                }
            }
        }
    }
    Ok(found.then(|| kept.into()))
}

/// The log files a server of `dir` writes, for messages.
pub fn log_path(dir: &Path) -> PathBuf {
    dir.join(LOG_FILE)
}

/// `line` without the RFC 3339 timestamp stigmer's own lines start with
/// when stderr is not a terminal: the journal keeps the time of its own.
fn without_timestamp(line: &[u8]) -> &[u8] {
    let Some(space) = line.iter().position(|&b| b == b' ') else { return line };
    let stamp = std::str::from_utf8(&line[..space]).ok();
    if stamp.is_some_and(|s| s.ends_with('Z') && humantime::parse_rfc3339(s).is_ok()) {
        let rest = &line[space..];
        let start = rest.iter().position(|&b| b != b' ').unwrap_or(rest.len());
        &rest[start..]
    } else {
        line
    }
}

/// `text` without its terminal escape sequences (`ESC [ ... final`).
fn without_escapes(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.iter();
    while let Some(&b) = bytes.next() {
        if b != 0x1b {
            out.push(b);
            continue;
        }
        if bytes.clone().next() == Some(&b'[') {
            bytes.next();
            // Parameters and intermediates, up to the final byte.
            for &c in bytes.by_ref() {
                if (0x40..=0x7e).contains(&c) {
                    break;
                }
            }
        }
    }
    out
}

/// `SystemTime` as an RFC 3339 UTC string with milliseconds.
mod rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize as _, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(at: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_millis(*at))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_rfc3339(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_interleave_in_order_and_rings_are_bounded() {
        let j = Journal::new();
        j.record("a", Stream::Stdout, b"a1");
        j.record("b", Stream::Stderr, b"b1\n");
        j.record("a", Stream::Stdout, b"a2");
        j.record_own(b"\x1b[32m own\x1b[0m\nmessage\n");
        let lines = |sources: &[&str], n| -> Vec<String> {
            let sources: Vec<String> = sources.iter().map(|s| s.to_string()).collect();
            j.tail(&sources, n).iter().map(|e| format!("{}:{}", e.source, e.line)).collect()
        };
        assert_eq!(lines(&[], 10), ["a:a1", "b:b1", "a:a2", "stigmer: own", "stigmer:message"]);
        assert_eq!(lines(&[], 2), ["stigmer: own", "stigmer:message"]);
        assert_eq!(lines(&["a", "b"], 2), ["b:b1", "a:a2"]);
        assert_eq!(lines(&["nobody"], 5), Vec::<String>::new());

        for i in 0..LINES_PER_SOURCE + 10 {
            j.record("flood", Stream::Stdout, format!("{i}").as_bytes());
        }
        let kept = j.tail(&["flood".into()], usize::MAX);
        assert_eq!(kept.len(), LINES_PER_SOURCE);
        assert_eq!(kept[0].line, "10");
        // Another source's lines are not pushed out by the flood.
        assert_eq!(lines(&["a"], 10), ["a:a1", "a:a2"]);

        let big = vec![b'x'; BYTES_PER_SOURCE / 4 + 1];
        for _ in 0..8 {
            j.record("big", Stream::Stdout, &big);
        }
        assert_eq!(j.tail(&["big".into()], usize::MAX).len(), 3);
    }

    #[test]
    fn own_lines_keep_one_timestamp() {
        let j = Journal::new();
        j.record_own(b"2026-12-02T18:21:22.560302Z  INFO api: started\nno stamp here\n");
        let lines: Vec<String> = j.tail(&[], 10).iter().map(|e| e.line.clone()).collect();
        assert_eq!(lines, ["INFO api: started", "no stamp here"]);
    }

    #[test]
    fn the_log_file_has_every_line_survives_the_server_and_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::new();
        j.keep_in(dir.path());
        j.record("api", Stream::Stdout, b"one");
        j.record("db", Stream::Stderr, b"two");
        j.record("api", Stream::Stdout, b"three");
        j.close_file(Duration::from_secs(10));
        j.record("api", Stream::Stdout, b"after the close: not in the file");
        let read = |sources: &[&str], n| -> Vec<String> {
            let sources: Vec<String> = sources.iter().map(|s| s.to_string()).collect();
            let entries = read_files(dir.path(), &sources, n).unwrap().unwrap();
            entries.iter().map(|e| format!("{}:{}", e.source, e.line)).collect()
        };
        assert_eq!(read(&[], 10), ["api:one", "db:two", "api:three"]);
        assert_eq!(read(&["api"], 1), ["api:three"]);
        let mode = std::fs::metadata(dir.path().join(LOG_FILE)).unwrap().permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
        // A line cut short by a kill is skipped, the rest still read.
        let mut file =
            std::fs::OpenOptions::new().append(true).open(dir.path().join(LOG_FILE)).unwrap();
        file.write_all(b"{\"at\":\"2026-").unwrap();
        assert_eq!(read(&[], 10).len(), 3);

        // Past MAX_LOG_FILE the file is rotated: two files at most.
        let j = Journal::new();
        j.keep_in(dir.path());
        let line = vec![b'x'; 64 * 1024];
        let n = (2 * MAX_LOG_FILE / line.len() as u64 + 8) as usize;
        for _ in 0..n {
            j.record("big", Stream::Stdout, &line);
        }
        j.close_file(Duration::from_secs(30));
        let size = |name| std::fs::metadata(dir.path().join(name)).map_or(0, |m| m.len());
        assert!(size(OLD_LOG_FILE) >= MAX_LOG_FILE, "rotated");
        assert!(size(OLD_LOG_FILE) < MAX_LOG_FILE + 2 * line.len() as u64);
        assert!(size(LOG_FILE) < MAX_LOG_FILE + 2 * line.len() as u64);
        assert_eq!(read(&["api"], 10), Vec::<String>::new(), "the oldest lines went");
    }

    #[test]
    fn a_log_file_that_is_a_symlink_is_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "untouched").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join(LOG_FILE)).unwrap();
        let j = Journal::new();
        j.keep_in(dir.path());
        j.record("api", Stream::Stdout, b"secret");
        j.close_file(Duration::from_secs(10));
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched");
        let own: Vec<String> = j.tail(&[OWN.into()], 10).iter().map(|e| e.line.clone()).collect();
        assert!(own.iter().any(|l| l.starts_with("cannot write")), "{own:?}");
    }

    #[test]
    fn followers_get_new_lines_and_entries_round_trip() {
        let j = Journal::new();
        j.record("a", Stream::Stdout, b"before");
        let (tail, mut rx) = j.tail_and_follow(&[], 10);
        assert_eq!(tail.len(), 1);
        j.record("a", Stream::Stdout, b"after \xff");
        let e = rx.try_recv().unwrap();
        assert!(rx.try_recv().is_err(), "each line once");
        assert_eq!(e.line, "after \u{fffd}");
        let json = serde_json::to_string(&*e).unwrap();
        let back: Entry = serde_json::from_str(&json).unwrap();
        let ms = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis();
        assert_eq!(ms(back.at), ms(e.at));
        assert_eq!(
            (back.source, back.stream, back.line),
            ("a".into(), Stream::Stdout, e.line.clone())
        );
        assert!(json.contains(r#""stream":"stdout""#), "{json}");
    }
}
