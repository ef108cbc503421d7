//! The server's recent output, held in memory: what `stigmer server logs`
//! reads.
//!
//! Every line a service writes, and every message of stigmer's own, is kept
//! with the time it was read, in a ring per source of at most
//! [`LINES_PER_SOURCE`] lines and [`BYTES_PER_SOURCE`] bytes; older lines
//! go first. Nothing is written to disk: a server on a read-only root keeps
//! its logs the same way, and they end with it. Followers (`logs -f`) get
//! each new line through a bounded broadcast; one that cannot keep up
//! misses lines and is told how many, and never slows the services.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::broadcast;

/// The most lines kept per source (a service, or stigmer itself).
pub const LINES_PER_SOURCE: usize = 2000;
/// The most bytes of lines kept per source.
pub const BYTES_PER_SOURCE: usize = 1 << 20;
/// The source name of stigmer's own messages.
pub const OWN: &str = "stigmer";
/// Lines a follower may fall behind by before it misses some.
const FOLLOW_BACKLOG: usize = 4096;

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
        Journal { inner: Arc::default(), follow }
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
            let _ = self.follow.send(entry);
        }
    }

    /// Records one of stigmer's own messages (one or more lines, maybe
    /// coloured for a terminal: the colours are left out).
    pub fn record_own(&self, message: &[u8]) {
        let plain = without_escapes(message);
        for line in plain.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            self.record(OWN, Stream::Stderr, line);
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
