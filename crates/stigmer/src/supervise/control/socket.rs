//! Where the control socket is, binding it (the server) and connecting to
//! it (a client), and the credential checks of both ends.

use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Seek as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use tracing::debug;

use super::ControlError;
use crate::launch::CacheLauncher;
use crate::launch::cache::LockOp;
use crate::launch::lock::flock;
use crate::supervise::sys;

/// The socket's file name in `run/`.
const SOCKET: &str = "control.sock";
/// The lock's file name in `run/`.
const LOCK: &str = "lock";
/// The longest socket path that fits in `sun_path` everywhere (104 bytes on
/// macOS, with its NUL); a longer one falls back to the abstract socket on
/// Linux.
const MAX_PATH: usize = 103;

/// A bound control socket, and what keeps it the only one: the server's.
#[derive(Debug)]
pub struct Listener {
    pub(super) listener: UnixListener,
    /// A path, or `@name`.
    pub(super) socket: String,
    /// For a socket file: the file, removed when the server ends, and the
    /// lock held until then.
    file: Option<(PathBuf, File)>,
    /// The server's private folder (`run/`), where it could make one.
    folder: Option<PathBuf>,
}

impl Listener {
    /// Binds the control socket of `cache`'s `STIGMER_HOME` for a server
    /// whose main process is `pid`. [`ControlError::AlreadyRunning`] when
    /// another server holds it.
    pub fn bind(cache: &CacheLauncher, pid: u32) -> Result<Listener, ControlError> {
        let home = home(cache);
        let mut folder = None;
        let why_not = match cache.run_dir() {
            Ok(dir) if socket_path(&dir).is_some() => {
                return bind_file(&dir, &home, pid);
            }
            // A server may already listen there (its folder's mode changed
            // under it): going elsewhere would start a second one.
            Err(e) if own_folder_untrusted(&e, cache) => {
                return Err(ControlError::NoFolder { source: e });
            }
            Ok(dir) => {
                folder = Some(dir.clone());
                crate::Error::Cache {
                    op: crate::CacheOp::CreateFolder,
                    path: dir.join(SOCKET),
                    source: io::Error::other("the path is too long for a socket"),
                }
            }
            Err(e) => e,
        };
        let Some((addr, socket)) = abstract_address(cache) else {
            return Err(ControlError::NoFolder { source: why_not });
        };
        debug!("control socket: {why_not}; listening on {socket} instead");
        match UnixListener::bind_addr(&addr) {
            Ok(listener) => Ok(Listener { listener, socket, file: None, folder }),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                // Someone holds the name: ours, or an impostor.
                let stream = UnixStream::connect_addr(&addr).map_err(|source| {
                    ControlError::Io { what: "cannot connect to", socket: socket.clone(), source }
                })?;
                let peer = sys::peer_cred(&stream);
                let me = nix::unistd::geteuid().as_raw();
                match peer {
                    Some((uid, pid)) if uid != me => {
                        Err(ControlError::NotYou { socket, uid, pid, me })
                    }
                    _ => Err(ControlError::AlreadyRunning { home, pid: None }),
                }
            }
            Err(source) => Err(ControlError::Io { what: "cannot listen on", socket, source }),
        }
    }

    /// Where it listens: a path, or `@name` (abstract).
    pub fn socket(&self) -> &str {
        &self.socket
    }

    /// The server's private folder (`$STIGMER_HOME/run`), where its log
    /// file goes; `None` where none could be made (a read-only root).
    pub fn folder(&self) -> Option<&Path> {
        self.folder.as_deref()
    }
}

impl Drop for Listener {
    /// A socket file goes with its server (the lock is still held, so it is
    /// ours); a killed server's is replaced by the next one.
    fn drop(&mut self) {
        if let Some((path, _lock)) = &self.file {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Takes the lock in `dir`, then replaces any socket file there (left by a
/// server that was killed: the lock was free) with a new one.
fn bind_file(dir: &Path, home: &Path, pid: u32) -> Result<Listener, ControlError> {
    let lock_path = dir.join(LOCK);
    let io_err = |what, path: &Path| {
        let socket = path.display().to_string();
        move |source| ControlError::Io { what, socket, source }
    };
    let mut lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(&lock_path)
        .map_err(io_err("cannot open", &lock_path))?;
    match flock(&lock, LockOp::TryExclusive) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            let mut text = String::new();
            let _ = lock.read_to_string(&mut text);
            let pid = text.trim().parse().ok();
            return Err(ControlError::AlreadyRunning { home: home.to_owned(), pid });
        }
        Err(e) => return Err(io_err("cannot lock", &lock_path)(e)),
    }
    // The pid, for a second server to name the first.
    lock.set_len(0).map_err(io_err("cannot write", &lock_path))?;
    lock.rewind().map_err(io_err("cannot write", &lock_path))?;
    writeln!(lock, "{pid}").map_err(io_err("cannot write", &lock_path))?;
    let path = dir.join(SOCKET);
    match std::fs::remove_file(&path) {
        Ok(()) => debug!("replaced the control socket a killed server left: {}", path.display()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("cannot remove the stale socket", &path)(e)),
    }
    let listener = UnixListener::bind(&path).map_err(io_err("cannot listen on", &path))?;
    let socket = path.display().to_string();
    Ok(Listener { listener, socket, file: Some((path, lock)), folder: Some(dir.to_owned()) })
}

/// Connects to the server of `cache`'s `STIGMER_HOME`: see
/// [`super::Client::connect`]. Returns the stream and where it is.
pub(super) fn connect(cache: &CacheLauncher) -> Result<(UnixStream, String), ControlError> {
    let not_running = || ControlError::NotRunning { home: home(cache) };
    match cache.existing_run_dir() {
        // The server would not have gone elsewhere either (see `bind`).
        Err(e) if own_folder_untrusted(&e, cache) => {
            return Err(ControlError::NoFolder { source: e });
        }
        // A path too long for a socket: the server listens on the abstract
        // name (see `bind`).
        Ok(dir) => {
            if let Some(path) = socket_path(&dir) {
                let socket = path.display().to_string();
                match UnixStream::connect(&path) {
                    Ok(stream) => return Ok((stream, socket)),
                    // No socket, or a killed server's: none there.
                    Err(e) if gone(&e) => {}
                    Err(source) => {
                        return Err(ControlError::Io { what: "cannot connect to", socket, source });
                    }
                }
            }
        }
        Err(_) => {}
    }
    let Some((addr, socket)) = abstract_address(cache) else { return Err(not_running()) };
    match UnixStream::connect_addr(&addr) {
        Ok(stream) => Ok((stream, socket)),
        Err(e) if gone(&e) => Err(not_running()),
        Err(source) => Err(ControlError::Io { what: "cannot connect to", socket, source }),
    }
}

/// The socket file's path in `dir`, unless it is too long for a socket
/// address (a deep `STIGMER_HOME`): then the server listens on the
/// abstract name instead.
fn socket_path(dir: &Path) -> Option<PathBuf> {
    let path = dir.join(SOCKET);
    (path.as_os_str().len() <= MAX_PATH).then_some(path)
}

/// Whether `e` says that `STIGMER_HOME` or its `run` folder exists but
/// cannot be trusted (not a folder above them: that only means "elsewhere").
fn own_folder_untrusted(e: &crate::Error, cache: &CacheLauncher) -> bool {
    let crate::Error::UntrustedCache { path, .. } = e else { return false };
    cache.layout().is_ok_and(|l| *path == l.root || *path == l.run)
}

/// Whether a connect failed because nobody listens there.
fn gone(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused)
}

/// Refuses a server of another user; returns its pid.
pub(super) fn check_peer(
    stream: &tokio::net::UnixStream,
    socket: &str,
) -> Result<Option<u32>, ControlError> {
    let cred = stream.peer_cred().map_err(|source| ControlError::Io {
        what: "cannot read the credentials of",
        socket: socket.to_owned(),
        source,
    })?;
    let me = nix::unistd::geteuid().as_raw();
    let pid = cred.pid().and_then(|p| u32::try_from(p).ok());
    if cred.uid() != me {
        return Err(ControlError::NotYou { socket: socket.to_owned(), uid: cred.uid(), pid, me });
    }
    Ok(pid)
}

/// The `STIGMER_HOME` as the cache resolved it (as given, if it cannot be).
fn home(cache: &CacheLauncher) -> PathBuf {
    cache.layout().map(|l| l.root).unwrap_or_default()
}

/// The abstract socket of this user and `STIGMER_HOME`, where there are
/// abstract sockets: `@stigmer-UID-HASH`, HASH from the sha256 of the
/// resolved `STIGMER_HOME`.
fn abstract_address(cache: &CacheLauncher) -> Option<(SocketAddr, String)> {
    let root = cache.layout().ok()?.root;
    let digest = Sha256::digest(root.as_os_str().as_encoded_bytes());
    let hash: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    let name = format!("stigmer-{}-{hash}", nix::unistd::geteuid());
    let addr = sys::abstract_address(&name)?;
    Some((addr, format!("@{name}")))
}
