//! The checks the shell runs for the machine: readiness waits of the
//! `exec` form, and single health checks of every form.
//!
//! An `exec` check is a command run on the host beside its service, with
//! the service's `env` and `cwd`. It passes when it exits with status 0
//! within its time. Three rules make it safe:
//!
//! - **Spawned from the supervisor's own thread**, like a service, because
//!   on Linux its death signal (`PR_SET_PDEATHSIG`) is tied to the thread
//!   that forks it. A task that wants a check sends a request to that
//!   thread ([`Runner::run`]), which spawns it ([`Checks::start`]).
//! - **Reaped by the supervisor's reaper.** The supervisor owns all reaping
//!   (see `reap`): a check is never waited for through std. The reaper
//!   hands its status to [`Checks::reaped`], which routes it by pid to the
//!   task that waits for it.
//! - **Killed with its process group when it overruns**, from the
//!   supervisor's thread and only while its pid is not reaped yet (the task
//!   that timed it asks, [`Msg::Overdue`]), so the SIGKILL cannot reach a
//!   recycled pid. Whatever it left in its group goes when it ends, as for
//!   a service.
//!
//! Its stdout and stderr go to one pipe, read to its end; the last line is
//! kept for the message.

use std::collections::HashMap;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::ThreadId;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt as _;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep, timeout};

use crate::manifest::{Check, Service};

use super::readiness::{self, NotReady};
use super::reap::Exit;
use super::sys;

/// How often a readiness `exec` check is run again until it passes: each
/// run is a process, so less often than a connection is tried.
const EXEC_POLL: Duration = Duration::from_millis(200);

/// How long a check's output may take to end once its command has: the
/// pipe ends at once unless something the command left holds it.
const OUTPUT_GRACE: Duration = Duration::from_millis(100);

/// How much of the last output line a message shows.
const LAST_LINE: usize = 200;

/// A request from a task to the supervisor's thread.
pub(crate) enum Msg {
    /// Spawn `cmd`; answer on `reply` once it has ended or was killed after
    /// `within`.
    Run { argv: Vec<String>, cmd: Box<Command>, within: Duration, reply: Reply },
    /// The check running as `pid` ran out of time: kill its group, if it is
    /// not reaped yet.
    Overdue(Pid),
}

type Reply = oneshot::Sender<Result<(), NotReady>>;

/// What tasks hold to have `exec` checks run.
#[derive(Clone)]
pub(crate) struct Runner {
    tx: mpsc::UnboundedSender<Msg>,
}

impl Runner {
    /// Runs the `exec` check `argv` of service `spec` (its `program`, with
    /// the service's `env` and `cwd`), for at most `within`.
    async fn run(
        &self,
        spec: &Service,
        argv: &[String],
        program: &std::path::Path,
        within: Duration,
    ) -> Result<(), NotReady> {
        let mut cmd = Command::new(program);
        if let Some((first, rest)) = argv.split_first() {
            cmd.arg0(first).args(rest);
        }
        // A value that names an asset holds a descriptor of the service
        // alone: a check gets the others.
        cmd.envs(spec.env.iter().filter_map(|(k, v)| Some((k, v.as_str()?))));
        if let Some(cwd) = &spec.cwd {
            cmd.current_dir(cwd);
        }
        let (reply, answer) = oneshot::channel();
        let gone = || NotReady::Spawn {
            argv: argv.to_vec(),
            source: io::Error::other("the supervisor is stopping"),
        };
        let cmd = Box::new(cmd);
        if self.tx.send(Msg::Run { argv: argv.to_vec(), cmd, within, reply }).is_err() {
            return Err(gone());
        }
        answer.await.unwrap_or_else(|_| Err(gone()))
    }
}

/// The supervisor's side: the `exec` checks running, by pid.
pub(crate) struct Checks {
    running: HashMap<Pid, oneshot::Sender<Exit>>,
    tx: mpsc::UnboundedSender<Msg>,
}

impl Checks {
    /// No check running yet; the receiver is for the supervisor's loop,
    /// which hands each message to [`Checks::handle`].
    pub(crate) fn new() -> (Checks, Runner, mpsc::UnboundedReceiver<Msg>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let runner = Runner { tx: tx.clone() };
        (Checks { running: HashMap::new(), tx }, runner, rx)
    }

    /// Acts on a request; call it on the supervisor's thread, `home`.
    pub(crate) fn handle(&mut self, home: ThreadId, msg: Msg) {
        match msg {
            Msg::Run { argv, cmd, within, reply } => self.start(home, argv, *cmd, within, reply),
            Msg::Overdue(pid) => {
                // Not reaped yet: the pid cannot have been given to anyone
                // else.
                if self.running.contains_key(&pid) {
                    let _ = killpg(pid, Signal::SIGKILL);
                }
            }
        }
    }

    /// Spawns a check, in a process group of its own, and starts the task
    /// that times it and answers `reply`.
    fn start(
        &mut self,
        home: ThreadId,
        argv: Vec<String>,
        mut cmd: Command,
        within: Duration,
        reply: Reply,
    ) {
        assert_eq!(std::thread::current().id(), home, "checks are spawned from the home thread");
        let spawned = sys::cloexec_pipe().map_err(io::Error::from).and_then(|(read, write)| {
            let write2 = write.try_clone()?;
            cmd.stdin(Stdio::null())
                .stdout(Stdio::from(write))
                .stderr(Stdio::from(write2))
                .process_group(0);
            sys::tie_to_parent(&mut cmd);
            let child = cmd.spawn()?;
            Ok((child, read))
        });
        // Our copies of the pipe's write end go with `cmd`: its end is the
        // end of what the check wrote.
        drop(cmd);
        let (child, output) = match spawned {
            Ok(spawned) => spawned,
            Err(source) => {
                let _ = reply.send(Err(NotReady::Spawn { argv, source }));
                return;
            }
        };
        // Never waited for through std: see `reap`.
        let pid = Pid::from_raw(child.id() as i32);
        drop(child);
        let (exit_tx, exit_rx) = oneshot::channel();
        self.running.insert(pid, exit_tx);
        tokio::spawn(watch(pid, argv, exit_rx, output, within, self.tx.clone(), reply));
    }

    /// Takes the status of a reaped child if it was a check (and kills
    /// what it left in its group); `false` if it was not one.
    pub(crate) fn reaped(&mut self, pid: Pid, exit: Exit) -> bool {
        let Some(waiting) = self.running.remove(&pid) else { return false };
        let _ = killpg(pid, Signal::SIGKILL);
        let _ = waiting.send(exit);
        true
    }

    /// Kills every check still running, with its group: the server is
    /// ending, and they are reaped with the rest.
    pub(crate) fn kill_all(&mut self) {
        for pid in self.running.keys() {
            let _ = killpg(*pid, Signal::SIGKILL);
        }
    }
}

/// Waits for the check `pid` to end, at most `within` (then has it killed
/// and waits for that), reads its output, and answers.
async fn watch(
    pid: Pid,
    argv: Vec<String>,
    mut exit: oneshot::Receiver<Exit>,
    output: OwnedFd,
    within: Duration,
    tx: mpsc::UnboundedSender<Msg>,
    reply: Reply,
) {
    let tail = tokio::spawn(last_line(output));
    let ended = match timeout(within, &mut exit).await {
        Ok(ended) => Some(ended),
        Err(_) => {
            let _ = tx.send(Msg::Overdue(pid));
            let _ = exit.await;
            None
        }
    };
    let output = timeout(OUTPUT_GRACE, tail).await.ok().and_then(Result::ok).flatten();
    let verdict = match ended {
        Some(Ok(Exit::Code(0))) => Ok(()),
        Some(Ok(exit)) => Err(NotReady::Exited { argv, exit, output }),
        Some(Err(_)) => {
            Err(NotReady::Spawn { argv, source: io::Error::other("the supervisor is stopping") })
        }
        None => Err(NotReady::ExecTimedOut { argv, within, output }),
    };
    let _ = reply.send(verdict);
}

/// Reads `output` to its end and returns its last non-empty line (cut to
/// [`LAST_LINE`] characters), keeping no more than a few KiB.
async fn last_line(output: OwnedFd) -> Option<String> {
    let mut pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(output).ok()?;
    let mut kept: Vec<u8> = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > 8192 {
                    kept.drain(..kept.len() - 4096);
                }
            }
        }
    }
    let text = String::from_utf8_lossy(&kept);
    let line = text.lines().map(str::trim).rfind(|l| !l.is_empty())?;
    Some(line.chars().take(LAST_LINE).collect())
}

/// Runs the readiness check `check` of service `spec` (of the `exec` form)
/// again until it passes or `within` runs out, or its run has ended
/// (`running` turned false: its verdict no longer matters, and a service
/// restarted in a loop must not pile up checks); returns the last failure.
pub(crate) async fn wait_exec(
    runner: &Runner,
    spec: &Service,
    check: &Check,
    within: Duration,
    running: &AtomicBool,
) -> Result<(), NotReady> {
    let Check::Exec { argv, program } = check else {
        return readiness::wait(check, within).await;
    };
    let within = within.min(crate::manifest::MAX_DURATION);
    let deadline = Instant::now() + within;
    // The first run has all the time; each later one what is left.
    let mut left = within;
    let mut last: Option<NotReady> = None;
    loop {
        let failure = match runner.run(spec, argv, program, left).await {
            Ok(()) => return Ok(()),
            // A run cut short by the deadline says less than the one
            // before it.
            Err(NotReady::ExecTimedOut { .. }) if last.is_some() => last.take().unwrap(),
            Err(e) => e,
        };
        let ended = !running.load(Ordering::Relaxed);
        if ended || deadline.saturating_duration_since(Instant::now()) <= EXEC_POLL {
            return Err(failure);
        }
        last = Some(failure);
        sleep(EXEC_POLL).await;
        left = deadline.saturating_duration_since(Instant::now());
    }
}
/// Runs one health check `check` of service `spec`, for at most `within`.
pub(crate) async fn health_once(
    runner: &Runner,
    spec: &Service,
    check: &Check,
    within: Duration,
) -> Result<(), NotReady> {
    match check {
        Check::Exec { argv, program } => runner.run(spec, argv, program, within).await,
        check => readiness::attempt(check, within).await,
    }
}
