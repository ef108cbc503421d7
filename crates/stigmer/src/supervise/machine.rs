//! The supervisor's decisions, as a state machine that starts no process,
//! sends no signal and reads no clock.
//!
//! The shell in `supervise/mod.rs` feeds it [`Event`]s (a service was
//! spawned, became ready, exited; a timer fired; a signal came) with the
//! time they are handled at, and carries out the [`Action`]s it asks for
//! (spawn a service, start its readiness check, signal its process group,
//! arm a timer). Everything the supervisor decides is here, so it is
//! tested below with made-up pids and instants, without processes and
//! without sleeps; the shell is left with the system calls, each tested
//! against the real kernel by the integration tests.
//!
//! The rules, in the order a server lives them:
//!
//! - **Start.** A service starts once every service it depends on meets
//!   its condition (`started`: running; `healthy`: running and ready;
//!   `completed_successfully`: completed), one spawn at a time: after
//!   [`Action::Spawn`] nothing else starts until the shell reports
//!   [`Event::Spawned`] or [`Event::SpawnFailed`], so a failed spawn stops
//!   what would have followed it.
//! - **Ready.** A service without a check is ready once spawned; with one,
//!   once the shell reports [`Event::Ready`] for that run. A check that
//!   fails ([`Event::NotReady`]) fails the server, and its dependents never
//!   start.
//! - **Restart.** A service that exits on its own is restarted by its
//!   policy after a backoff (see `restart`), through a timer; past
//!   `max_restarts` within `restart_window`, or with `restart = "no"`, the
//!   server shuts down with a [`Failure`].
//! - **Complete.** A service that exits with status 0 and is not run again
//!   (`restart = "on-failure"`, or a *job*: `restart = "no"` and some
//!   service waits for it with `completed_successfully`) is completed: a
//!   terminal, clean state, which starts its `completed_successfully`
//!   dependents. A job that fails stops the server: what waits for it can
//!   never start. So does a completed service that a waiting dependent
//!   needed `healthy`. "All services running" means every service is
//!   ready or completed, and at least one runs.
//! - **Liveness.** A service with a `health` check is checked every
//!   `interval` while it runs and is ready (timers, then
//!   [`Action::CheckHealth`]); a pass resets the count, and `retries`
//!   failures in a row (not counting those within `start_period` of its
//!   readiness) make it unhealthy: it is stopped as in a shutdown (stop
//!   signal, SIGKILL after `stop_timeout`) and its exit is a failure for
//!   its restart policy; with `restart = "no"` the server fails. No check
//!   runs in a shutdown. See the `health` module.
//! - **Stop.** In a shutdown a running service gets its stop signal once no
//!   service that depends on it still runs (reverse dependency order), and
//!   SIGKILL when its `stop_timeout` timer fires first. A second stop
//!   signal, or the guard's end, SIGKILLs every group at once.
//!
//! Events about an earlier run of a service (a readiness or health verdict,
//! a timer) carry its run number and are ignored once it has been spawned
//! again. The last readiness and health results of each service are kept
//! for a status to read ([`Machine::readiness`], [`Machine::health`]).

use std::collections::VecDeque;
use std::time::Instant;

use humantime::format_duration;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tracing::{debug, error, info, warn};

use crate::manifest::{Condition, Restart, Service};

use super::Outcome;
use super::failure::{Failure, SpawnError};
use super::readiness::NotReady;
use super::reap::Exit;
use super::restart::{Decision, History};

mod health;

pub(crate) use health::CheckResult;

/// Something that happened, for the machine to act on.
#[derive(Debug)]
pub(crate) enum Event {
    /// Service `svc` was spawned as the leader of process group `pid`.
    Spawned { svc: usize, pid: Pid },
    /// Service `svc` could not be spawned.
    SpawnFailed { svc: usize, error: SpawnError },
    /// Run `run` of service `svc` passed its readiness check.
    Ready { svc: usize, run: u64 },
    /// Run `run` of service `svc` failed its readiness check.
    NotReady { svc: usize, run: u64, why: NotReady },
    /// Run `run` of service `svc` passed a health check.
    Healthy { svc: usize, run: u64 },
    /// Run `run` of service `svc` failed a health check.
    Unhealthy { svc: usize, run: u64, why: NotReady },
    /// Service `svc` (its process group leader) ended and was reaped.
    Exited { svc: usize, exit: Exit },
    /// A timer armed by [`Action::Arm`] fired.
    Timer(Timer),
    /// A signal that stops the server: SIGINT, SIGTERM, SIGHUP or SIGQUIT.
    Stop(Signal),
    /// SIGUSR1: a reload.
    Reload,
    /// The guard process ended (its end of the pipe closed).
    GuardGone,
    /// `stigmer server stop`, through the control channel.
    StopAsked,
    /// `stigmer server restart`: restart these services (every one when
    /// empty), in dependency order.
    Restart { svcs: Vec<usize> },
}

/// Something worth telling a client of the control channel (`server
/// start` prints these as they come).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Notice {
    /// Service `svc` was spawned as `pid`.
    Started { svc: usize, pid: Pid },
    /// Service `svc` passed its readiness check, `secs` after it started.
    Ready { svc: usize, secs: f64 },
    /// Service `svc` ended.
    Exited { svc: usize, exit: Exit },
    /// Every service is ready, `secs` after the server began.
    AllReady { secs: f64 },
    /// The server failed, because of `svc` if one: it is shutting down.
    Failed { svc: Option<usize>, message: String },
    /// A requested shutdown began.
    Stopping,
}

/// What the machine asks the shell to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Spawn service `svc` (its run `run`), then report
    /// [`Event::Spawned`] or [`Event::SpawnFailed`] before anything else.
    Spawn { svc: usize, run: u64 },
    /// Start the readiness check of run `run` of service `svc`; it reports
    /// [`Event::Ready`] or [`Event::NotReady`].
    CheckReady { svc: usize, run: u64 },
    /// Run one health check of run `run` of service `svc`; it reports
    /// [`Event::Healthy`] or [`Event::Unhealthy`].
    CheckHealth { svc: usize, run: u64 },
    /// Send `signal` to the process group `pid` of service `svc`.
    Signal { svc: usize, pid: Pid, signal: Signal },
    /// Report [`Event::Timer`] with `timer` at `at`.
    Arm { at: Instant, timer: Timer },
}

/// A timer the machine armed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Timer {
    /// Run `run` of service `svc` ended; its backoff is over.
    Restart { svc: usize, run: u64 },
    /// Run `run` of service `svc` was sent its stop signal; its
    /// `stop_timeout` is over.
    StopDeadline { svc: usize, run: u64 },
    /// Run `run` of service `svc` is due for a health check.
    Health { svc: usize, run: u64 },
}

/// Where one service is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Not started: its dependencies are not ready yet.
    Waiting,
    /// [`Action::Spawn`] was asked for; its answer has not come yet.
    Starting,
    /// Running; `ready` once its readiness check passed.
    Running { pid: Pid, ready: bool, since: Instant },
    /// Waiting to be restarted.
    Backoff,
    /// Sent its stop signal; `killed` once SIGKILL was needed.
    Stopping { pid: Pid, killed: bool },
    /// Finished; `clean` unless it had to be killed or failed.
    Done { clean: bool },
    /// Exited with status 0, and its policy does not run it again (a job,
    /// or `restart = "on-failure"`): finished, clean, and what
    /// `completed_successfully` waits for.
    Completed,
}

/// Who asked for a shutdown.
#[derive(Clone, Copy, Debug)]
enum Asked {
    /// A stop signal.
    Signal(Signal),
    /// `stigmer server stop`.
    Control,
}

impl std::fmt::Display for Asked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Asked::Signal(sig) => write!(f, "{sig}"),
            Asked::Control => f.write_str("stigmer server stop"),
        }
    }
}

/// Why the server is shutting down.
#[derive(Debug)]
enum Shutdown {
    /// A stop signal, or `stigmer server stop`.
    Requested(Asked),
    /// A service failed.
    Failed(Failure),
    /// The guard process ended.
    GuardGone,
}

#[derive(Debug)]
struct Svc {
    spec: Service,
    /// The services it depends on, by index, each with its condition.
    deps: Vec<(usize, Condition)>,
    /// The services that depend on it, by index.
    dependents: Vec<usize>,
    state: State,
    /// Counts spawns, so events about an earlier run are ignored.
    run: u64,
    history: History,
    /// Set by [`Event::Restart`] until it is stopped for the restart.
    restart_asked: bool,
    /// A one-shot job: `restart = "no"`, and some service waits for it with
    /// `completed_successfully`, so its exit 0 completes it instead of
    /// stopping the server.
    job: bool,
    /// Its liveness: failures in a row, when its run became ready, and
    /// the last results.
    live: health::Live,
}

/// One service as [`Machine::view`] shows it.
#[derive(Clone, Debug)]
pub(crate) struct View {
    /// Where it is: `starting`, `ready`, `restarting`, `stopping`,
    /// `completed` (a job), `stopped` or `failed`.
    pub(crate) state: &'static str,
    /// Its process group leader, while it runs.
    pub(crate) pid: Option<Pid>,
    /// When its current run started.
    pub(crate) since: Option<Instant>,
    /// How often it was started again.
    pub(crate) restarts: u32,
}

/// The supervisor's state and rules.
#[derive(Debug)]
pub(crate) struct Machine {
    services: Vec<Svc>,
    shutdown: Option<Shutdown>,
    /// When the server began, for "all services running (Ns)".
    t0: Instant,
    all_ready: bool,
    /// Set when there is no time for grace any more: a second stop signal,
    /// or the guard is gone.
    hurry: bool,
    actions: VecDeque<Action>,
    notices: VecDeque<Notice>,
}

impl Machine {
    /// A machine for `services` (each `depends_on` names another of them;
    /// any order), none started yet; the server began at `t0`.
    pub(crate) fn new(services: Vec<Service>, t0: Instant) -> Machine {
        let index = |name: &str| services.iter().position(|s| s.name == name);
        // Dependencies by index, both ways, so that each start or stop
        // decision costs the edges it looks at, not a search by name.
        let deps: Vec<Vec<(usize, Condition)>> = services
            .iter()
            .map(|s| {
                s.depends_on.iter().filter_map(|d| Some((index(&d.name)?, d.condition))).collect()
            })
            .collect();
        let mut dependents = vec![Vec::new(); deps.len()];
        let mut awaited = vec![false; deps.len()];
        for (i, ds) in deps.iter().enumerate() {
            for &(d, condition) in ds {
                dependents[d].push(i);
                awaited[d] |= condition == Condition::CompletedSuccessfully;
            }
        }
        let services = services
            .into_iter()
            .zip(deps.into_iter().zip(dependents))
            .zip(awaited)
            .map(|((spec, (deps, dependents)), awaited)| Svc {
                job: awaited && spec.restart == Restart::No,
                spec,
                deps,
                dependents,
                state: State::Waiting,
                run: 0,
                history: History::default(),
                restart_asked: false,
                live: health::Live::default(),
            })
            .collect();
        Machine {
            services,
            shutdown: None,
            t0,
            all_ready: false,
            hurry: false,
            actions: VecDeque::new(),
            notices: VecDeque::new(),
        }
    }

    /// The manifest entry of service `svc`.
    pub(crate) fn spec(&self, svc: usize) -> &Service {
        &self.services[svc].spec
    }

    /// The last result of service `svc`'s readiness check, if it ran.
    #[cfg_attr(not(test), allow(dead_code, reason = "for the status snapshot"))]
    pub(crate) fn readiness(&self, svc: usize) -> Option<&CheckResult> {
        self.services[svc].live.ready.as_ref()
    }

    /// The last result of service `svc`'s health check, if one ran.
    pub(crate) fn health(&self, svc: usize) -> Option<&CheckResult> {
        self.services[svc].live.health.as_ref()
    }

    /// The service whose process group leader is `pid`, while it runs.
    pub(crate) fn service_of(&self, pid: Pid) -> Option<usize> {
        self.services.iter().position(|s| match s.state {
            State::Running { pid: p, .. } | State::Stopping { pid: p, .. } => p == pid,
            _ => false,
        })
    }

    /// Whether every service has finished: the server is over.
    pub(crate) fn finished(&self) -> bool {
        self.services.iter().all(|s| matches!(s.state, State::Done { .. } | State::Completed))
    }

    /// Whether there is no time for grace any more.
    pub(crate) fn hurry(&self) -> bool {
        self.hurry
    }

    /// The next action to carry out, in order.
    pub(crate) fn next_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next notice for control clients, in order.
    pub(crate) fn next_notice(&mut self) -> Option<Notice> {
        self.notices.pop_front()
    }

    /// How many services there are.
    pub(crate) fn len(&self) -> usize {
        self.services.len()
    }

    /// The index of the service called `name`.
    pub(crate) fn index(&self, name: &str) -> Option<usize> {
        self.services.iter().position(|s| s.spec.name == name)
    }

    /// Whether the server is shutting down.
    pub(crate) fn stopping(&self) -> bool {
        self.shutdown.is_some()
    }

    /// Service `svc` as a status shows it.
    pub(crate) fn view(&self, svc: usize) -> View {
        let s = &self.services[svc];
        let (state, pid, since) = match s.state {
            State::Waiting | State::Starting => ("starting", None, None),
            State::Running { pid, ready: false, since } => ("starting", Some(pid), Some(since)),
            State::Running { pid, ready: true, since } => ("ready", Some(pid), Some(since)),
            State::Backoff => ("restarting", None, None),
            State::Stopping { pid, .. } if s.restart_asked || self.shutdown.is_none() => {
                ("restarting", Some(pid), None)
            }
            State::Stopping { pid, .. } => ("stopping", Some(pid), None),
            State::Completed => ("completed", None, None),
            State::Done { clean: true } => ("stopped", None, None),
            State::Done { clean: false } => ("failed", None, None),
        };
        let restarts = u32::try_from(s.run.saturating_sub(1)).unwrap_or(u32::MAX);
        View { state, pid, since, restarts }
    }

    /// Starts what can start, at `now`: call it once, after the events that
    /// came before the start (the guard may already be gone).
    pub(crate) fn start(&mut self, now: Instant) {
        self.advance(now);
    }

    /// Acts on `event`, handled at `now`.
    pub(crate) fn handle(&mut self, now: Instant, event: Event) {
        match event {
            Event::Spawned { svc, pid } => self.on_spawned(now, svc, pid),
            Event::SpawnFailed { svc, error } => {
                let s = &mut self.services[svc];
                if s.state == State::Starting {
                    s.state = State::Done { clean: false };
                    let failure = error.into_failure(&s.spec.name);
                    self.begin_shutdown(Shutdown::Failed(failure));
                }
            }
            Event::Ready { svc, run } => self.on_ready(now, svc, run),
            Event::NotReady { svc, run, why } => {
                let s = &mut self.services[svc];
                if s.run == run && matches!(s.state, State::Running { ready: false, .. }) {
                    s.live.ready = Some(CheckResult::failed(now, run, &why, 1));
                    let failure = Failure::NotReady {
                        service: s.spec.name.clone(),
                        timeout: s.spec.ready.as_ref().map(|r| r.timeout).unwrap_or_default(),
                        source: why,
                    };
                    self.begin_shutdown(Shutdown::Failed(failure));
                }
            }
            Event::Healthy { svc, run } => self.on_healthy(now, svc, run),
            Event::Unhealthy { svc, run, why } => self.on_unhealthy(now, svc, run, why),
            Event::Timer(Timer::Health { svc, run }) => self.on_health_due(svc, run),
            Event::Exited { svc, exit } => self.on_exit(now, svc, exit),
            Event::Timer(Timer::Restart { svc, run }) => {
                let s = &self.services[svc];
                if s.run == run && s.state == State::Backoff && self.shutdown.is_none() {
                    self.spawn(svc);
                }
            }
            Event::Timer(Timer::StopDeadline { svc, run }) => {
                let s = &mut self.services[svc];
                if let (true, State::Stopping { pid, killed: false }) = (s.run == run, s.state) {
                    warn!(
                        "{}: still running {} after {}: killing it",
                        s.spec.name,
                        format_duration(s.spec.stop_timeout),
                        s.spec.stop_signal
                    );
                    s.state = State::Stopping { pid, killed: true };
                    self.actions.push_back(Action::Signal { svc, pid, signal: Signal::SIGKILL });
                }
            }
            Event::Stop(sig) => {
                if self.shutdown.is_none() {
                    info!("{sig}: stopping all services");
                    self.begin_shutdown(Shutdown::Requested(Asked::Signal(sig)));
                } else {
                    warn!("{sig} again: killing all services now");
                    self.kill_all();
                }
            }
            // A second one waits for the first: only a signal hurries.
            Event::StopAsked => {
                if self.shutdown.is_none() {
                    info!("stigmer server stop: stopping all services");
                    self.begin_shutdown(Shutdown::Requested(Asked::Control));
                }
            }
            Event::Restart { svcs } => self.restart(now, svcs),
            Event::Reload => self.reload(),
            Event::GuardGone => {
                error!("the guard process is gone: killing all services now");
                self.begin_shutdown(Shutdown::GuardGone);
                self.kill_all();
            }
        }
        self.advance(now);
    }

    /// How the server ended; call it once [`Machine::finished`].
    pub(crate) fn outcome(self) -> Outcome {
        match self.shutdown {
            Some(Shutdown::Failed(failure)) => Outcome::Failed(failure),
            Some(Shutdown::GuardGone) => Outcome::Failed(Failure::GuardGone),
            Some(Shutdown::Requested(asked)) => {
                let killed: Vec<String> = self
                    .services
                    .into_iter()
                    .filter(|s| s.state == State::Done { clean: false })
                    .map(|s| s.spec.name)
                    .collect();
                if killed.is_empty() {
                    info!("all services stopped after {asked}");
                    Outcome::Clean
                } else {
                    Outcome::Failed(Failure::Killed { services: killed })
                }
            }
            None => Outcome::Failed(Failure::AllExited),
        }
    }

    /// After any event: starts what can start, or stops what can stop.
    fn advance(&mut self, now: Instant) {
        if self.shutdown.is_none() {
            self.stop_for_restart(now);
            // It may find a service that can never start, and shut down.
            self.start_next();
        }
        if self.shutdown.is_some() {
            self.stop_what_can_stop(now);
        }
    }

    /// Starts the first service, in manifest order, that waits and whose
    /// dependencies all meet their conditions, unless a spawn is under way.
    /// A waiting service that needs a completed one `healthy` can never
    /// start: the server fails.
    fn start_next(&mut self) {
        if self.services.iter().any(|s| s.state == State::Starting) {
            return;
        }
        let stranded = self.services.iter().find_map(|s| {
            let waiting = s.state == State::Waiting;
            s.deps
                .iter()
                .find(|&&(d, c)| {
                    waiting && c == Condition::Healthy && self.services[d].state == State::Completed
                })
                .map(|&(d, _)| (s.spec.name.clone(), self.services[d].spec.name.clone()))
        });
        if let Some((service, dependency)) = stranded {
            let failure = Failure::DependencyCompleted { service, dependency };
            self.begin_shutdown(Shutdown::Failed(failure));
            return;
        }
        let next = self.services.iter().position(|s| {
            s.state == State::Waiting
                && s.deps.iter().all(|&(d, c)| self.met(d, c))
                && !s.dependents.iter().any(|&j| self.restarting(j))
        });
        if let Some(svc) = next {
            self.spawn(svc);
        }
    }

    /// Whether service `svc` was asked to restart and has not stopped yet:
    /// what it depends on waits for that before it starts again (a restart
    /// of everything runs a job again only once what needs it is down).
    fn restarting(&self, svc: usize) -> bool {
        let s = &self.services[svc];
        s.restart_asked && matches!(s.state, State::Running { .. } | State::Stopping { .. })
    }

    /// Whether service `dep` has got as far as `condition` asks.
    fn met(&self, dep: usize, condition: Condition) -> bool {
        // One asked to restart is about to stop: wait for its next run.
        if self.services[dep].restart_asked {
            return false;
        }
        match (condition, self.services[dep].state) {
            (Condition::Started, State::Running { .. } | State::Completed) => true,
            (Condition::Healthy, State::Running { ready, .. }) => ready,
            (Condition::CompletedSuccessfully, State::Completed) => true,
            _ => false,
        }
    }

    fn spawn(&mut self, svc: usize) {
        let s = &mut self.services[svc];
        s.run += 1;
        s.state = State::Starting;
        s.live.unhealthy = false;
        self.actions.push_back(Action::Spawn { svc, run: s.run });
    }

    fn on_spawned(&mut self, now: Instant, svc: usize, pid: Pid) {
        let s = &mut self.services[svc];
        if s.state != State::Starting {
            return;
        }
        s.state = State::Running { pid, ready: false, since: now };
        let (checked, run) = (s.spec.ready.is_some(), s.run);
        self.notices.push_back(Notice::Started { svc, pid });
        match (checked, self.shutdown.is_some()) {
            // Too late: it is stopped at once.
            (_, true) => {}
            (false, false) => self.on_ready(now, svc, run),
            (true, false) => self.actions.push_back(Action::CheckReady { svc, run }),
        }
    }

    fn on_ready(&mut self, now: Instant, svc: usize, run: u64) {
        let s = &mut self.services[svc];
        if s.run != run {
            return;
        }
        if let State::Running { pid, ready: false, since } = s.state {
            s.state = State::Running { pid, ready: true, since };
            let message = format!("ready in {:.2}s", secs(now, since));
            info!("{}: {message}", s.spec.name);
            s.live.ready = Some(CheckResult::passed(now, run, message));
            self.start_health(now, svc);
            self.notices.push_back(Notice::Ready { svc, secs: secs(now, since) });
        }
        self.note_all_ready(now);
    }

    /// Says "all services running" the first time every service is ready
    /// or completed, and at least one runs.
    fn note_all_ready(&mut self, now: Instant) {
        if self.all_ready || self.shutdown.is_some() {
            return;
        }
        let ready = |s: &Svc| matches!(s.state, State::Running { ready: true, .. });
        let all = self.services.iter().all(|s| ready(s) || s.state == State::Completed);
        if all && self.services.iter().any(ready) {
            self.all_ready = true;
            info!("all services running ({:.2}s)", secs(now, self.t0));
            self.notices.push_back(Notice::AllReady { secs: secs(now, self.t0) });
        }
    }

    fn on_exit(&mut self, now: Instant, svc: usize, exit: Exit) {
        let s = &mut self.services[svc];
        let (State::Running { pid, .. } | State::Stopping { pid, .. }) = s.state else {
            return;
        };
        // Whatever the leader left in its group goes with it.
        self.actions.push_back(Action::Signal { svc, pid, signal: Signal::SIGKILL });
        self.notices.push_back(Notice::Exited { svc, exit });
        match s.state {
            // Asked to restart: it starts again once what it needs is ready.
            _ if s.restart_asked && self.shutdown.is_none() => {
                info!("{}: stopped ({exit}); starting it again", s.spec.name);
                s.restart_asked = false;
                s.state = State::Waiting;
            }
            State::Stopping { .. } if s.live.unhealthy && self.shutdown.is_none() => {
                self.after_unhealthy(now, svc, exit);
            }
            State::Stopping { killed, .. } => {
                info!("{}: stopped ({exit})", s.spec.name);
                s.state = State::Done { clean: !killed };
            }
            _ if self.shutdown.is_some() => {
                info!("{}: exited ({exit})", s.spec.name);
                s.state = State::Done { clean: true };
            }
            _ => {
                let spec = &s.spec;
                let decision = s.history.decide(
                    spec.restart,
                    exit.failed(),
                    spec.max_restarts,
                    spec.restart_window,
                    now,
                );
                match (decision, spec.restart) {
                    (Decision::Done, Restart::No) if s.job && !exit.failed() => {
                        info!("{}: completed ({exit})", spec.name);
                        s.state = State::Completed;
                        self.note_all_ready(now);
                    }
                    (Decision::Done, Restart::No) if s.job => {
                        s.state = State::Done { clean: false };
                        let service = spec.name.clone();
                        let waiting = self.awaiting(svc);
                        let failure = Failure::JobFailed { service, exit, waiting };
                        self.begin_shutdown(Shutdown::Failed(failure));
                    }
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
                        s.state = State::Completed;
                        self.note_all_ready(now);
                    }
                    (Decision::RestartAfter(delay), _) => {
                        self.back_off(now, svc, delay, &format!("exited ({exit})"));
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
        }
    }

    /// The names of the services that wait for `svc` to complete
    /// successfully, in manifest order.
    fn awaiting(&self, svc: usize) -> Vec<String> {
        let s = &self.services[svc];
        s.dependents
            .iter()
            .filter(|&&j| self.services[j].deps.contains(&(svc, Condition::CompletedSuccessfully)))
            .map(|&j| self.services[j].spec.name.clone())
            .collect()
    }

    /// Service `svc` ended (`what` says how) and its policy restarts it
    /// after `delay`: says so, and arms the timer.
    fn back_off(&mut self, now: Instant, svc: usize, delay: std::time::Duration, what: &str) {
        let s = &mut self.services[svc];
        let spec = &s.spec;
        warn!(
            "{}: {what}; restarting in {} ({} of {} allowed in {})",
            spec.name,
            format_duration(delay),
            s.history.count(),
            spec.max_restarts,
            format_duration(spec.restart_window)
        );
        s.state = State::Backoff;
        let timer = Timer::Restart { svc, run: s.run };
        self.actions.push_back(Action::Arm { at: now + delay, timer });
    }

    /// SIGKILLs every service group at once, and gives up all grace.
    fn kill_all(&mut self) {
        self.hurry = true;
        for (svc, s) in self.services.iter_mut().enumerate() {
            if let State::Running { pid, .. } | State::Stopping { pid, .. } = s.state {
                self.actions.push_back(Action::Signal { svc, pid, signal: Signal::SIGKILL });
                s.state = State::Stopping { pid, killed: true };
            }
        }
    }

    /// `stigmer server restart`: each of `svcs` (every service when empty)
    /// that runs is stopped once no other of them that depends on it still
    /// runs, and started again once what it depends on is ready; one that
    /// waits for its backoff, or has ended, starts again at once.
    fn restart(&mut self, now: Instant, svcs: Vec<usize>) {
        if self.shutdown.is_some() {
            return;
        }
        let all: Vec<usize> = (0..self.services.len()).collect();
        let svcs = if svcs.is_empty() { all } else { svcs };
        for svc in svcs {
            let s = &mut self.services[svc];
            match s.state {
                State::Running { .. } | State::Stopping { .. } => s.restart_asked = true,
                State::Backoff | State::Done { .. } | State::Completed => {
                    s.state = State::Waiting;
                }
                State::Waiting | State::Starting => {}
            }
        }
        self.stop_for_restart(now);
    }

    /// Sends its stop signal to every running service asked to restart
    /// that no other running service asked to restart depends on (reverse
    /// dependency order within the restart), and arms its stop deadline.
    fn stop_for_restart(&mut self, now: Instant) {
        for svc in 0..self.services.len() {
            let s = &self.services[svc];
            let State::Running { pid, .. } = s.state else { continue };
            if !s.restart_asked {
                continue;
            }
            let needed = s.dependents.iter().any(|&j| self.restarting(j));
            if !needed {
                self.stop(now, svc, pid);
            }
        }
    }

    /// Sends service `svc` (process group `pid`) its stop signal, and arms
    /// its stop deadline.
    fn stop(&mut self, now: Instant, svc: usize, pid: Pid) {
        let s = &mut self.services[svc];
        debug!("{}: sending {}", s.spec.name, s.spec.stop_signal);
        s.state = State::Stopping { pid, killed: false };
        self.actions.push_back(Action::Signal { svc, pid, signal: s.spec.stop_signal });
        let timer = Timer::StopDeadline { svc, run: s.run };
        self.actions.push_back(Action::Arm { at: now + s.spec.stop_timeout, timer });
    }

    /// SIGUSR1: each running service with a `reload_signal` gets it.
    fn reload(&mut self) {
        if self.shutdown.is_some() {
            return;
        }
        let mut none = true;
        for (svc, s) in self.services.iter().enumerate() {
            if let (State::Running { pid, .. }, Some(signal)) = (s.state, s.spec.reload_signal) {
                info!("{}: reload ({signal})", s.spec.name);
                self.actions.push_back(Action::Signal { svc, pid, signal });
                none = false;
            }
        }
        if none {
            info!("SIGUSR1: no running service has a reload_signal");
        }
    }

    fn begin_shutdown(&mut self, why: Shutdown) {
        if self.shutdown.is_some() {
            return;
        }
        match &why {
            Shutdown::Failed(failure) => {
                error!("{failure}; stopping all services");
                let svc = failure.service().and_then(|name| self.index(name));
                self.notices.push_back(Notice::Failed { svc, message: failure.to_string() });
            }
            Shutdown::GuardGone => self
                .notices
                .push_back(Notice::Failed { svc: None, message: Failure::GuardGone.to_string() }),
            Shutdown::Requested(_) => self.notices.push_back(Notice::Stopping),
        }
        self.shutdown = Some(why);
        for s in &mut self.services {
            s.restart_asked = false;
            if matches!(s.state, State::Waiting | State::Backoff) {
                s.state = State::Done { clean: true };
            }
        }
    }

    /// In a shutdown, sends its stop signal to every running service that
    /// no running service depends on (reverse dependency order), and arms
    /// its stop deadline.
    fn stop_what_can_stop(&mut self, now: Instant) {
        for svc in 0..self.services.len() {
            let State::Running { pid, .. } = self.services[svc].state else { continue };
            let needed = self.services[svc].dependents.iter().any(|&j| {
                matches!(
                    self.services[j].state,
                    State::Starting | State::Running { .. } | State::Stopping { .. }
                )
            });
            if !needed {
                self.stop(now, svc, pid);
            }
        }
    }
}

/// Seconds from `since` to `now`, for log lines.
fn secs(now: Instant, since: Instant) -> f64 {
    now.saturating_duration_since(since).as_secs_f64()
}

#[cfg(test)]
mod tests;
