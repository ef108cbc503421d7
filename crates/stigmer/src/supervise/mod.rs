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
//! as an event, so the rules can be read in one place:
//!
//! - A service starts once every service it depends on is ready. The
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
//! - A service that exits on its own is restarted by its policy, from the
//!   same prepared payload (the same sealed memfd); `restart = "no"`, or too
//!   many restarts, shuts the server down with an error naming it.
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

mod crash;
mod failure;
pub mod guard;
mod logs;
mod readiness;
mod reap;
mod restart;
mod sys;

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt as _;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use crate::manifest::{Check, Manifest, Restart, Service};
use crate::{Catalog, Error, Launch as _, Launcher, Prepared, Result};

use self::logs::{Format, Line, Stream};
use self::restart::{Decision, History};

pub use self::failure::Failure;
pub use self::guard::Guard;
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

/// How `stigmer server` writes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// One JSON object per output line instead of `name | line`.
    pub json_logs: bool,
    /// Colour service names.
    pub color: bool,
}

/// How the server ended.
#[derive(Debug)]
pub enum Outcome {
    /// A requested shutdown in which every service stopped in time.
    Clean,
    /// Anything else, with the reason.
    Failed(Failure),
}

/// Runs the services of `manifest` until they are stopped. Must be called
/// inside a tokio runtime with I/O, time and signals enabled, from
/// `block_on` on a thread that lives as long as the supervisor: services
/// are spawned from that thread (their death signal is tied to it). `guard` is
/// the supervisor's end of [`guard::split`], if there is a guard.
///
/// It installs a panic hook for the whole process: a panic on any thread
/// SIGKILLs every service group, then aborts.
pub async fn serve(
    manifest: Manifest,
    catalog: &Catalog,
    launcher: Arc<Launcher>,
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
    if let Some(guard) = guard {
        // Signals sent since the split were kept pending; now they are
        // handled.
        guard
            .unblock_signals()
            .map_err(|source| Error::Exec { name: "stigmer server".into(), source })?;
        watch_guard(guard.gone, events_tx.clone());
    }

    let prepared = prepare_all(&manifest, catalog, &launcher).await?;
    let names: Vec<String> = manifest.services.iter().map(|s| s.name.clone()).collect();
    let (lines, written) =
        logs::writer(Format { names, json: options.json_logs, color: options.color })
            .map_err(|source| Error::Exec { name: "stigmer server".into(), source })?;
    // Dependencies by index, both ways, so that each start or stop decision
    // costs the edges it looks at, not a search by name of every service.
    let index: HashMap<&str, usize> =
        manifest.services.iter().enumerate().map(|(i, s)| (s.name.as_str(), i)).collect();
    let deps: Vec<Vec<usize>> = manifest
        .services
        .iter()
        .map(|s| s.depends_on.iter().filter_map(|d| index.get(d.as_str()).copied()).collect())
        .collect();
    drop(index);
    let mut dependents = vec![Vec::new(); deps.len()];
    for (i, ds) in deps.iter().enumerate() {
        for &d in ds {
            dependents[d].push(i);
        }
    }
    let services = manifest
        .services
        .into_iter()
        .zip(deps.into_iter().zip(dependents))
        .map(|(spec, (deps, dependents))| {
            let prepared = prepared[&spec.payload].clone();
            Svc {
                spec,
                prepared,
                deps,
                dependents,
                state: State::Waiting,
                run: 0,
                history: History::default(),
            }
        })
        .collect();
    let mut sup = Supervisor {
        services,
        events: events_tx,
        lines,
        shutdown: None,
        t0,
        all_ready: false,
        hurry: false,
        home: std::thread::current().id(),
    };

    loop {
        // First what already happened (the guard may have died while the
        // payloads were prepared): nothing starts after that.
        while let Ok(event) = events.try_recv() {
            sup.on_event(event);
        }
        sup.start_what_can_start();
        sup.stop_what_can_stop();
        if sup.services.iter().all(|s| matches!(s.state, State::Done { .. })) {
            break;
        }
        tokio::select! {
            Some(event) = events.recv() => sup.on_event(event),
            sig = signals.recv() => match sig {
                Sig::Child => sup.on_child(),
                Sig::Stop(sig) => sup.on_stop_request(sig),
                Sig::Reload => sup.reload(),
            },
        }
    }
    sup.stop_escapees(&mut signals, &mut events).await;
    let hurry = sup.hurry;
    let outcome = sup.outcome();
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
    launcher: &Arc<Launcher>,
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

struct Supervisor {
    services: Vec<Svc>,
    events: mpsc::UnboundedSender<Event>,
    lines: mpsc::Sender<Line>,
    shutdown: Option<Shutdown>,
    t0: Instant,
    all_ready: bool,
    /// Set when there is no time for grace any more: a second stop signal,
    /// or the guard is gone.
    hurry: bool,
    /// The thread that runs the supervisor, the only one that spawns.
    home: ThreadId,
}

struct Svc {
    spec: Service,
    prepared: Prepared,
    /// The services it depends on, by index.
    deps: Vec<usize>,
    /// The services that depend on it, by index.
    dependents: Vec<usize>,
    state: State,
    /// Counts spawns, so events about an earlier run are ignored.
    run: u64,
    history: History,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Not started: its dependencies are not ready yet.
    Waiting,
    /// Running; `ready` once its readiness check passed.
    Running { pid: Pid, ready: bool, since: Instant },
    /// Waiting to be restarted.
    Backoff,
    /// Sent its stop signal; `killed` once SIGKILL was needed.
    Stopping { pid: Pid, killed: bool },
    /// Finished; `clean` unless it had to be killed or failed to start.
    Done { clean: bool },
}

#[derive(Debug)]
enum Event {
    Ready {
        svc: usize,
        run: u64,
    },
    NotReady {
        svc: usize,
        run: u64,
        why: NotReady,
    },
    RestartDue {
        svc: usize,
        run: u64,
    },
    StopDeadline {
        svc: usize,
        run: u64,
    },
    /// The guard process ended (its end of the pipe closed).
    GuardGone,
}

#[derive(Debug)]
enum Shutdown {
    Requested(Signal),
    Failed(Failure),
    /// The guard process ended (already logged).
    GuardGone,
}

impl Supervisor {
    fn start_what_can_start(&mut self) {
        if self.shutdown.is_some() {
            return;
        }
        for i in 0..self.services.len() {
            if self.services[i].state != State::Waiting {
                continue;
            }
            let deps_ready = self.services[i]
                .deps
                .iter()
                .all(|&d| matches!(self.services[d].state, State::Running { ready: true, .. }));
            if deps_ready {
                self.spawn(i);
                if self.shutdown.is_some() {
                    return;
                }
            }
        }
    }

    fn spawn(&mut self, i: usize) {
        if let Some((address, holder)) = address_taken(&self.services[i].spec) {
            let svc = &mut self.services[i];
            svc.state = State::Done { clean: false };
            let service = svc.spec.name.clone();
            let failure = Failure::AddressInUse { service, address, holder };
            self.begin_shutdown(Shutdown::Failed(failure));
            return;
        }
        let home = self.home;
        let svc = &mut self.services[i];
        svc.run += 1;
        let run = svc.run;
        let mut cmd = svc.prepared.command();
        cmd.args(&svc.spec.args)
            .envs(&svc.spec.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if let Some(cwd) = &svc.spec.cwd {
            cmd.current_dir(cwd);
        }
        let mut child = match spawn_service(home, &svc.prepared, &mut cmd) {
            Ok(c) => c,
            Err(e) => {
                svc.state = State::Done { clean: false };
                let failure = Failure::Spawn { service: svc.spec.name.clone(), source: e };
                self.begin_shutdown(Shutdown::Failed(failure));
                return;
            }
        };
        // The child is never waited for through std: see `reap`.
        let pid = Pid::from_raw(child.id() as i32);
        crash::record(i, Some(pid));
        svc.state = State::Running { pid, ready: false, since: Instant::now() };
        info!("{}: started (pid {pid}, {})", svc.spec.name, svc.prepared.backend());

        let log_check = match &svc.spec.ready {
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
                    warn!("{}: cannot read its {stream:?}: {e}", svc.spec.name);
                    continue;
                }
            };
            let tx = self.lines.clone();
            let events = self.events.clone();
            let mut pattern = log_check.clone();
            tokio::spawn(logs::pump(pipe, i, stream, tx, move |line| {
                if let Some(p) = &pattern {
                    if contains(line, p) {
                        let _ = events.send(Event::Ready { svc: i, run });
                        pattern = None;
                    }
                }
            }));
        }
        drop(child);

        let events = self.events.clone();
        match svc.spec.ready.clone() {
            None => {
                let _ = events.send(Event::Ready { svc: i, run });
            }
            Some(ready) => {
                tokio::spawn(async move {
                    let what = ready.check.clone();
                    let verdict = match &what {
                        Check::Log(text) => {
                            tokio::time::sleep(ready.timeout).await;
                            Err(NotReady::NoLine { text: text.clone() })
                        }
                        check => readiness::wait(check, ready.timeout).await,
                    };
                    let event = match verdict {
                        Ok(()) => Event::Ready { svc: i, run },
                        Err(why) => Event::NotReady { svc: i, run, why },
                    };
                    let _ = events.send(event);
                });
            }
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Ready { svc, run } => {
                let s = &mut self.services[svc];
                if s.run != run {
                    return;
                }
                if let State::Running { pid, ready: false, since } = s.state {
                    s.state = State::Running { pid, ready: true, since };
                    info!("{}: ready in {:.2}s", s.spec.name, since.elapsed().as_secs_f64());
                }
                let all = self
                    .services
                    .iter()
                    .all(|s| matches!(s.state, State::Running { ready: true, .. }));
                if all && !self.all_ready && self.shutdown.is_none() {
                    self.all_ready = true;
                    info!("all services running ({:.2}s)", self.t0.elapsed().as_secs_f64());
                }
            }
            Event::NotReady { svc, run, why } => {
                let s = &self.services[svc];
                if s.run == run && matches!(s.state, State::Running { ready: false, .. }) {
                    let failure = Failure::NotReady {
                        service: s.spec.name.clone(),
                        timeout: s.spec.ready.as_ref().map(|r| r.timeout).unwrap_or_default(),
                        source: why,
                    };
                    self.begin_shutdown(Shutdown::Failed(failure));
                }
            }
            Event::RestartDue { svc, run } => {
                let s = &self.services[svc];
                if s.run == run && s.state == State::Backoff && self.shutdown.is_none() {
                    self.spawn(svc);
                }
            }
            Event::StopDeadline { svc, run } => {
                let s = &mut self.services[svc];
                if let (true, State::Stopping { pid, killed: false }) = (s.run == run, s.state) {
                    warn!(
                        "{}: still running {} after {}: killing it",
                        s.spec.name,
                        humantime::format_duration(s.spec.stop_timeout),
                        s.spec.stop_signal
                    );
                    let _ = killpg(pid, Signal::SIGKILL);
                    s.state = State::Stopping { pid, killed: true };
                }
            }
            Event::GuardGone => {
                error!("the guard process is gone: killing all services now");
                self.begin_shutdown(Shutdown::GuardGone);
                self.kill_all();
            }
        }
    }

    fn on_child(&mut self) {
        for (pid, exit) in reap::reap() {
            let Some(i) = self.services.iter().position(|s| match s.state {
                State::Running { pid: p, .. } | State::Stopping { pid: p, .. } => p == pid,
                _ => false,
            }) else {
                debug!("reaped orphan {pid} ({exit})");
                continue;
            };
            // Whatever the leader left in its group goes with it.
            let _ = killpg(pid, Signal::SIGKILL);
            self.on_exit(i, exit);
        }
    }

    fn on_exit(&mut self, i: usize, exit: Exit) {
        crash::record(i, None);
        let s = &mut self.services[i];
        match s.state {
            State::Stopping { killed, .. } => {
                info!("{}: stopped ({exit})", s.spec.name);
                s.state = State::Done { clean: !killed };
            }
            State::Running { .. } if self.shutdown.is_some() => {
                info!("{}: exited ({exit})", s.spec.name);
                s.state = State::Done { clean: true };
            }
            State::Running { .. } => {
                let spec = &s.spec;
                let decision = s.history.decide(
                    spec.restart,
                    exit.failed(),
                    spec.max_restarts,
                    spec.restart_window,
                    Instant::now(),
                );
                match (decision, spec.restart) {
                    (Decision::Done, Restart::No) => {
                        s.state = State::Done { clean: false };
                        let failure = Failure::NotRestarted { service: spec.name.clone(), exit };
                        self.begin_shutdown(Shutdown::Failed(failure));
                    }
                    (Decision::Done, _) => {
                        info!(
                            "{}: exited ({exit}); not restarted (restart = \"{}\")",
                            spec.name, spec.restart
                        );
                        s.state = State::Done { clean: true };
                    }
                    (Decision::RestartAfter(delay), _) => {
                        warn!(
                            "{}: exited ({exit}); restarting in {} ({} of {} allowed in {})",
                            spec.name,
                            humantime::format_duration(delay),
                            s.history.count(),
                            spec.max_restarts,
                            humantime::format_duration(spec.restart_window)
                        );
                        s.state = State::Backoff;
                        let (events, run) = (self.events.clone(), s.run);
                        tokio::spawn(async move {
                            tokio::time::sleep(delay).await;
                            let _ = events.send(Event::RestartDue { svc: i, run });
                        });
                    }
                    (Decision::GiveUp, _) => {
                        s.state = State::Done { clean: false };
                        let failure = Failure::GaveUp {
                            service: spec.name.clone(),
                            exit,
                            max_restarts: spec.max_restarts,
                            window: spec.restart_window,
                        };
                        self.begin_shutdown(Shutdown::Failed(failure));
                    }
                }
            }
            _ => {}
        }
    }

    fn on_stop_request(&mut self, sig: Signal) {
        if self.shutdown.is_none() {
            info!("{sig}: stopping all services");
            self.begin_shutdown(Shutdown::Requested(sig));
            return;
        }
        warn!("{sig} again: killing all services now");
        self.kill_all();
    }

    /// SIGKILLs every service group at once, and gives up all grace.
    fn kill_all(&mut self) {
        self.hurry = true;
        for s in &mut self.services {
            if let State::Running { pid, .. } | State::Stopping { pid, .. } = s.state {
                let _ = killpg(pid, Signal::SIGKILL);
                s.state = State::Stopping { pid, killed: true };
            }
        }
    }

    /// SIGUSR1: each running service with a `reload_signal` gets it.
    fn reload(&self) {
        test_panic();
        if self.shutdown.is_some() {
            return;
        }
        let mut none = true;
        for s in &self.services {
            if let (State::Running { pid, .. }, Some(sig)) = (s.state, s.spec.reload_signal) {
                info!("{}: reload ({sig})", s.spec.name);
                let _ = killpg(pid, sig);
                none = false;
            }
        }
        if none {
            info!("SIGUSR1: no running service has a reload_signal");
        }
    }

    /// After the services: sends SIGTERM to every child left (a descendant
    /// that left its service's process group and was reparented here),
    /// SIGKILL after [`ESCAPEE_GRACE`] (at once in a hurry), and returns
    /// once no child is left.
    async fn stop_escapees(
        &mut self,
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
                if self.hurry {
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
                        self.hurry = true;
                    }
                }
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
                () = tokio::time::sleep_until(deadline), if !self.hurry => {
                    warn!("processes still running {} after SIGTERM: killing them",
                        humantime::format_duration(ESCAPEE_GRACE));
                    self.hurry = true;
                }
                Some(event) = events.recv() => {
                    if matches!(event, Event::GuardGone) {
                        self.hurry = true;
                    }
                }
            }
        }
    }

    fn begin_shutdown(&mut self, why: Shutdown) {
        if self.shutdown.is_some() {
            return;
        }
        if let Shutdown::Failed(failure) = &why {
            error!("{failure}; stopping all services");
        }
        self.shutdown = Some(why);
        for s in &mut self.services {
            if matches!(s.state, State::Waiting | State::Backoff) {
                s.state = State::Done { clean: true };
            }
        }
    }

    /// In a shutdown, sends its stop signal to every running service that
    /// no running service depends on (reverse dependency order).
    fn stop_what_can_stop(&mut self) {
        if self.shutdown.is_none() {
            return;
        }
        for i in 0..self.services.len() {
            let State::Running { pid, .. } = self.services[i].state else { continue };
            let needed = self.services[i].dependents.iter().any(|&j| {
                matches!(self.services[j].state, State::Running { .. } | State::Stopping { .. })
            });
            if needed {
                continue;
            }
            let s = &mut self.services[i];
            debug!("{}: sending {}", s.spec.name, s.spec.stop_signal);
            let _ = killpg(pid, s.spec.stop_signal);
            s.state = State::Stopping { pid, killed: false };
            let (events, run, timeout) = (self.events.clone(), s.run, s.spec.stop_timeout);
            tokio::spawn(async move {
                tokio::time::sleep(timeout).await;
                let _ = events.send(Event::StopDeadline { svc: i, run });
            });
        }
    }

    fn outcome(self) -> Outcome {
        match self.shutdown {
            Some(Shutdown::Failed(failure)) => Outcome::Failed(failure),
            Some(Shutdown::GuardGone) => Outcome::Failed(Failure::GuardGone),
            Some(Shutdown::Requested(sig)) => {
                let killed: Vec<String> = self
                    .services
                    .into_iter()
                    .filter(|s| s.state == State::Done { clean: false })
                    .map(|s| s.spec.name)
                    .collect();
                if killed.is_empty() {
                    info!("all services stopped after {sig}");
                    Outcome::Clean
                } else {
                    Outcome::Failed(Failure::Killed { services: killed })
                }
            }
            None => Outcome::Failed(Failure::AllExited),
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
        Check::Log(_) => return None,
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
