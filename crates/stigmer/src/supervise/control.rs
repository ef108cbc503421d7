//! The control channel of `stigmer server`: a Unix socket the server
//! listens on, and the client that `stigmer server stop`, `status`,
//! `restart`, `logs` and `start` use. There are no PID files: a server is
//! running when it answers.
//!
//! **Where.** `$STIGMER_HOME/run/control.sock`, in a folder made and
//! checked like the cache's (every folder above it root's or yours and not
//! writable by others; `run/` yours and private). A server holds an
//! exclusive `flock` on `run/lock` for its whole life, so a socket file
//! left by a killed server is known to be stale (its lock is free) and is
//! replaced, never trusted, and two servers for one `STIGMER_HOME` cannot
//! both start. On Linux, where that folder cannot be made or trusted (a
//! read-only root and no volume, say), the server listens on an abstract
//! socket instead (unix(7): no file at all), named after the user and
//! `STIGMER_HOME`; it vanishes with the server, and binding it is what
//! keeps a second server out.
//!
//! **Who.** Both ends check the other's credentials from the kernel
//! (`SO_PEERCRED`, `getpeereid`): the server answers only a client of its
//! own uid, and a client talks only to a server of its own uid. An abstract
//! socket can be bound by anyone in the network namespace, so the client's
//! check is what keeps another user from posing as the server.
//!
//! **How.** One JSON object per line. The client sends one [`Request`]; the
//! server answers with [`Reply`] lines and closes. `stop` holds the
//! connection until the server process ends, so the client learns that
//! every service is gone when it reads end-of-file.

mod serve;
mod socket;

use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::UnixStream;

use super::journal::Entry;
use crate::launch::CacheLauncher;

pub(crate) use self::serve::{Ask, Handle, listen};
pub use self::socket::Listener;

/// The longest request line the server reads.
const MAX_REQUEST: u64 = 64 * 1024;
/// The longest reply line a client reads: a status of many services, or a
/// log line of 64 KiB escaped.
const MAX_REPLY: u64 = 4 << 20;

/// What a client asks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Request {
    /// The server's [`Status`].
    Status,
    /// Stop every service, then the server. Answered with
    /// [`Reply::Stopping`], then end-of-file once the server has ended.
    Stop,
    /// Restart these services (every one when empty) in dependency order.
    /// Answered with [`Reply::Progress`] until each is ready again, then
    /// [`Reply::Done`].
    Restart {
        /// The services.
        services: Vec<String>,
    },
    /// The last `lines` lines of these services (every one, and stigmer's
    /// own messages, when empty), then, if `follow`, every new one.
    Logs {
        /// How many lines from the past.
        lines: usize,
        /// Go on with new lines until the server ends.
        follow: bool,
        /// The services (`stigmer` for stigmer's own messages).
        services: Vec<String>,
    },
    /// A [`Status`], then [`Reply::Progress`] until every service is ready
    /// or the server fails, then [`Reply::Done`]: what `server start`
    /// prints.
    Watch,
}

/// One line of an answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Reply {
    /// The server's state.
    Status(Status),
    /// Something happened.
    Progress(Progress),
    /// A line of the journal.
    Line(Entry),
    /// A follower fell behind and missed this many lines.
    Skipped(u64),
    /// The server is stopping; end-of-file follows once it has ended.
    Stopping,
    /// The answer is complete.
    Done,
    /// The request was refused; the message says why and what to do.
    Error(String),
}

/// What happened in the server, as a control client hears of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Progress {
    /// A service was spawned.
    Started {
        /// The service.
        service: String,
        /// Its pid.
        pid: u32,
    },
    /// A service passed its readiness check.
    Ready {
        /// The service.
        service: String,
        /// Seconds since it was spawned.
        secs: f64,
    },
    /// A service ended.
    Exited {
        /// The service.
        service: String,
        /// How, as "exit status N" or "killed by SIGNAL".
        exit: String,
    },
    /// Every service is ready.
    AllReady {
        /// Seconds since the server began.
        secs: f64,
    },
    /// The server failed and is stopping every service.
    Failed {
        /// The service at fault, if one.
        service: Option<String>,
        /// Why.
        message: String,
    },
    /// The server was asked to stop and is stopping every service.
    Stopping,
}

/// A running server, as `stigmer server status` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Status {
    /// The server's main process: the one that was started (the guard),
    /// which ends last.
    pub pid: u32,
    /// The supervisor, parent of the services.
    pub supervisor: u32,
    /// The version of stigmer that runs it.
    pub version: String,
    /// Seconds since it began.
    pub uptime_secs: f64,
    /// Where its control socket is: a path, or `@name` in the abstract
    /// namespace.
    pub socket: String,
    /// Whether every service is ready (or a job completed).
    pub all_ready: bool,
    /// Whether it is stopping.
    pub stopping: bool,
    /// Its services, in start order.
    pub services: Vec<ServiceStatus>,
}

/// One service of a [`Status`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ServiceStatus {
    /// Its name.
    pub name: String,
    /// The payload it runs.
    pub payload: String,
    /// `starting`, `ready`, `restarting`, `stopping`, `completed` (a job
    /// that exited 0), `stopped` or `failed`.
    pub state: String,
    /// Its pid (the leader of its process group), while it runs.
    pub pid: Option<u32>,
    /// Seconds since its current run started.
    pub uptime_secs: Option<f64>,
    /// How often it was started again, by its policy or by `restart`.
    pub restarts: u32,
    /// Where it runs from: `memfd`, `mapped` or `cache`.
    pub backend: String,
    /// Its resident memory in bytes, where the platform tells.
    pub rss: Option<u64>,
    /// The bytes of RAM its payload's sealed memfd pins (shared by every
    /// service of that payload); `None` from the cache.
    pub memfd: Option<u64>,
    /// Its readiness check, if it has one.
    pub ready: Option<CheckStatus>,
    /// Its liveness check (`health`), if it has one.
    pub health: Option<CheckStatus>,
}

/// A check of a service, and its last result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CheckStatus {
    /// What it checks, e.g. `http://127.0.0.1:7234/healthz`.
    pub check: String,
    /// The last result: `None` while none has come.
    pub last: Option<CheckResult>,
}

/// The result of one check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CheckResult {
    /// Whether it passed.
    pub ok: bool,
    /// Why not, when it did not.
    pub message: Option<String>,
    /// When, as RFC 3339.
    pub at: String,
}

/// Why the control channel could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// Nothing answers for this `STIGMER_HOME`.
    #[error("no stigmer server is running for STIGMER_HOME={}", home.display())]
    NotRunning {
        /// The `STIGMER_HOME`.
        home: PathBuf,
    },
    /// A server already runs for this `STIGMER_HOME`.
    #[error(
        "a stigmer server is already running for STIGMER_HOME={}{}: stop it with \"stigmer server stop\", or set STIGMER_HOME to another folder",
        home.display(),
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    AlreadyRunning {
        /// The `STIGMER_HOME`.
        home: PathBuf,
        /// Its pid, when known.
        pid: Option<u32>,
    },
    /// The other end of the socket belongs to another user.
    #[error(
        "the control socket {socket} is held by uid {uid}{}, not by you (uid {me}): refusing to use it; find out who runs it, or set STIGMER_HOME to another folder",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    NotYou {
        /// The socket.
        socket: String,
        /// The peer's uid.
        uid: u32,
        /// The peer's pid, when known.
        pid: Option<u32>,
        /// This user's uid.
        me: u32,
    },
    /// There is nowhere to put the socket: its folder cannot be made or
    /// trusted, and this platform has no abstract sockets; or the folder
    /// exists and can no longer be trusted (its mode or owner changed), so
    /// neither a server nor a client may use it, nor quietly go elsewhere.
    #[error("cannot use the control socket's folder: {source}")]
    NoFolder {
        /// Why.
        #[source]
        source: crate::Error,
    },
    /// A system call on the socket failed.
    #[error("{what} {socket}: {source}")]
    Io {
        /// What was done.
        what: &'static str,
        /// The socket.
        socket: String,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// The server sent what this client does not understand (another
    /// version of stigmer?).
    #[error(
        "the server at {socket} answered what this stigmer does not understand ({why}): is it another version?"
    )]
    Protocol {
        /// The socket.
        socket: String,
        /// What was wrong.
        why: String,
    },
}

/// A connection to a running server, checked to be this user's.
#[derive(Debug)]
pub struct Client {
    stream: BufReader<UnixStream>,
    socket: String,
    peer_pid: Option<u32>,
}

impl Client {
    /// Connects to the server of `cache`'s `STIGMER_HOME`: its socket in
    /// `run/` if that folder exists and is trusted, else (Linux) its
    /// abstract socket. [`ControlError::NotRunning`] when nobody answers,
    /// [`ControlError::NotYou`] when another user does.
    pub async fn connect(cache: &CacheLauncher) -> Result<Client, ControlError> {
        let (stream, socket) = socket::connect(cache)?;
        let stream =
            stream.set_nonblocking(true).and_then(|()| UnixStream::from_std(stream)).map_err(
                |source| ControlError::Io { what: "cannot use", socket: socket.clone(), source },
            )?;
        let peer_pid = socket::check_peer(&stream, &socket)?;
        Ok(Client { stream: BufReader::new(stream), socket, peer_pid })
    }

    /// Where the server listens: a path, or `@name` (abstract).
    pub fn socket(&self) -> &str {
        &self.socket
    }

    /// The pid of the process at the other end (the supervisor), as this
    /// process's pid namespace sees it, when the platform tells.
    pub fn peer_pid(&self) -> Option<u32> {
        self.peer_pid
    }

    /// Sends `request`.
    pub async fn send(&mut self, request: &Request) -> Result<(), ControlError> {
        let mut line = serde_json::to_vec(request).expect("a request always serialises");
        line.push(b'\n');
        self.stream.get_mut().write_all(&line).await.map_err(|source| ControlError::Io {
            what: "cannot write to",
            socket: self.socket.clone(),
            source,
        })
    }

    /// The next line of the answer; `None` at end-of-file.
    pub async fn next(&mut self) -> Result<Option<Reply>, ControlError> {
        let mut line = Vec::new();
        let read = (&mut self.stream).take(MAX_REPLY).read_until(b'\n', &mut line).await;
        match read {
            Ok(0) => Ok(None),
            Ok(_) if line.last() != Some(&b'\n') => Err(ControlError::Protocol {
                socket: self.socket.clone(),
                why: "a line that does not end".into(),
            }),
            Ok(_) => serde_json::from_slice(&line).map(Some).map_err(|e| ControlError::Protocol {
                socket: self.socket.clone(),
                why: e.to_string(),
            }),
            // The server ended while answering.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(None),
            Err(source) => Err(ControlError::Io {
                what: "cannot read from",
                socket: self.socket.clone(),
                source,
            }),
        }
    }

    /// Sends `request` and returns the first line of the answer; an
    /// [`Reply::Error`] or end-of-file is a [`ControlError::Protocol`]
    /// only if the server sent nothing sensible.
    pub async fn ask(&mut self, request: &Request) -> Result<Reply, ControlError> {
        self.send(request).await?;
        self.next().await?.ok_or_else(|| ControlError::Protocol {
            socket: self.socket.clone(),
            why: "it closed the connection without an answer".into(),
        })
    }
}
