//! Service output: whole lines, prefixed with the service's name, through
//! one writer so lines of different services never interleave mid-line.
//!
//! Each service's stdout and stderr are read by a task that cuts the bytes
//! into lines (a line longer than [`MAX_LINE`] is cut into pieces) and sends
//! each to a bounded channel; one blocking thread writes them. When stdout is
//! slow the channel fills, the readers wait, and the services block on their
//! own writes: back-pressure, not unbounded memory. When stdout is never
//! read at all, only that thread waits forever; the supervisor does not
//! wait for it past `WRITER_GRACE`.

use std::io::{self, Write as _};
use std::os::fd::AsFd as _;

use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::sync::{mpsc, oneshot};

/// The longest line passed on whole; longer ones are cut.
pub(crate) const MAX_LINE: usize = 64 * 1024;

use super::journal::Journal;
pub(crate) use super::journal::Stream;

/// One line of a service's output, without its newline.
#[derive(Debug)]
pub(crate) struct Line {
    pub(crate) service: usize,
    pub(crate) stream: Stream,
    pub(crate) bytes: Vec<u8>,
}

/// How lines are written.
#[derive(Clone, Debug)]
pub(crate) struct Format {
    /// Service names, by index.
    pub(crate) names: Vec<String>,
    /// One JSON object per line instead of `name | line`.
    pub(crate) json: bool,
    /// Colour the names (stdout is a terminal and `NO_COLOR` is unset).
    pub(crate) color: bool,
}

const COLORS: [&str; 6] = ["36", "33", "32", "35", "34", "31"];

impl Format {
    /// Renders one line, newline included.
    pub(crate) fn render(&self, line: &Line) -> Vec<u8> {
        let name = &self.names[line.service];
        if self.json {
            let stream = match line.stream {
                Stream::Stdout => "stdout",
                Stream::Stderr => "stderr",
            };
            let mut out = serde_json::to_vec(&serde_json::json!({
                "service": name,
                "stream": stream,
                "line": String::from_utf8_lossy(&line.bytes),
            }))
            .expect("a JSON object always serialises");
            out.push(b'\n');
            return out;
        }
        let width = self.names.iter().map(String::len).max().unwrap_or(0);
        let mut out = Vec::with_capacity(width + line.bytes.len() + 16);
        if self.color {
            let color = COLORS[line.service % COLORS.len()];
            out.extend_from_slice(format!("\x1b[{color}m{name:<width$}\x1b[0m | ").as_bytes());
        } else {
            out.extend_from_slice(format!("{name:<width$} | ").as_bytes());
        }
        out.extend_from_slice(&line.bytes);
        out.push(b'\n');
        out
    }
}

/// Starts the writer thread; lines sent to the returned sender are written
/// to stdout in the order received. The thread ends when every sender is
/// dropped, and then says so through the returned receiver. It writes to
/// its own copy of the stdout descriptor, never through `std::io::stdout`,
/// so that a stdout nobody reads blocks this thread only: not the
/// supervisor, and not std's flush of stdout at exit.
pub(crate) fn writer(format: Format) -> io::Result<(mpsc::Sender<Line>, oneshot::Receiver<()>)> {
    let (tx, mut rx) = mpsc::channel::<Line>(1024);
    let (done, written) = oneshot::channel();
    // A closed stdout (no descriptor 1): lines are dropped.
    let out = io::stdout().as_fd().try_clone_to_owned().map(std::fs::File::from).ok();
    std::thread::Builder::new().name("stigmer-logs".into()).spawn(move || {
        let mut out = out.map(|f| io::BufWriter::with_capacity(64 * 1024, f));
        while let Some(line) = rx.blocking_recv() {
            let Some(out) = &mut out else { continue };
            let rendered = format.render(&line);
            // A closed stdout (`stigmer server | head`) must not stop the
            // services: drop what cannot be written.
            let _ = out.write_all(&rendered);
            if rx.is_empty() {
                let _ = out.flush();
            }
        }
        if let Some(out) = &mut out {
            let _ = out.flush();
        }
        let _ = done.send(());
    })?;
    Ok((tx, written))
}

/// Cuts a byte stream into lines.
#[derive(Default)]
pub(crate) struct Splitter {
    buf: Vec<u8>,
}

impl Splitter {
    /// Takes `bytes` and returns the lines they complete.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut lines = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                let mut line = std::mem::take(&mut self.buf);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                lines.push(line);
            } else {
                self.buf.push(b);
                if self.buf.len() == MAX_LINE {
                    lines.push(std::mem::take(&mut self.buf));
                }
            }
        }
        lines
    }

    /// The unfinished last line, if any, at the end of the stream.
    pub(crate) fn finish(self) -> Option<Vec<u8>> {
        (!self.buf.is_empty()).then_some(self.buf)
    }
}

/// Where [`pump`] puts a service's lines.
pub(crate) struct Sinks {
    /// Service `service`, called `name`.
    pub(crate) service: usize,
    pub(crate) name: String,
    /// To stdout, through the writer.
    pub(crate) tx: mpsc::Sender<Line>,
    /// What `stigmer server logs` reads.
    pub(crate) journal: Journal,
}

/// Reads `pipe` to its end, recording each line in the journal, sending it
/// to the writer and calling `seen` on it first (for `ready = { log = ...
/// }`).
pub(crate) async fn pump<R: AsyncRead + Unpin>(
    mut pipe: R,
    stream: Stream,
    sinks: Sinks,
    mut seen: impl FnMut(&[u8]),
) {
    let Sinks { service, name, tx, journal } = sinks;
    let mut splitter = Splitter::default();
    let mut chunk = vec![0; 16 * 1024];
    loop {
        let n = match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for bytes in splitter.push(&chunk[..n]) {
            seen(&bytes);
            journal.record(&name, stream, &bytes);
            if tx.send(Line { service, stream, bytes }).await.is_err() {
                return;
            }
        }
    }
    if let Some(bytes) = splitter.finish() {
        seen(&bytes);
        journal.record(&name, stream, &bytes);
        let _ = tx.send(Line { service, stream, bytes }).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_whole_lines_across_chunks() {
        let mut s = Splitter::default();
        assert!(s.push(b"hel").is_empty());
        assert_eq!(s.push(b"lo\nwor"), vec![b"hello".to_vec()]);
        assert_eq!(s.push(b"ld\r\n\n"), vec![b"world".to_vec(), b"".to_vec()]);
        assert!(s.push(b"tail").is_empty());
        assert_eq!(s.finish(), Some(b"tail".to_vec()));
    }

    #[test]
    fn cuts_overlong_lines() {
        let mut s = Splitter::default();
        let lines = s.push(&vec![b'x'; MAX_LINE * 2 + 5]);
        assert_eq!(lines.len(), 2);
        assert!(lines.iter().all(|l| l.len() == MAX_LINE));
        assert_eq!(s.finish().unwrap().len(), 5);
    }

    #[test]
    fn renders_padded_names_and_json() {
        let f = Format { names: vec!["api".into(), "runner".into()], json: false, color: false };
        let line = Line { service: 0, stream: Stream::Stdout, bytes: b"up".to_vec() };
        assert_eq!(f.render(&line), b"api    | up\n");
        let f = Format { json: true, ..f };
        let line = Line { service: 1, stream: Stream::Stderr, bytes: b"\"q\" \xff".to_vec() };
        let v: serde_json::Value = serde_json::from_slice(&f.render(&line)).unwrap();
        assert_eq!(v["service"], "runner");
        assert_eq!(v["stream"], "stderr");
        assert_eq!(v["line"], "\"q\" \u{fffd}");
    }
}
