//! `stigmer server`: start every service of the manifest, in dependency
//! order with readiness checks, stream their output, pass signals on,
//! restart by policy, and stop them all cleanly.
//!
//! `stigmer server` is two processes. The one the user started is the
//! [`guard`]: tiny, single-threaded, it forks the supervisor before any
//! thread exists, passes signals on to it, and when the supervisor ends by
//! any means (SIGKILL, abort, the OOM killer) kills whatever is left. The
//! supervisor runs [`serve`]; when the guard dies, it kills every service
//! at once and exits. Nothing outlives stigmer.
//!
//! In the supervisor one task owns all the state. Everything that happens
//! (a signal, a child that ended, a readiness verdict, a timer) reaches it
//! as an event, and the rules are in one place: the `machine` module, a
//! state machine that decides and does nothing else. This module is the
//! shell around it: it feeds it events with the time they are handled at,
//! and carries out the actions it returns (spawn, start a readiness check,
//! signal a group, arm a timer). The rules:
//!
//! - A service starts once every service it depends on meets its
//!   condition (`started`, `healthy` or `completed_successfully`: see the
//!   `machine` module, which also says what a one-shot job is). The
//!   payloads are prepared in parallel before anything starts. A service
//!   whose readiness check is `tcp` or `http` does not start while someone
//!   already answers on that address: the server fails, naming the address
//!   and, where it can tell, the process that holds it.
//! - Each service is the leader of its own process group; signals go to the
//!   group, so nothing it started is left behind. On Linux each service
//!   also gets SIGKILL if the supervisor dies (`PR_SET_PDEATHSIG`), so it
//!   is spawned from the supervisor's own thread only.
//! - SIGINT, SIGTERM, SIGQUIT (Ctrl-\\) and SIGHUP (the terminal closed)
//!   start a shutdown: a service is sent its stop signal once nothing that
//!   depends on it still runs, and SIGKILL after its `stop_timeout`. A
//!   second one kills everything at once, at any point of the shutdown.
//! - SIGUSR1 is a reload: each running service whose manifest sets
//!   `reload_signal` gets that signal (to its group); the others get
//!   nothing.
//! - An asset a service names (`${asset:NAME}`) is prepared once, with the
//!   payloads: a sealed memfd that is not executable, whose descriptor
//!   stays open in the services that name it (and only those), or a
//!   read-only cache entry, verified again before each of their starts.
//! - A service that exits on its own is restarted by its policy, from the
//!   same prepared payload (the same sealed memfd); `restart = "no"`, or too
//!   many restarts, shuts the server down with an error naming it. So is a
//!   service that fails its health check `retries` times in a row, after
//!   being stopped. Health and `exec` readiness checks are run by the
//!   `checks` module; an `exec` check's command is spawned from the
//!   supervisor's thread, like a service, and reaped by the same reaper.
//! - Once every service has stopped, any descendant that left its process
//!   group (`setsid`, a double fork) and was reparented to the supervisor
//!   (a child subreaper on Linux) gets SIGTERM, then SIGKILL after
//!   [`ESCAPEE_GRACE`]; the supervisor waits until it has no child left.
//! - Reaping: see the `reap` module; stigmer behaves as a proper PID 1.
//! - A panic anywhere kills every service group, then aborts: see the `crash`
//!   module.
//! - Nothing here blocks on output: service lines go through one writer
//!   thread, which the supervisor waits for at most [`WRITER_GRACE`] at the
//!   end (stdout may be a pipe nobody reads).

mod checks;
pub mod control;
mod crash;
mod failure;
pub mod guard;
pub mod journal;
mod logs;
mod machine;
mod readiness;
mod reap;
mod restart;
mod sys;

use std::collections::{BTreeSet, HashMap};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt as _;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::manifest::{Check, Manifest, Service};
use crate::{Catalog, Error, Launch, Prepared, PreparedAsset, Result};

use self::checks::{Checks, Runner};
use self::control::{Ask, CheckResult, CheckStatus, Progress, ServiceStatus, Status};
use self::failure::SpawnError;
use self::logs::{Format, Line, Sinks, Stream};
use self::machine::{Action, Event, Machine, Notice, Timer};

pub use self::control::{Client, ControlError, Listener};
pub use self::failure::Failure;
pub use self::guard::Guard;
pub use self::journal::Journal;

/// The last `n` lines of `sources` (every one when empty) that the last
/// server of `cache`'s `STIGMER_HOME` wrote to its log file, and the file;
/// `Ok(None)` when it has none (it ran where nothing was writable, or never
/// ran).
pub fn logs_left(
    cache: &crate::launch::CacheLauncher,
    sources: &[String],
    n: usize,
) -> Result<Option<(std::path::PathBuf, Vec<journal::Entry>)>> {
    let Ok(dir) = cache.existing_run_dir() else { return Ok(None) };
    let entries = journal::read_files(&dir, sources, n).map_err(|source| Error::Cache {
        op: crate::CacheOp::ReadFolder,
        path: journal::log_path(&dir),
        source,
    })?;
    Ok(entries.map(|e| (journal::log_path(&dir), e)))
}
pub use self::readiness::NotReady;
pub use self::reap::Exit;

/// How long descendants that escaped their service's process group get
/// between SIGTERM and SIGKILL on the way out.
pub const ESCAPEE_GRACE: Duration = Duration::from_secs(2);

/// How long the supervisor waits, at the very end, for the last service
/// lines to be written before it exits without them.
pub const WRITER_GRACE: Duration = Duration::from_secs(1);

/// How long the check that a service's address is free may take.
const ADDRESS_CHECK: Duration = Duration::from_millis(250);

/// How `stigmer server` writes, and how it is controlled.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Options {
    /// One JSON object per output line instead of `name | line`.
    pub json_logs: bool,
    /// Colour service names.
    pub color: bool,
    /// The control socket to answer on ([`Listener::bind`]); `None`: the
    /// server cannot be reached by `stigmer server status`, `stop`...
    pub control: Option<Listener>,
    /// Where the server keeps its recent output (services' lines, and
    /// whatever the caller records of its own); `None`: a new one.
    pub journal: Option<Journal>,
    /// Start no service until a client watches (`Request::Watch`) through
    /// `control`, or this long has passed: `stigmer server start` sees
    /// every step, even of a server that fails at once.
    pub wait_for_watch: Option<Duration>,
}

/// How the server ended.
#[derive(Debug)]
pub enum Outcome {
    /// A requested shutdown in which every service stopped in time.
    Clean,
    /// Anything else, with the reason.
    Failed(Failure),
}

/// Runs the services of `manifest` until they are stopped, with payloads
/// prepared by `launcher` (a [`Launcher`](crate::Launcher), or any
/// [`Launch`]). Must be called inside a tokio runtime with I/O, time and
/// signals enabled, from `block_on` on a thread that lives as long as the
/// supervisor: services are spawned from that thread (their death signal is
/// tied to it). `guard` is the supervisor's end of [`guard::split`], if
/// there is a guard.
///
/// Every payload is prepared before any service starts: if one cannot be,
/// this returns that error and nothing has started.
///
/// It installs a panic hook for the whole process: a panic on any thread
/// SIGKILLs every service group, then aborts.
pub async fn serve(
    manifest: Manifest,
    catalog: &Catalog,
    launcher: Arc<dyn Launch + Send + Sync>,
    options: Options,
    guard: Option<Guard>,
) -> Result<Outcome> {
    let t0 = Instant::now();
    crash::install_hook();
    sys::become_subreaper();
    // Listen before anything starts, so no signal is missed.
    let mut signals =
        Signals::new().map_err(|source| Error::Exec { name: "stigmer server".into(), source })?;
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let has_guard = guard.is_some();
    let mut options = options;
    if let Some(guard) = guard {
        // Signals sent since the split were kept pending; now they are
        // handled.
        guard
            .unblock_signals()
            .map_err(|source| Error::Exec { name: "stigmer server".into(), source })?;
        watch_guard(guard.gone, events_tx.clone());
    }

    let names: Vec<String> = manifest.services.iter().map(|s| s.name.clone()).collect();
    let journal = options.journal.take().unwrap_or_default();
    let (progress, _) = tokio::sync::broadcast::channel(256);
    let (commands_tx, mut commands) = mpsc::channel(64);
    let watched = Arc::new(tokio::sync::Notify::new());
    let pumps: Arc<[AtomicUsize]> = names.iter().map(|_| AtomicUsize::new(0)).collect();
    // Answer before the payloads are prepared: `server start` watches.
    let control = match options.control.take() {
        Some(listener) => {
            let socket = listener.socket().to_owned();
            if let Some(dir) = listener.folder() {
                journal.keep_in(dir);
            }
            let handle = control::Handle {
                watched: Arc::clone(&watched),
                commands: commands_tx,
                progress: progress.clone(),
                journal: journal.clone(),
                names: names.clone().into(),
                pumps: Arc::clone(&pumps),
            };
            let listener = control::listen(listener, handle)
                .map_err(|source| Error::Exec { name: "stigmer server".into(), source })?;
            Some((listener, socket))
        }
        None => None,
    };

    let prepared = prepare_all(&manifest, catalog, &launcher).await?;
    let assets = prepare_assets(&manifest, catalog, &launcher).await?;
    let (lines, written) =
        logs::writer(Format { names, json: options.json_logs, color: options.color })
            .map_err(|source| Error::Exec { name: "stigmer server".into(), source })?;
    let prepared: Vec<Prepared> =
        manifest.services.iter().map(|s| prepared[&s.payload].clone()).collect();
    let ran_from = std::sync::Mutex::new(prepared.iter().map(Prepared::backend).collect());
    let sizes =
        manifest.services.iter().map(|s| catalog.get(&s.payload).map_or(0, |p| p.len())).collect();
    let main_pid = match has_guard {
        true => nix::unistd::getppid(),
        false => nix::unistd::getpid(),
    };
    let (checks, runner, mut check_requests) = Checks::new();
    let count = manifest.services.len();
    let mut sup = Supervisor {
        machine: Machine::new(manifest.services, t0),
        prepared,
        assets,
        events: events_tx,
        lines,
        home: std::thread::current().id(),
        journal,
        progress,
        t0,
        main_pid,
        socket: control.as_ref().map(|(_, s)| s.clone()).unwrap_or_default(),
        sizes,
        ran_from,
        checks,
        runner,
        running: (0..count).map(|_| Arc::new(AtomicBool::new(false))).collect(),
        pumps,
    };

    // First what already happened (the guard may have died while the
    // payloads were prepared): nothing starts after that.
    while let Ok(event) = events.try_recv() {
        sup.feed(event);
    }
    if let (Some(limit), Some(_)) = (options.wait_for_watch, &control) {
        tokio::select! {
            () = watched.notified() => {}
            () = tokio::time::sleep(limit) => debug!("nobody watched the start"),
        }
    }
    sup.machine.start(Instant::now());
    sup.act();
    while !sup.machine.finished() {
        tokio::select! {
            Some(event) = events.recv() => sup.feed(event),
            Some(request) = check_requests.recv() => sup.checks.handle(sup.home, request),
            sig = signals.recv() => match sig {
                Sig::Child => sup.on_child(),
                Sig::Stop(sig) => sup.feed(Event::Stop(sig)),
                Sig::Reload => {
                    test_panic();
                    sup.feed(Event::Reload);
                }
            },
            Some(command) = commands.recv() => sup.on_command(command),
        }
    }
    // Status requests made during the last steps are answered, as
    // stopping.
    let stopping = sup.status();
    tokio::spawn(async move {
        while let Some(command) = commands.recv().await {
            if let Ask::Status(reply) = command {
                let _ = reply.send(stopping.clone());
            }
        }
    });
    // The writer ends once every sender of lines is gone: ours goes here
    // (a `..` pattern would keep it alive until the function returns, and
    // every clean stop would wait out WRITER_GRACE).
    let Supervisor { machine, lines, mut checks, .. } = sup;
    drop(lines);
    // Kept to the end: the socket file goes, and the lock is let go, only
    // once nothing of the server is left but this process.
    let _control = control;
    // Checks still running are of no use now; they are reaped below.
    checks.kill_all();
    let mut hurry = machine.hurry();
    stop_escapees(&mut hurry, &mut signals, &mut events).await;
    let outcome = machine.outcome();
    // Every reader has ended with its service; wait a little for the last
    // lines, unless stdout is stuck (a pipe nobody reads) or we must go.
    if !hurry {
        tokio::select! {
            _ = written => {}
            () = tokio::time::sleep(WRITER_GRACE) => {
                warn!("service output not written within {}: stdout is not being read",
                    humantime::format_duration(WRITER_GRACE));
            }
            _ = signals.stop() => {}
            Some(Event::GuardGone) = events.recv() => {}
        }
    }
    Ok(outcome)
}

/// Sends [`Event::GuardGone`] once the guard's end of the pipe is closed.
fn watch_guard(gone: OwnedFd, events: mpsc::UnboundedSender<Event>) {
    let mut pipe = match tokio::net::unix::pipe::Receiver::from_owned_fd(gone) {
        Ok(p) => p,
        Err(e) => {
            warn!("cannot watch the guard process: {e}");
            return;
        }
    };
    tokio::spawn(async move {
        let mut buf = [0u8; 16];
        while let Ok(1..) = pipe.read(&mut buf).await {}
        let _ = events.send(Event::GuardGone);
    });
}

struct Signals {
    child: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
    user1: tokio::signal::unix::Signal,
}

/// A signal the supervisor acts on.
enum Sig {
    /// SIGCHLD: reap.
    Child,
    /// SIGINT, SIGTERM, SIGHUP or SIGQUIT: stop.
    Stop(Signal),
    /// SIGUSR1: reload.
    Reload,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        Ok(Signals {
            child: signal(SignalKind::child())?,
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
            quit: signal(SignalKind::quit())?,
            user1: signal(SignalKind::user_defined1())?,
        })
    }

    /// The next signal. Cancel-safe.
    async fn recv(&mut self) -> Sig {
        tokio::select! {
            _ = self.child.recv() => Sig::Child,
            _ = self.interrupt.recv() => Sig::Stop(Signal::SIGINT),
            _ = self.terminate.recv() => Sig::Stop(Signal::SIGTERM),
            _ = self.hangup.recv() => Sig::Stop(Signal::SIGHUP),
            _ = self.quit.recv() => Sig::Stop(Signal::SIGQUIT),
            _ = self.user1.recv() => Sig::Reload,
        }
    }

    /// The next stop signal (others are dropped). Cancel-safe.
    async fn stop(&mut self) -> Signal {
        loop {
            if let Sig::Stop(sig) = self.recv().await {
                return sig;
            }
        }
    }
}

/// Prepares every payload the manifest uses, in parallel (memfd fills and
/// cache checks are blocking work).
async fn prepare_all(
    manifest: &Manifest,
    catalog: &Catalog,
    launcher: &Arc<dyn Launch + Send + Sync>,
) -> Result<HashMap<String, Prepared>> {
    let mut tasks = Vec::new();
    for s in &manifest.services {
        if tasks.iter().any(|(name, _)| name == &s.payload) {
            continue;
        }
        let payload = catalog.get(&s.payload)?.clone();
        let launcher = Arc::clone(launcher);
        tasks.push((
            s.payload.clone(),
            tokio::task::spawn_blocking(move || launcher.prepare(&payload)),
        ));
    }
    let mut prepared = HashMap::new();
    for (name, task) in tasks {
        let p = task.await.map_err(|e| Error::Exec {
            name: name.clone(),
            source: std::io::Error::other(format!("preparing it failed: {e}")),
        })??;
        debug!("{name}: prepared ({})", p.backend());
        prepared.insert(name, p);
    }
    Ok(prepared)
}

/// Prepares every asset the manifest's services name, in parallel, once
/// for the whole server: every start of every service that names one gets
/// the same sealed memfd (or cache entry, checked again at each start).
async fn prepare_assets(
    manifest: &Manifest,
    catalog: &Catalog,
    launcher: &Arc<dyn Launch + Send + Sync>,
) -> Result<HashMap<String, PreparedAsset>> {
    let names: BTreeSet<&str> = manifest.services.iter().flat_map(Service::assets).collect();
    let mut tasks = Vec::new();
    for name in names {
        let asset = catalog.asset(name)?.clone();
        let launcher = Arc::clone(launcher);
        tasks.push((name, tokio::task::spawn_blocking(move || launcher.prepare_asset(&asset))));
    }
    let mut prepared = HashMap::new();
    for (name, task) in tasks {
        let p = task.await.map_err(|e| Error::Exec {
            name: name.to_owned(),
            source: std::io::Error::other(format!("preparing it failed: {e}")),
        })??;
        debug!("asset {name}: prepared ({}, {})", p.backend(), p.path().display());
        prepared.insert(name.to_owned(), p);
    }
    Ok(prepared)
}

/// The shell around the [`Machine`]: it owns what touches the system.
struct Supervisor {
    machine: Machine,
    /// Each service's payload, by index.
    prepared: Vec<Prepared>,
    /// Every asset a service names, by name.
    assets: HashMap<String, PreparedAsset>,
    events: mpsc::UnboundedSender<Event>,
    lines: mpsc::Sender<Line>,
    /// The thread that runs the supervisor, the only one that spawns.
    home: ThreadId,
    journal: Journal,
    /// What control clients hear of.
    progress: tokio::sync::broadcast::Sender<Progress>,
    /// When the server began.
    t0: Instant,
    /// The server's main process: the guard, or this one.
    main_pid: Pid,
    /// Where the control socket is, if there is one.
    socket: String,
    /// Each service's payload size, by index.
    sizes: Vec<u64>,
    /// The backend each service's last run came from, by index: its
    /// payload's, but for a mapped payload a child ran from a memfd.
    ran_from: std::sync::Mutex<Vec<crate::Backend>>,
    /// The `exec` checks running.
    checks: Checks,
    /// Given to the tasks that want `exec` checks run.
    runner: Runner,
    /// Per service, whether its current run's leader is still unreaped:
    /// its readiness checks stop once it is not.
    running: Vec<Arc<AtomicBool>>,
    /// Per service, how many of its output pipes are still being read: a
    /// failure's last lines are in the journal once none is.
    pumps: Arc<[AtomicUsize]>,
}

impl Supervisor {
    /// Hands `event` to the machine, then does what it asks.
    fn feed(&mut self, event: Event) {
        self.machine.handle(Instant::now(), event);
        self.act();
    }

    /// Carries out the machine's actions, in order, until it asks for no
    /// more (a spawn's result is handed back to it at once).
    fn act(&mut self) {
        while let Some(action) = self.machine.next_action() {
            match action {
                Action::Spawn { svc, run } => {
                    let event = match self.spawn(svc, run) {
                        Ok(pid) => {
                            self.running[svc] = Arc::new(AtomicBool::new(true));
                            Event::Spawned { svc, pid }
                        }
                        Err(error) => Event::SpawnFailed { svc, error },
                    };
                    self.machine.handle(Instant::now(), event);
                }
                Action::CheckReady { svc, run } => self.check_ready(svc, run),
                Action::CheckHealth { svc, run } => self.check_health(svc, run),
                Action::Signal { pid, signal, .. } => {
                    let _ = killpg(pid, signal);
                }
                Action::Arm { at, timer } => self.arm(at, timer),
            }
        }
        while let Some(notice) = self.machine.next_notice() {
            let name = |svc: usize| self.machine.spec(svc).name.clone();
            let progress = match notice {
                Notice::Started { svc, pid } => {
                    Progress::Started { service: name(svc), pid: pid.as_raw() as u32 }
                }
                Notice::Ready { svc, secs } => Progress::Ready { service: name(svc), secs },
                Notice::Exited { svc, exit } => {
                    Progress::Exited { service: name(svc), exit: exit.to_string() }
                }
                Notice::AllReady { secs } => Progress::AllReady { secs },
                Notice::Failed { svc, message } => {
                    Progress::Failed { service: svc.map(name), message }
                }
                Notice::Stopping => Progress::Stopping,
            };
            // Nobody listening is fine.
            let _ = self.progress.send(progress);
        }
    }

    /// Carries out what a control client asked.
    fn on_command(&mut self, command: Ask) {
        match command {
            Ask::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Ask::Stop => self.feed(Event::StopAsked),
            Ask::Restart(names) => {
                let svcs = names.iter().filter_map(|n| self.machine.index(n)).collect();
                self.feed(Event::Restart { svcs });
            }
        }
    }

    /// The server as `stigmer server status` shows it.
    fn status(&self) -> Status {
        let now = Instant::now();
        let ago = |at: Instant| {
            let at = std::time::SystemTime::now() - now.saturating_duration_since(at);
            humantime::format_rfc3339_millis(at).to_string()
        };
        let services: Vec<ServiceStatus> = (0..self.machine.len())
            .map(|svc| {
                let spec = self.machine.spec(svc);
                let view = self.machine.view(svc);
                let backend = self.ran_from.lock().unwrap_or_else(|e| e.into_inner())[svc];
                let memfd = (backend == crate::Backend::Memfd).then_some(self.sizes[svc]);
                let result = |r: &machine::CheckResult| CheckResult {
                    ok: r.ok,
                    message: (!r.ok).then(|| r.message.clone()),
                    at: ago(r.at),
                };
                let ready = spec.ready.as_ref().map(|r| CheckStatus {
                    check: r.check.to_string(),
                    last: self.machine.readiness(svc).map(result),
                });
                let health = spec.health.as_ref().map(|h| CheckStatus {
                    check: h.check.to_string(),
                    last: self.machine.health(svc).map(result),
                });
                ServiceStatus {
                    name: spec.name.clone(),
                    payload: spec.payload.clone(),
                    state: view.state.to_owned(),
                    pid: view.pid.map(|p| p.as_raw() as u32),
                    uptime_secs: view.since.map(|t| now.saturating_duration_since(t).as_secs_f64()),
                    restarts: view.restarts,
                    backend: backend.to_string(),
                    rss: view.pid.and_then(sys::rss),
                    memfd,
                    ready,
                    health,
                }
            })
            .collect();
        Status {
            pid: self.main_pid.as_raw() as u32,
            supervisor: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_secs: now.saturating_duration_since(self.t0).as_secs_f64(),
            socket: self.socket.clone(),
            all_ready: !self.machine.stopping()
                && services.iter().all(|s| matches!(s.state.as_str(), "ready" | "completed")),
            stopping: self.machine.stopping(),
            services,
        }
    }

    /// Reaps every child that ended and tells the machine about services.
    fn on_child(&mut self) {
        for (pid, exit) in reap::reap() {
            if self.checks.reaped(pid, exit) {
                continue;
            }
            match self.machine.service_of(pid) {
                Some(svc) => {
                    crash::record(svc, None);
                    self.running[svc].store(false, Ordering::Relaxed);
                    self.feed(Event::Exited { svc, exit });
                }
                None => debug!("reaped orphan {pid} ({exit})"),
            }
        }
    }

    /// Reports [`Event::Timer`] with `timer` at `at`.
    fn arm(&self, at: Instant, timer: Timer) {
        let events = self.events.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            let _ = events.send(Event::Timer(timer));
        });
    }

    /// Spawns run `run` of service `i`, with its output read line by line
    /// (and watched for its `log` check), and returns its pid.
    fn spawn(&self, i: usize, run: u64) -> Result<Pid, SpawnError> {
        let spec = self.machine.spec(i);
        if let Some((address, holder)) = address_taken(spec) {
            return Err(SpawnError::AddressInUse { address, holder });
        }
        let prepared = &self.prepared[i];
        let mut cmd = prepared.command();
        // Every asset it names was prepared with the payloads.
        let path = |name: &str| self.assets[name].path().into_os_string();
        cmd.args(spec.args.iter().map(|a| a.with_paths(path)))
            .envs(spec.env.iter().map(|(k, v)| (k, v.with_paths(path))))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if let Some(cwd) = &spec.cwd {
            cmd.current_dir(cwd);
        }
        for name in spec.assets() {
            self.assets[name].pass_to(&mut cmd).map_err(SpawnError::Launch)?;
        }
        let mut child = spawn_service(self.home, prepared, &mut cmd).map_err(SpawnError::Launch)?;
        // The child is never waited for through std: see `reap`.
        let pid = Pid::from_raw(child.id() as i32);
        crash::record(i, Some(pid));
        let backend = prepared.ran_from(pid.as_raw() as u32);
        self.ran_from.lock().unwrap_or_else(|e| e.into_inner())[i] = backend;
        info!("{}: started (pid {pid}, {backend})", spec.name);

        let log_check = match &spec.ready {
            Some(r) => match &r.check {
                Check::Log(text) => Some(text.clone().into_bytes()),
                _ => None,
            },
            None => None,
        };
        let streams = [
            (child.stdout.take().map(OwnedFd::from), Stream::Stdout),
            (child.stderr.take().map(OwnedFd::from), Stream::Stderr),
        ];
        for (fd, stream) in streams {
            let Some(fd) = fd else { continue };
            let pipe = match tokio::net::unix::pipe::Receiver::from_owned_fd(fd) {
                Ok(p) => p,
                Err(e) => {
                    warn!("{}: cannot read its {stream:?}: {e}", spec.name);
                    continue;
                }
            };
            let sinks = Sinks {
                service: i,
                name: spec.name.clone(),
                tx: self.lines.clone(),
                journal: self.journal.clone(),
            };
            let events = self.events.clone();
            let mut pattern = log_check.clone();
            let pump = logs::pump(pipe, stream, sinks, move |line| {
                if let Some(p) = &pattern {
                    if contains(line, p) {
                        let _ = events.send(Event::Ready { svc: i, run });
                        pattern = None;
                    }
                }
            });
            self.pumps[i].fetch_add(1, Ordering::Relaxed);
            let pumps = Arc::clone(&self.pumps);
            tokio::spawn(async move {
                pump.await;
                pumps[i].fetch_sub(1, Ordering::Relaxed);
            });
        }
        drop(child);
        Ok(pid)
    }

    /// Starts the readiness check of run `run` of service `i`. (A `log`
    /// check is made by the readers of its output; here only its timeout
    /// runs.)
    fn check_ready(&self, i: usize, run: u64) {
        let spec = self.machine.spec(i).clone();
        let Some(ready) = spec.ready.clone() else { return };
        let (events, runner) = (self.events.clone(), self.runner.clone());
        let running = Arc::clone(&self.running[i]);
        tokio::spawn(async move {
            let verdict = match ready.check {
                Check::Log(text) => {
                    tokio::time::sleep(ready.timeout).await;
                    Err(NotReady::NoLine { text })
                }
                check @ Check::Exec { .. } => {
                    checks::wait_exec(&runner, &spec, &check, ready.timeout, &running).await
                }
                check => readiness::wait(&check, ready.timeout).await,
            };
            let event = match verdict {
                Ok(()) => Event::Ready { svc: i, run },
                Err(why) => Event::NotReady { svc: i, run, why },
            };
            let _ = events.send(event);
        });
    }

    /// Runs one health check of run `run` of service `i`.
    fn check_health(&self, i: usize, run: u64) {
        let spec = self.machine.spec(i).clone();
        let Some(health) = spec.health.clone() else { return };
        let (events, runner) = (self.events.clone(), self.runner.clone());
        tokio::spawn(async move {
            let event =
                match checks::health_once(&runner, &spec, &health.check, health.timeout).await {
                    Ok(()) => Event::Healthy { svc: i, run },
                    Err(why) => Event::Unhealthy { svc: i, run, why },
                };
            let _ = events.send(event);
        });
    }
}

/// After the services: sends SIGTERM to every child left (a descendant that
/// left its service's process group and was reparented here), SIGKILL after
/// [`ESCAPEE_GRACE`] (at once in a `hurry`, which a stop signal or the
/// guard's end sets), and returns once no child is left.
async fn stop_escapees(
    hurry: &mut bool,
    signals: &mut Signals,
    events: &mut mpsc::UnboundedReceiver<Event>,
) {
    let me = nix::unistd::getpid();
    let mut told: Vec<Pid> = Vec::new();
    let deadline = tokio::time::Instant::now() + ESCAPEE_GRACE;
    loop {
        let (ended, none_left) = reap::reap_all();
        for (pid, exit) in ended {
            debug!("reaped {pid} ({exit})");
        }
        if none_left {
            return;
        }
        for pid in sys::children(me) {
            if *hurry {
                let _ = kill(pid, Signal::SIGKILL);
            } else if !told.contains(&pid) {
                let name = sys::name(pid).unwrap_or_default();
                info!("pid {pid} ({name}) left its service's process group: sending SIGTERM");
                let _ = kill(pid, Signal::SIGTERM);
                told.push(pid);
            }
        }
        tokio::select! {
            sig = signals.recv() => {
                if let Sig::Stop(sig) = sig {
                    warn!("{sig} again: killing what is left now");
                    *hurry = true;
                }
            }
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
            () = tokio::time::sleep_until(deadline), if !*hurry => {
                warn!("processes still running {} after SIGTERM: killing them",
                    humantime::format_duration(ESCAPEE_GRACE));
                *hurry = true;
            }
            Some(event) = events.recv() => {
                if matches!(event, Event::GuardGone) {
                    *hurry = true;
                }
            }
        }
    }
}

/// Spawns a service. The one place that does; call it only from the
/// supervisor's own thread, `home` (the one in `block_on`, which lives as
/// long as the supervisor): on Linux the service's death signal is tied to
/// the thread that spawns it, and a tokio worker or blocking-pool thread
/// may end at any time.
fn spawn_service(home: ThreadId, prepared: &Prepared, cmd: &mut Command) -> Result<Child> {
    assert_eq!(
        std::thread::current().id(),
        home,
        "services are spawned from the supervisor's thread only"
    );
    // Before anything `prepared` adds: its own last step execs the payload.
    sys::tie_to_parent(cmd);
    // Verifies a cache entry again (refilling it if it is missing or bad)
    // and execs the very descriptor it checked.
    prepared.spawn(cmd)
}

/// If something already answers on the address of service `spec`'s `tcp`
/// or `http` readiness check (that answer would pass the check, and the
/// service could not listen anyway): the address, and who holds it where
/// that can be told.
fn address_taken(spec: &Service) -> Option<(std::net::SocketAddr, Option<String>)> {
    let addr = match &spec.ready.as_ref()?.check {
        Check::Tcp(addr) | Check::Http { addr, .. } => *addr,
        Check::Log(_) | Check::Exec { .. } => return None,
    };
    std::net::TcpStream::connect_timeout(&addr, ADDRESS_CHECK).ok()?;
    Some((addr, sys::who_listens(addr)))
}

/// Test-only (debug builds): with `STIGMER_TEST_PANIC` set, a task panics
/// at a reload (SIGUSR1), to prove the panic hook stops every service. A
/// task on a worker thread, because there, in a debug build, a panic would
/// otherwise end only that task.
fn test_panic() {
    #[cfg(debug_assertions)]
    if std::env::var_os(crate::env::STIGMER_TEST_PANIC).is_some_and(|v| !v.is_empty()) {
        tokio::spawn(async { panic!("{} is set: panicking", crate::env::STIGMER_TEST_PANIC) });
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}
