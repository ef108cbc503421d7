//! The server's end of the control channel: one task accepts, one task per
//! connection answers. None of them touches the supervisor's state: they
//! ask it through [`Ask`]s, and hear what happens through the
//! [`Progress`] broadcast and the journal, so a slow or hostile client can
//! only stall its own task.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, broadcast, mpsc, oneshot};
use tracing::{debug, warn};

use super::{Listener, MAX_REQUEST, Progress, Reply, Request, Status};
use crate::supervise::journal::{Journal, OWN};

/// How long a client has to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The most connections of this user answered at once; more are refused.
const MAX_CONNECTIONS: usize = 64;
/// The most connections of other users being refused at once; more are
/// closed at once.
const MAX_STRANGERS: usize = 8;
/// How long another user's connection is read before it is refused.
const STRANGER_TIMEOUT: Duration = Duration::from_millis(200);
/// At most one warning about refused connections this often.
const WARN_EVERY: Duration = Duration::from_secs(10);
/// How many lines of a failed service `watch` sends after its failure.
const FAILURE_LINES: usize = 20;

/// What a connection asks of the supervisor.
#[derive(Debug)]
pub(crate) enum Ask {
    /// Its status.
    Status(oneshot::Sender<Status>),
    /// A shutdown.
    Stop,
    /// A restart of these services (every one when empty); every name is
    /// one of its services.
    Restart(Vec<String>),
}

/// What the connections share.
#[derive(Clone, Debug)]
pub(crate) struct Handle {
    /// Told once a client watches.
    pub(crate) watched: Arc<tokio::sync::Notify>,
    /// To the supervisor.
    pub(crate) commands: mpsc::Sender<Ask>,
    /// From the supervisor.
    pub(crate) progress: broadcast::Sender<Progress>,
    /// The server's output.
    pub(crate) journal: Journal,
    /// The services, by name.
    pub(crate) names: Arc<[String]>,
    /// Per service (as `names`), how many of its output pipes are still
    /// being read.
    pub(crate) pumps: Arc<[std::sync::atomic::AtomicUsize]>,
}

/// Starts answering on `listener`; the socket file (if any) and its lock
/// stay with the returned [`Listener`], which the server keeps until it
/// ends.
///
/// The peer's credentials are read as soon as a connection is accepted:
/// this user's connections share [`MAX_CONNECTIONS`] slots; anyone else's
/// get [`MAX_STRANGERS`] slots of their own, a refusal within
/// [`STRANGER_TIMEOUT`], and at most one warning per [`WARN_EVERY`] in the
/// log, so another user can neither take this user's slots nor flood the
/// journal (`stigmer server logs`) with refusals.
pub(crate) fn listen(listener: Listener, handle: Handle) -> io::Result<Listener> {
    let std = listener.listener.try_clone()?;
    std.set_nonblocking(true)?;
    let accept = UnixListener::from_std(std)?;
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let strangers = Arc::new(Semaphore::new(MAX_STRANGERS));
    let me = nix::unistd::geteuid().as_raw();
    tokio::spawn(async move {
        let mut warned: Option<Instant> = None;
        let mut unsaid = 0u64;
        loop {
            let stream = match accept.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // EMFILE and the like: wait, rather than spin.
                    debug!("control socket: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let cred = stream.peer_cred();
            if let Ok(cred) = &cred {
                if cred.uid() == me {
                    let handle = handle.clone();
                    let slot = Arc::clone(&slots).try_acquire_owned();
                    tokio::spawn(async move {
                        match slot {
                            Ok(_slot) => answer(stream, handle).await,
                            Err(_) => {
                                let busy = "too many control connections at once: try again";
                                let (_, mut write) = stream.into_split();
                                let _ = send(&mut write, &Reply::Error(busy.into())).await;
                            }
                        }
                    });
                    continue;
                }
            }
            let who = match &cred {
                Ok(cred) => {
                    let pid = cred.pid().map(|p| format!(" (pid {p})")).unwrap_or_default();
                    format!("uid {}{pid}: not this server's user", cred.uid())
                }
                Err(e) => format!("a peer whose credentials cannot be read ({e})"),
            };
            if warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                let more = match unsaid {
                    0 => String::new(),
                    n => format!(" ({n} more refused since the last such warning)"),
                };
                warn!("refused a control connection from {who}{more}");
                warned = Some(Instant::now());
                unsaid = 0;
            } else {
                unsaid += 1;
            }
            // Beyond its slots, closed without a word.
            let Ok(slot) = Arc::clone(&strangers).try_acquire_owned() else { continue };
            let uid = cred.map(|c| c.uid()).ok();
            tokio::spawn(async move {
                let _slot = slot;
                refuse(stream, uid).await;
            });
        }
    });
    Ok(listener)
}

/// Refuses a connection of another user: reads what it sent, briefly
/// (closing on unread bytes would reset the connection, and the refusal
/// would be lost), then says why.
async fn refuse(stream: UnixStream, uid: Option<u32>) {
    let (read, mut write) = stream.into_split();
    let mut line = Vec::new();
    let mut read = BufReader::new(read);
    let _ = tokio::time::timeout(
        STRANGER_TIMEOUT,
        (&mut read).take(MAX_REQUEST).read_until(b'\n', &mut line),
    )
    .await;
    let why = match uid {
        Some(uid) => format!("permission denied: uid {uid} is not this server's user"),
        None => "permission denied: your credentials cannot be read".to_owned(),
    };
    let _ = send(&mut write, &Reply::Error(why)).await;
}

/// Answers one connection of this user.
async fn answer(stream: UnixStream, handle: Handle) {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut line = Vec::new();
    let got = tokio::time::timeout(
        REQUEST_TIMEOUT,
        (&mut read).take(MAX_REQUEST).read_until(b'\n', &mut line),
    )
    .await;
    let request = match got {
        Ok(Ok(_)) => serde_json::from_slice::<Request>(&line),
        // Silence, or a hang-up: nothing to answer.
        Ok(Err(_)) | Err(_) => return,
    };
    let request = match request {
        Ok(r) => r,
        Err(e) => {
            let why = format!(
                "not a request this server understands ({e}): is the client another version of stigmer?"
            );
            let _ = send(&mut write, &Reply::Error(why)).await;
            return;
        }
    };
    // A failed write means the client left: nothing more to do.
    let _ = match request {
        Request::Status => status(&handle, &mut write).await,
        Request::Stop => stop(&handle, &mut write, read).await,
        Request::Restart { services } => restart(&handle, &mut write, services).await,
        Request::Logs { lines, follow, services } => {
            logs(&handle, &mut write, lines, follow, services).await
        }
        Request::Watch => watch(&handle, &mut write).await,
    };
}

async fn send(write: &mut OwnedWriteHalf, reply: &Reply) -> io::Result<()> {
    let mut line = serde_json::to_vec(reply).expect("a reply always serialises");
    line.push(b'\n');
    write.write_all(&line).await
}

/// The supervisor's status; `None` once it no longer answers (it ended).
async fn ask_status(handle: &Handle) -> Option<Status> {
    let (tx, rx) = oneshot::channel();
    handle.commands.send(Ask::Status(tx)).await.ok()?;
    rx.await.ok()
}

async fn status(handle: &Handle, write: &mut OwnedWriteHalf) -> io::Result<()> {
    match ask_status(handle).await {
        Some(status) => send(write, &Reply::Status(status)).await,
        None => send(write, &Reply::Error("the server is ending".into())).await,
    }
}

/// Asks for a shutdown, then holds the connection until the server process
/// ends (its end-of-file tells the client), or the client leaves.
async fn stop(
    handle: &Handle,
    write: &mut OwnedWriteHalf,
    mut read: BufReader<tokio::net::unix::OwnedReadHalf>,
) -> io::Result<()> {
    let _ = handle.commands.send(Ask::Stop).await;
    send(write, &Reply::Stopping).await?;
    let mut sink = [0u8; 64];
    while read.read(&mut sink).await? > 0 {}
    Ok(())
}

/// Names that are not services of this server, as one message.
fn unknown(handle: &Handle, names: &[String], own: bool) -> Option<String> {
    let bad: Vec<&str> = names
        .iter()
        .filter(|n| !(handle.names.contains(n) || own && n.as_str() == OWN))
        .map(String::as_str)
        .collect();
    if bad.is_empty() {
        return None;
    }
    Some(format!(
        "no service {} in this server: its services are {}",
        bad.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", "),
        handle.names.join(", ")
    ))
}

async fn restart(
    handle: &Handle,
    write: &mut OwnedWriteHalf,
    services: Vec<String>,
) -> io::Result<()> {
    if let Some(why) = unknown(handle, &services, false) {
        return send(write, &Reply::Error(why)).await;
    }
    let mut waiting: Vec<String> =
        if services.is_empty() { handle.names.to_vec() } else { services.clone() };
    let mut progress = handle.progress.subscribe();
    if handle.commands.send(Ask::Restart(services)).await.is_err() {
        return send(write, &Reply::Error("the server is ending".into())).await;
    }
    while !waiting.is_empty() {
        let event = match progress.recv().await {
            Ok(e) => e,
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => break,
        };
        let mine = |s: &String| waiting.contains(s);
        match &event {
            Progress::Started { service, .. } | Progress::Exited { service, .. }
                if mine(service) =>
            {
                send(write, &Reply::Progress(event.clone())).await?;
            }
            Progress::Ready { service, .. } if mine(service) => {
                let service = service.clone();
                send(write, &Reply::Progress(event)).await?;
                waiting.retain(|s| *s != service);
            }
            Progress::Failed { .. } | Progress::Stopping => {
                send(write, &Reply::Progress(event)).await?;
                break;
            }
            _ => {}
        }
    }
    send(write, &Reply::Done).await
}

async fn logs(
    handle: &Handle,
    write: &mut OwnedWriteHalf,
    lines: usize,
    follow: bool,
    services: Vec<String>,
) -> io::Result<()> {
    if let Some(why) = unknown(handle, &services, true) {
        return send(write, &Reply::Error(why)).await;
    }
    let (tail, mut new) = handle.journal.tail_and_follow(&services, lines);
    for entry in tail {
        send(write, &Reply::Line((*entry).clone())).await?;
    }
    if !follow {
        return send(write, &Reply::Done).await;
    }
    loop {
        match new.recv().await {
            Ok(entry) => {
                if services.is_empty() || services.contains(&entry.source) {
                    send(write, &Reply::Line((*entry).clone())).await?;
                }
            }
            Err(broadcast::error::RecvError::Lagged(n)) => send(write, &Reply::Skipped(n)).await?,
            Err(broadcast::error::RecvError::Closed) => return send(write, &Reply::Done).await,
        }
    }
}

async fn watch(handle: &Handle, write: &mut OwnedWriteHalf) -> io::Result<()> {
    let mut progress = handle.progress.subscribe();
    // A server that waits for its watcher starts now: nothing is missed.
    handle.watched.notify_one();
    let Some(status) = ask_status(handle).await else {
        return send(write, &Reply::Error("the server is ending".into())).await;
    };
    // A server that is stopping goes on below: its failure, which may
    // have come before this status, is in what the subscription kept.
    let over = status.all_ready;
    send(write, &Reply::Status(status)).await?;
    if over {
        return send(write, &Reply::Done).await;
    }
    loop {
        let event = match progress.recv().await {
            Ok(e) => e,
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => break,
        };
        let end = matches!(event, Progress::AllReady { .. } | Progress::Stopping);
        let failed = match &event {
            Progress::Failed { service, .. } => Some(service.clone()),
            _ => None,
        };
        send(write, &Reply::Progress(event)).await?;
        if let Some(service) = failed {
            // A service that failed may have exited a moment before its
            // last lines were read: wait (a little) for its pipes' end.
            if let Some(i) = service.as_ref().and_then(|s| handle.names.iter().position(|n| n == s))
            {
                let drained = || handle.pumps[i].load(std::sync::atomic::Ordering::Relaxed) == 0;
                let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
                while !drained() && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            }
            for entry in
                handle.journal.tail(&service.into_iter().collect::<Vec<_>>(), FAILURE_LINES)
            {
                send(write, &Reply::Line((*entry).clone())).await?;
            }
            break;
        }
        if end {
            break;
        }
    }
    send(write, &Reply::Done).await
}
