//! Readiness checks: an HTTP GET answered 2xx, or a TCP connection
//! accepted, polled until the service's timeout; and one such attempt, as a
//! health check makes. (`log` checks are made on the output as it is read,
//! see `logs::pump`; `exec` checks by the shell, see `checks`.)
//!
//! Every attempt (connect, write, read) is bounded by the time left before
//! the deadline and by [`ATTEMPT`], so [`wait`] returns within its limit
//! plus a few milliseconds even when a listener never completes a
//! handshake (a full backlog drops SYNs), and its message names the limit
//! that applied.
//!
//! A check that fails says why with a [`NotReady`]: the supervisor puts it
//! after "NAME was not ready within T: " (or "NAME: health check failed:
//! "), so each message is a phrase that fits there.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout};

use crate::manifest::{Check, MAX_DURATION};

use super::reap::Exit;

const POLL: Duration = Duration::from_millis(50);
/// The longest one attempt may take.
const ATTEMPT: Duration = Duration::from_secs(2);

/// Why a service's readiness check did not pass (the last failure before
/// its timeout ran out), or why one health check failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotReady {
    /// Connecting, sending the request or reading the answer failed.
    #[error("{0}")]
    Io(#[source] io::Error),

    /// One attempt took `limit` (2s), the most one may take.
    #[error("no answer within {} (the limit of one attempt)", ms(*limit))]
    AttemptTimedOut {
        /// The limit of one attempt.
        limit: Duration,
    },

    /// The attempt under way when the check's timeout ran out.
    #[error("no answer before the {} timeout ran out", ms(*within))]
    TimedOut {
        /// The check's timeout.
        within: Duration,
    },

    /// The HTTP answer's status was not 2xx.
    #[error("answered {status_line:?}")]
    Status {
        /// The answer's first line.
        status_line: String,
    },

    /// The answer had no HTTP status line.
    #[error("no HTTP status line in the answer")]
    NoStatusLine,

    /// No line of the service's output contained the text of its `log`
    /// check.
    #[error("no output line contained {text:?}")]
    NoLine {
        /// The text looked for.
        text: String,
    },

    /// An `exec` check's command exited with a non-zero status or was
    /// killed by a signal.
    #[error("exec {argv:?} exited ({exit}){}", LastLine(output.as_deref()))]
    Exited {
        /// The command line, as written.
        argv: Vec<String>,
        /// How it ended.
        exit: Exit,
        /// The last line it wrote (stdout and stderr), if any.
        output: Option<String>,
    },

    /// An `exec` check's command ran past its time, and was killed with its
    /// process group.
    #[error("exec {argv:?} did not finish within {} (killed){}", ms(*within), LastLine(output.as_deref()))]
    ExecTimedOut {
        /// The command line, as written.
        argv: Vec<String>,
        /// The time it had.
        within: Duration,
        /// The last line it wrote (stdout and stderr), if any.
        output: Option<String>,
    },

    /// An `exec` check's command could not be started.
    #[error("exec {argv:?} could not be started: {source}")]
    Spawn {
        /// The command line, as written.
        argv: Vec<String>,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// ", last output line: \"...\"" when there is one.
struct LastLine<'a>(Option<&'a str>);

impl std::fmt::Display for LastLine<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(line) => write!(f, "; last output line: {line:?}"),
            None => Ok(()),
        }
    }
}

impl From<io::Error> for NotReady {
    fn from(e: io::Error) -> NotReady {
        NotReady::Io(e)
    }
}

/// A duration cut to whole milliseconds, as humantime writes it.
fn ms(d: Duration) -> String {
    humantime::format_duration(Duration::from_millis(d.as_millis() as u64)).to_string()
}

/// Polls `check` until it passes (`Ok`) or `within` runs out (`Err` with
/// the last failure). Returns within `within` (at most [`MAX_DURATION`])
/// plus a few milliseconds; makes at least one attempt.
pub(crate) async fn wait(check: &Check, within: Duration) -> Result<(), NotReady> {
    let within = within.min(MAX_DURATION);
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let limit = Limit { cap: left.min(ATTEMPT), within };
        let failure = match one(check, limit).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left <= POLL {
            return Err(failure);
        }
        sleep(POLL).await;
    }
}

/// Makes one attempt of `check` (`http` or `tcp`), bounded by `within`:
/// what one health check is.
pub(crate) async fn attempt(check: &Check, within: Duration) -> Result<(), NotReady> {
    one(check, Limit { cap: within.min(MAX_DURATION), within }).await
}

/// One attempt of `check`, bounded by `limit`. A `log` or `exec` check is
/// not made here: it never passes.
async fn one(check: &Check, limit: Limit) -> Result<(), NotReady> {
    match check {
        Check::Http { addr, host, path, .. } => bounded(limit, http(*addr, host, path)).await,
        Check::Tcp(addr) => {
            bounded(limit, async { Ok(TcpStream::connect(addr).await.map(drop)?) }).await
        }
        // Made by the output's readers, and by the shell.
        Check::Log(_) | Check::Exec { .. } => std::future::pending().await,
    }
}

/// What bounds one attempt, to say which bound applied when it runs out.
#[derive(Clone, Copy)]
struct Limit {
    /// The attempt's bound: the smaller of [`ATTEMPT`] and the time left.
    cap: Duration,
    /// The whole wait.
    within: Duration,
}

impl Limit {
    /// The failure of an attempt that ran out of time.
    fn ran_out(self) -> NotReady {
        if self.cap == ATTEMPT && self.within != ATTEMPT {
            NotReady::AttemptTimedOut { limit: ATTEMPT }
        } else {
            NotReady::TimedOut { within: self.within }
        }
    }
}

/// Runs `attempt` for at most `limit.cap`.
async fn bounded(
    limit: Limit,
    attempt: impl Future<Output = Result<(), NotReady>>,
) -> Result<(), NotReady> {
    timeout(limit.cap, attempt).await.unwrap_or_else(|_| Err(limit.ran_out()))
}

/// One `GET`: `Ok` for a 2xx status. The caller bounds it in time.
async fn http(addr: SocketAddr, host: &str, path: &str) -> Result<(), NotReady> {
    let mut conn = TcpStream::connect(addr).await?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: stigmer\r\nConnection: close\r\n\r\n"
    );
    conn.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    let mut buf = [0; 512];
    while !head.contains(&b'\n') && head.len() < 4096 {
        let n = conn.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let status_line = String::from_utf8_lossy(&head);
    let status_line = status_line.lines().next().unwrap_or("");
    match status_line.split_whitespace().nth(1) {
        Some(code) if code.starts_with('2') && code.len() == 3 => Ok(()),
        Some(_) => Err(NotReady::Status { status_line: status_line.to_owned() }),
        None => Err(NotReady::NoStatusLine),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn serve_once(response: &'static str) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut buf = [0; 1024];
                let _ = conn.read(&mut buf).await;
                let _ = conn.write_all(response.as_bytes()).await;
            }
        });
        addr
    }

    fn http_check(addr: SocketAddr) -> Check {
        Check::Http { url: String::new(), addr, host: addr.to_string(), path: "/healthz".into() }
    }

    #[tokio::test]
    async fn http_2xx_is_ready_and_others_are_not() {
        let ok = serve_once("HTTP/1.1 204 No Content\r\n\r\n").await;
        wait(&http_check(ok), Duration::from_secs(2)).await.unwrap();
        let bad = serve_once("HTTP/1.1 503 Service Unavailable\r\n\r\n").await;
        let err = wait(&http_check(bad), Duration::from_millis(300)).await.unwrap_err();
        assert_eq!(err.to_string(), r#"answered "HTTP/1.1 503 Service Unavailable""#);
    }

    #[tokio::test]
    async fn tcp_refused_until_timeout() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = wait(&Check::Tcp(addr), Duration::from_millis(200)).await.unwrap_err();
        assert!(
            matches!(&err, NotReady::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
        );
        assert!(err.to_string().to_lowercase().contains("refused"), "{err}");
    }

    /// A listener whose accept queue is full and never drained: the kernel
    /// drops further SYNs, so a connect hangs (for minutes, by retries).
    /// Returns it with the connections that filled it.
    fn full_backlog() -> (tokio::net::TcpListener, Vec<std::net::TcpStream>) {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(0).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut held = Vec::new();
        for _ in 0..64 {
            match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                Ok(conn) => held.push(conn),
                Err(e) => {
                    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
                    return (listener, held);
                }
            }
        }
        panic!("64 connections did not fill a backlog of 0");
    }

    /// Asserts that `wait` gave up within `within` plus a margin, not before.
    async fn gives_up_in_time(check: &Check, within: Duration) -> String {
        let start = std::time::Instant::now();
        let err = wait(check, within).await.unwrap_err();
        let took = start.elapsed();
        assert!(
            took < within + Duration::from_millis(500),
            "took {took:?} against {within:?}: {err}"
        );
        assert!(took + Duration::from_millis(60) >= within, "gave up early, after {took:?}: {err}");
        err.to_string()
    }

    #[tokio::test]
    async fn a_full_backlog_is_waited_for_no_longer_than_the_timeout() {
        let (listener, _held) = full_backlog();
        let addr = listener.local_addr().unwrap();
        let err = gives_up_in_time(&Check::Tcp(addr), Duration::from_secs(1)).await;
        assert_eq!(err, "no answer before the 1s timeout ran out");
        let err = gives_up_in_time(&http_check(addr), Duration::from_millis(700)).await;
        assert_eq!(err, "no answer before the 700ms timeout ran out");
        // Longer than one attempt: the first stops at 2s, the last at the
        // deadline, and the message says which limit ended the last.
        let err = gives_up_in_time(&Check::Tcp(addr), Duration::from_millis(2600)).await;
        assert_eq!(err, "no answer before the 2s 600ms timeout ran out");
    }

    #[tokio::test]
    async fn a_server_that_never_answers_is_waited_for_no_longer_than_the_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Accepts, reads the request, never answers.
        tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                open.push(conn);
            }
        });
        let err = gives_up_in_time(&http_check(addr), Duration::from_millis(300)).await;
        assert_eq!(err, "no answer before the 300ms timeout ran out");
    }

    #[tokio::test]
    async fn one_attempt_is_capped_and_says_so() {
        let within = Duration::from_secs(3);
        let (listener, _held) = full_backlog();
        let addr = listener.local_addr().unwrap();
        let start = std::time::Instant::now();
        let attempt = bounded(Limit { cap: ATTEMPT, within }, async {
            Ok(TcpStream::connect(addr).await.map(drop)?)
        })
        .await;
        assert!(start.elapsed() < ATTEMPT + Duration::from_millis(500));
        assert_eq!(
            attempt.unwrap_err().to_string(),
            "no answer within 2s (the limit of one attempt)"
        );
    }

    #[test]
    fn messages_are_phrases() {
        let no_line = NotReady::NoLine { text: "up \"now\"".into() };
        assert_eq!(no_line.to_string(), r#"no output line contained "up \"now\"""#);
        let timed_out = NotReady::TimedOut { within: Duration::from_micros(2_600_400) };
        assert_eq!(timed_out.to_string(), "no answer before the 2s 600ms timeout ran out");
        assert_eq!(NotReady::NoStatusLine.to_string(), "no HTTP status line in the answer");
        let io = NotReady::from(std::io::Error::from_raw_os_error(nix::libc::ECONNREFUSED));
        assert_eq!(
            io.to_string(),
            std::io::Error::from_raw_os_error(nix::libc::ECONNREFUSED).to_string()
        );
        assert!(std::error::Error::source(&io).is_some());
    }

    #[tokio::test]
    async fn any_duration_is_safe() {
        // `Instant::now() + Duration::MAX` panics; the wait is capped.
        let ok = serve_once("HTTP/1.1 200 OK\r\n\r\n").await;
        wait(&http_check(ok), Duration::MAX).await.unwrap();
    }
}
