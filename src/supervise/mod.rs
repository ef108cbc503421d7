//! `stigmer server`: start every service of the manifest, in dependency
//! order with readiness checks, stream their output, forward signals,
//! restart by policy, and stop them all cleanly.
//!
//! One task owns all the state. Everything that happens (a signal, a child
//! that ended, a readiness verdict, a timer) reaches it as an event, so the
//! rules can be read in one place:
//!
//! - A service starts once every service it depends on is ready. The
//!   payloads are prepared in parallel before anything starts.
//! - Each service is the leader of its own process group; signals go to the
//!   group, so nothing it started is left behind.
//! - SIGINT or SIGTERM starts a shutdown: a service is sent its stop signal
//!   once nothing that depends on it still runs, and SIGKILL after its
//!   `stop_timeout`. A second SIGINT or SIGTERM kills everything at once.
//!   SIGHUP is passed on to every service.
//! - A service that exits on its own is restarted by its policy, from the
//!   same prepared payload (the same sealed memfd); `restart = "no"`, or too
//!   many restarts, shuts the server down with an error naming it.
//! - Reaping: see [`reap`]; stigmer behaves as a proper PID 1.

mod logs;
mod readiness;
mod reap;
mod restart;

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt as _;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Instant;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use crate::manifest::{Check, Manifest, Restart, Service};
use crate::{Catalog, Error, Launch as _, Launcher, Prepared, Result};

use self::logs::{Format, Line, Stream};
use self::reap::Exit;
use self::restart::{Decision, History};

/// How `stigmer server` writes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// One JSON object per output line instead of `name | line`.
    pub json_logs: bool,
    /// Colour service names.
    pub color: bool,
}

/// How the server ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A requested shutdown in which every service stopped in time.
    Clean,
    /// Anything else, with the reason.
    Failed(String),
}

/// Runs the services of `manifest` until they are stopped. Must be called
/// inside a tokio runtime with I/O, time and signals enabled.
pub async fn serve(
    manifest: Manifest,
    catalog: &Catalog,
    launcher: Arc<Launcher>,
    options: Options,
) -> Result<Outcome> {
    let t0 = Instant::now();
    reap::become_subreaper();
    // Listen before anything starts, so no signal is missed.
    let mut signals =
        Signals::new().map_err(|source| Error::Exec { name: "stigmer server".into(), source })?;

    let prepared = prepare_all(&manifest, catalog, &launcher).await?;
    let names: Vec<String> = manifest.services.iter().map(|s| s.name.clone()).collect();
    let (lines, writer) =
        logs::writer(Format { names, json: options.json_logs, color: options.color });
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let services = manifest
        .services
        .into_iter()
        .map(|spec| {
            let prepared = prepared[&spec.payload].clone();
            Svc { spec, prepared, state: State::Waiting, run: 0, history: History::default() }
        })
        .collect();
    let mut sup =
        Supervisor { services, events: events_tx, lines, shutdown: None, t0, all_ready: false };

    loop {
        sup.start_what_can_start();
        sup.stop_what_can_stop();
        if sup.services.iter().all(|s| matches!(s.state, State::Done { .. })) {
            break;
        }
        tokio::select! {
            Some(event) = events.recv() => sup.on_event(event),
            _ = signals.child.recv() => sup.on_child(),
            _ = signals.interrupt.recv() => sup.on_stop_request(Signal::SIGINT),
            _ = signals.terminate.recv() => sup.on_stop_request(Signal::SIGTERM),
            _ = signals.hangup.recv() => sup.forward(Signal::SIGHUP),
        }
    }
    let outcome = sup.outcome();
    drop(sup);
    // Every reader has ended with its service; wait for the last lines.
    let _ = tokio::task::spawn_blocking(move || writer.join()).await;
    Ok(outcome)
}

struct Signals {
    child: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        Ok(Signals {
            child: signal(SignalKind::child())?,
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
        })
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
        let p = task.await.expect("preparing a payload panicked")?;
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
}

struct Svc {
    spec: Service,
    prepared: Prepared,
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
    Ready { svc: usize, run: u64 },
    NotReady { svc: usize, run: u64, why: String },
    RestartDue { svc: usize, run: u64 },
    StopDeadline { svc: usize, run: u64 },
}

#[derive(Clone, Debug)]
enum Shutdown {
    Requested(Signal),
    Failed(String),
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
            let deps_ready = self.services[i].spec.depends_on.iter().all(|d| {
                self.services.iter().any(|s| {
                    &s.spec.name == d && matches!(s.state, State::Running { ready: true, .. })
                })
            });
            if deps_ready {
                self.spawn(i);
                if self.shutdown.is_some() {
                    return;
                }
            }
        }
    }

    fn spawn(&mut self, i: usize) {
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
        // Verifies a cache entry again (refilling it if it is missing or
        // bad) and execs the very descriptor it checked.
        let mut child = match svc.prepared.spawn(&mut cmd) {
            Ok(c) => c,
            Err(e) => {
                svc.state = State::Done { clean: false };
                let msg = format!("{}: {e}", svc.spec.name);
                self.begin_shutdown(Shutdown::Failed(msg));
                return;
            }
        };
        // The child is never waited for through std: see `reap`.
        let pid = Pid::from_raw(child.id() as i32);
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
                            Err(format!("no output line contained {text:?}"))
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
                    let timeout = s.spec.ready.as_ref().map(|r| r.timeout).unwrap_or_default();
                    let msg = format!(
                        "{} was not ready within {}: {why}",
                        s.spec.name,
                        humantime::format_duration(timeout)
                    );
                    self.begin_shutdown(Shutdown::Failed(msg));
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
                        let msg = format!(
                            "{} exited ({exit}) and its restart policy is \"no\"",
                            spec.name
                        );
                        self.begin_shutdown(Shutdown::Failed(msg));
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
                        let msg = format!(
                            "{} exited ({exit}) after {} restarts within {}: giving up",
                            spec.name,
                            spec.max_restarts,
                            humantime::format_duration(spec.restart_window)
                        );
                        self.begin_shutdown(Shutdown::Failed(msg));
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
        for s in &mut self.services {
            if let State::Running { pid, .. } | State::Stopping { pid, .. } = s.state {
                let _ = killpg(pid, Signal::SIGKILL);
                s.state = State::Stopping { pid, killed: true };
            }
        }
    }

    fn forward(&self, sig: Signal) {
        for s in &self.services {
            if let State::Running { pid, .. } = s.state {
                debug!("{}: forwarding {sig}", s.spec.name);
                let _ = killpg(pid, sig);
            }
        }
    }

    fn begin_shutdown(&mut self, why: Shutdown) {
        if self.shutdown.is_some() {
            return;
        }
        if let Shutdown::Failed(msg) = &why {
            error!("{msg}; stopping all services");
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
            let name = &self.services[i].spec.name;
            let needed = self.services.iter().any(|s| {
                s.spec.depends_on.contains(name)
                    && matches!(s.state, State::Running { .. } | State::Stopping { .. })
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

    fn outcome(&self) -> Outcome {
        match &self.shutdown {
            Some(Shutdown::Failed(msg)) => Outcome::Failed(msg.clone()),
            Some(Shutdown::Requested(sig)) => {
                let killed: Vec<&str> = self
                    .services
                    .iter()
                    .filter(|s| s.state == State::Done { clean: false })
                    .map(|s| s.spec.name.as_str())
                    .collect();
                if killed.is_empty() {
                    info!("all services stopped after {sig}");
                    Outcome::Clean
                } else {
                    Outcome::Failed(format!("{} had to be killed", killed.join(", ")))
                }
            }
            None => Outcome::Failed("every service exited on its own".into()),
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}
