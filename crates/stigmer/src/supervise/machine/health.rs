//! Liveness: the part of the machine that schedules health checks, counts
//! their failures and restarts a service that stays unhealthy.
//!
//! Once a run is ready, its first check is due `interval` later, and each
//! next one `interval` after the verdict of the last (one check at a time,
//! as compose does). A pass resets the count of failures in a row; a
//! failure within `start_period` of the run's readiness is logged and not
//! counted; the `retries`-th failure in a row makes it unhealthy. Then:
//!
//! - `restart = "no"`: the server fails ([`Failure::Unhealthy`]), and the
//!   shutdown stops everything in order;
//! - otherwise it is stopped as in a shutdown (its stop signal, SIGKILL
//!   after `stop_timeout`), and once it exits that exit is a failure for
//!   its policy: restarted after the backoff, or, past `max_restarts`, the
//!   server gives up ([`Failure::GaveUpUnhealthy`]).
//!
//! Nothing is checked in a shutdown, and verdicts about an earlier run, or
//! about a run no longer running and ready, count for nothing.

use std::time::Instant;

use humantime::format_duration;
use tracing::{debug, info, warn};

use crate::manifest::Restart;

use super::super::failure::{Failure, failed_checks};
use super::super::readiness::NotReady;
use super::super::reap::Exit;
use super::super::restart::Decision;
use super::{Action, Machine, Shutdown, State, Timer};

/// The last result of a readiness or health check, as a status shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CheckResult {
    /// Whether it passed.
    pub(crate) ok: bool,
    /// What it said: "ready in 0.70s", "passed", or why it failed.
    pub(crate) message: String,
    /// When its verdict was handled.
    pub(crate) at: Instant,
    /// The run of the service it was about.
    pub(crate) run: u64,
    /// Failures in a row, this one included (0 when it passed).
    pub(crate) failures: u32,
}

impl CheckResult {
    pub(super) fn passed(at: Instant, run: u64, message: String) -> CheckResult {
        CheckResult { ok: true, message, at, run, failures: 0 }
    }

    pub(super) fn failed(at: Instant, run: u64, why: &NotReady, failures: u32) -> CheckResult {
        CheckResult { ok: false, message: why.to_string(), at, run, failures }
    }
}

/// One service's liveness.
#[derive(Debug, Default)]
pub(super) struct Live {
    /// Failed health checks in a row, in this run.
    failures: u32,
    /// When this run became ready, for `start_period`.
    ready_at: Option<Instant>,
    /// Being stopped because it is unhealthy, to be restarted by its
    /// policy once it exits (unless a shutdown came since).
    pub(super) unhealthy: bool,
    /// The last readiness result.
    pub(super) ready: Option<CheckResult>,
    /// The last health result.
    pub(super) health: Option<CheckResult>,
}

impl Machine {
    /// Service `svc` just became ready, at `now`: its first health check
    /// is due `interval` later.
    pub(super) fn start_health(&mut self, now: Instant, svc: usize) {
        let s = &mut self.services[svc];
        s.live.failures = 0;
        s.live.ready_at = Some(now);
        if self.shutdown.is_none() {
            self.arm_health(now, svc);
        }
    }

    /// Arms the next health check of service `svc`, if it has one.
    fn arm_health(&mut self, now: Instant, svc: usize) {
        let s = &self.services[svc];
        if let Some(health) = &s.spec.health {
            let timer = Timer::Health { svc, run: s.run };
            self.actions.push_back(Action::Arm { at: now + health.interval, timer });
        }
    }

    /// Whether a health event about run `run` of service `svc` counts: that
    /// run runs, is ready and is not being stopped, and no shutdown began.
    fn live_run(&self, svc: usize, run: u64) -> bool {
        let s = &self.services[svc];
        self.shutdown.is_none()
            && s.run == run
            && matches!(s.state, State::Running { ready: true, .. })
            && s.spec.health.is_some()
    }

    /// A health check of run `run` of service `svc` is due.
    pub(super) fn on_health_due(&mut self, svc: usize, run: u64) {
        if self.live_run(svc, run) {
            self.actions.push_back(Action::CheckHealth { svc, run });
        }
    }

    /// Run `run` of service `svc` passed a health check.
    pub(super) fn on_healthy(&mut self, now: Instant, svc: usize, run: u64) {
        if !self.live_run(svc, run) {
            return;
        }
        let s = &mut self.services[svc];
        if s.live.failures > 0 {
            info!("{}: healthy again after {} failed checks", s.spec.name, s.live.failures);
        }
        s.live.failures = 0;
        s.live.health = Some(CheckResult::passed(now, run, "passed".into()));
        self.arm_health(now, svc);
    }

    /// Run `run` of service `svc` failed a health check.
    pub(super) fn on_unhealthy(&mut self, now: Instant, svc: usize, run: u64, why: NotReady) {
        if !self.live_run(svc, run) {
            return;
        }
        let s = &mut self.services[svc];
        let Some(health) = &s.spec.health else { return };
        let State::Running { pid, .. } = s.state else { return };
        let starting = s.live.ready_at.is_some_and(|t| now < t + health.start_period);
        if starting {
            s.live.health = Some(CheckResult::failed(now, run, &why, s.live.failures));
            debug!(
                "{}: health check failed within its start_period ({}), not counted: {why}",
                s.spec.name,
                format_duration(health.start_period)
            );
            self.arm_health(now, svc);
            return;
        }
        s.live.failures += 1;
        let (failures, retries) = (s.live.failures, health.retries);
        s.live.health = Some(CheckResult::failed(now, run, &why, failures));
        if failures < retries {
            warn!("{}: health check failed ({failures} of {retries} in a row): {why}", s.spec.name);
            self.arm_health(now, svc);
            return;
        }
        let service = s.spec.name.clone();
        if s.spec.restart == Restart::No {
            let failure = Failure::Unhealthy { service, failures, last: why.to_string() };
            self.begin_shutdown(Shutdown::Failed(failure));
            return;
        }
        warn!(
            "{service}: unhealthy after {} (the last: {why}); stopping it with {} to restart it",
            failed_checks(failures),
            s.spec.stop_signal
        );
        s.live.unhealthy = true;
        s.state = State::Stopping { pid, killed: false };
        let signal = s.spec.stop_signal;
        let timer = Timer::StopDeadline { svc, run };
        self.actions.push_back(Action::Signal { svc, pid, signal });
        self.actions.push_back(Action::Arm { at: now + s.spec.stop_timeout, timer });
    }

    /// Service `svc`, stopped because it was unhealthy, exited at `now`:
    /// its policy restarts it, or the server gives up.
    pub(super) fn after_unhealthy(&mut self, now: Instant, svc: usize, exit: Exit) {
        let s = &mut self.services[svc];
        let spec = &s.spec;
        let decision =
            s.history.decide(spec.restart, true, spec.max_restarts, spec.restart_window, now);
        let last = s.live.health.as_ref().map(|h| h.message.clone()).unwrap_or_default();
        let failures = s.live.failures;
        match decision {
            Decision::RestartAfter(delay) => {
                self.back_off(now, svc, delay, &format!("stopped ({exit}) for being unhealthy"));
            }
            Decision::GiveUp => {
                s.state = State::Done { clean: false };
                let failure = Failure::GaveUpUnhealthy {
                    service: spec.name.clone(),
                    failures,
                    last,
                    max_restarts: spec.max_restarts,
                    window: spec.restart_window,
                };
                self.begin_shutdown(Shutdown::Failed(failure));
            }
            // `restart = "no"` fails the server before the stop.
            Decision::Done => {
                s.state = State::Done { clean: false };
                let failure = Failure::Unhealthy { service: spec.name.clone(), failures, last };
                self.begin_shutdown(Shutdown::Failed(failure));
            }
        }
    }
}
