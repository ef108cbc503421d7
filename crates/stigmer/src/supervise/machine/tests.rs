//! Unit tests of [`super`].

use super::*;

use std::time::Duration;

use crate::manifest::Manifest;

use Action::{Arm, CheckReady, Spawn};

/// `depends_on` conditions and one-shot jobs.
mod depends;
/// Health checks: counting, restarts, shutdowns, old runs.
mod health;

/// A machine for the services of manifest `toml` (every payload is
/// named `p`), begun at a fixed instant, and that instant.
fn machine(toml: &str) -> (Machine, Instant) {
    let manifest = Manifest::parse(toml, "test", &["p"]).unwrap();
    let t0 = Instant::now();
    (Machine::new(manifest.services, t0), t0)
}

fn drain(m: &mut Machine) -> Vec<Action> {
    std::iter::from_fn(|| m.next_action()).collect()
}

fn pid(n: i32) -> Pid {
    Pid::from_raw(n)
}

fn signal(svc: usize, n: i32, signal: Signal) -> Action {
    Action::Signal { svc, pid: pid(n), signal }
}

fn index(m: &Machine, name: &str) -> usize {
    m.services.iter().position(|s| s.spec.name == name).unwrap()
}

fn state(m: &Machine, name: &str) -> State {
    m.services[index(m, name)].state
}

/// Answers the one spawn that `actions` must hold: service `svc` runs
/// as pid `100 + svc`.
fn spawned(m: &mut Machine, now: Instant, actions: &[Action]) -> usize {
    let spawns: Vec<usize> = actions
        .iter()
        .filter_map(|a| match a {
            Spawn { svc, .. } => Some(*svc),
            _ => None,
        })
        .collect();
    assert_eq!(spawns.len(), 1, "one spawn at a time: {actions:?}");
    let svc = spawns[0];
    m.handle(now, Event::Spawned { svc, pid: pid(100 + svc as i32) });
    svc
}

/// Starts every service of `m` (none has a readiness check): service
/// `svc` runs as pid `100 + svc`.
fn start_all(m: &mut Machine, t0: Instant) {
    m.start(t0);
    let mut actions = drain(m);
    for _ in 0..m.services.len() {
        spawned(m, t0, &actions);
        actions = drain(m);
    }
    assert_eq!(actions, []);
    assert!(m.all_ready);
}

/// A chain: `c` depends on `b`, which depends on `a`; and `solo`.
const CHAIN: &str = r#"
    [services.c]
    payload = "p"
    depends_on = ["b"]
    [services.a]
    payload = "p"
    [services.b]
    payload = "p"
    depends_on = ["a"]
    stop_timeout = "3s"
    [services.solo]
    payload = "p"
"#;

#[test]
fn starts_in_dependency_order_one_spawn_at_a_time() {
    let (mut m, t0) = machine(CHAIN);
    m.start(t0);
    let first = drain(&mut m);
    assert_eq!(first.len(), 1, "{first:?}");
    let mut order = Vec::new();
    let mut actions = first;
    while !actions.is_empty() {
        let svc = spawned(&mut m, t0, &actions);
        order.push(m.spec(svc).name.clone());
        actions = drain(&mut m);
    }
    let pos = |n: &str| order.iter().position(|o| o == n).unwrap();
    assert_eq!(order.len(), 4, "{order:?}");
    assert!(pos("a") < pos("b") && pos("b") < pos("c"), "{order:?}");
    assert!(m.all_ready);
    assert!(!m.finished());
}

#[test]
fn a_dependent_waits_for_its_dependency_to_be_ready() {
    let (mut m, t0) = machine(
        r#"
        [services.db]
        payload = "p"
        ready = { tcp = "127.0.0.1:5432", timeout = "5s" }
        [services.api]
        payload = "p"
        depends_on = ["db"]
        "#,
    );
    let (db, api) = (index(&m, "db"), index(&m, "api"));
    m.start(t0);
    assert_eq!(drain(&mut m), [Spawn { svc: db, run: 1 }]);
    m.handle(t0, Event::Spawned { svc: db, pid: pid(10) });
    assert_eq!(drain(&mut m), [CheckReady { svc: db, run: 1 }]);
    // Running but not ready: api does not start, whatever happens.
    m.handle(t0, Event::Reload);
    assert_eq!(drain(&mut m), []);
    assert_eq!(state(&m, "api"), State::Waiting);
    // A verdict about another run counts for nothing.
    m.handle(t0, Event::Ready { svc: db, run: 7 });
    assert_eq!(drain(&mut m), []);
    let later = t0 + Duration::from_millis(1500);
    m.handle(later, Event::Ready { svc: db, run: 1 });
    assert_eq!(drain(&mut m), [Spawn { svc: api, run: 1 }]);
    assert!(!m.all_ready);
    m.handle(later, Event::Spawned { svc: api, pid: pid(11) });
    assert_eq!(drain(&mut m), []);
    assert!(m.all_ready);
}

#[test]
fn a_dependency_that_fails_before_it_is_ready_stops_the_server() {
    let (mut m, t0) = machine(
        r#"
        [services.db]
        payload = "p"
        ready = { log = "accepting connections", timeout = "2s" }
        [services.api]
        payload = "p"
        depends_on = ["db"]
        "#,
    );
    let db = index(&m, "db");
    m.start(t0);
    drain(&mut m);
    m.handle(t0, Event::Spawned { svc: db, pid: pid(10) });
    assert_eq!(drain(&mut m), [CheckReady { svc: db, run: 1 }]);
    let why = NotReady::NoLine { text: "accepting connections".into() };
    m.handle(t0 + Duration::from_secs(2), Event::NotReady { svc: db, run: 1, why });
    let at = t0 + Duration::from_secs(2);
    assert_eq!(
        drain(&mut m),
        [
            signal(db, 10, Signal::SIGTERM),
            Arm {
                at: at + Duration::from_secs(10),
                timer: Timer::StopDeadline { svc: db, run: 1 }
            }
        ]
    );
    // api never started, and never will.
    assert_eq!(state(&m, "api"), State::Done { clean: true });
    m.handle(at, Event::Exited { svc: db, exit: Exit::Signal(Signal::SIGTERM) });
    assert_eq!(drain(&mut m), [signal(db, 10, Signal::SIGKILL)]);
    assert!(m.finished());
    assert_eq!(
        m.outcome().unwrap_failed().to_string(),
        "db was not ready within 2s: no output line contained \"accepting connections\""
    );
}

#[test]
fn a_dependency_that_exits_before_it_is_ready_stops_the_server() {
    let (mut m, t0) = machine(
        r#"
        [services.db]
        payload = "p"
        restart = "on-failure"
        ready = { tcp = "127.0.0.1:5432", timeout = "5s" }
        [services.api]
        payload = "p"
        depends_on = ["db"]
        "#,
    );
    let db = index(&m, "db");
    m.start(t0);
    drain(&mut m);
    m.handle(t0, Event::Spawned { svc: db, pid: pid(10) });
    drain(&mut m);
    // It crashed before it was ready: restarted, and api still waits.
    m.handle(t0, Event::Exited { svc: db, exit: Exit::Code(1) });
    let restart = Timer::Restart { svc: db, run: 1 };
    assert_eq!(
        drain(&mut m),
        [
            signal(db, 10, Signal::SIGKILL),
            Arm { at: t0 + Duration::from_millis(250), timer: restart }
        ]
    );
    assert_eq!(state(&m, "api"), State::Waiting);
    // The verdict of the dead run comes late: ignored.
    m.handle(t0, Event::NotReady { svc: db, run: 1, why: NotReady::NoStatusLine });
    assert_eq!(drain(&mut m), []);
    m.handle(t0 + Duration::from_millis(250), Event::Timer(restart));
    assert_eq!(drain(&mut m), [Spawn { svc: db, run: 2 }]);
    // The second run is not ready in time: the server fails.
    m.handle(t0, Event::Spawned { svc: db, pid: pid(20) });
    assert_eq!(drain(&mut m), [CheckReady { svc: db, run: 2 }]);
    m.handle(t0, Event::NotReady { svc: db, run: 2, why: NotReady::NoStatusLine });
    assert_eq!(drain(&mut m)[0], signal(db, 20, Signal::SIGTERM));
    assert_eq!(state(&m, "api"), State::Done { clean: true });
}

#[test]
fn a_failed_spawn_stops_what_would_have_followed() {
    let (mut m, t0) = machine(CHAIN);
    m.start(t0);
    let Spawn { svc: a, .. } = drain(&mut m)[0] else { panic!() };
    let address = "127.0.0.1:1".parse().unwrap();
    let error = SpawnError::AddressInUse { address, holder: None };
    m.handle(t0, Event::SpawnFailed { svc: a, error });
    assert_eq!(drain(&mut m), []);
    assert!(m.finished());
    let failure = m.outcome().unwrap_failed();
    assert_eq!(failure.to_string(), "cannot start a: 127.0.0.1:1 is already in use");
}

#[test]
fn stops_in_reverse_dependency_order_then_kills_after_stop_timeout() {
    let (mut m, t0) = machine(CHAIN);
    start_all(&mut m, t0);
    let (a, b, c, solo) = (index(&m, "a"), index(&m, "b"), index(&m, "c"), index(&m, "solo"));
    let pid_of = |svc: usize| 100 + svc as i32;
    let t1 = t0 + Duration::from_secs(5);
    m.handle(t1, Event::Stop(Signal::SIGTERM));
    // c and solo have no dependents: they go first, together.
    let deadline = |svc: usize, after: u64| Arm {
        at: t1 + Duration::from_secs(after),
        timer: Timer::StopDeadline { svc, run: 1 },
    };
    assert_eq!(
        drain(&mut m),
        [
            signal(c, pid_of(c), Signal::SIGTERM),
            deadline(c, 10),
            signal(solo, pid_of(solo), Signal::SIGTERM),
            deadline(solo, 10),
        ]
    );
    m.handle(t1, Event::Exited { svc: solo, exit: Exit::Code(0) });
    assert_eq!(drain(&mut m), [signal(solo, pid_of(solo), Signal::SIGKILL)]);
    assert_eq!(state(&m, "b"), State::Running { pid: pid(pid_of(b)), ready: true, since: t0 });
    m.handle(t1, Event::Exited { svc: c, exit: Exit::Signal(Signal::SIGTERM) });
    // b next, with its own stop_timeout.
    assert_eq!(
        drain(&mut m),
        [
            signal(c, pid_of(c), Signal::SIGKILL),
            signal(b, pid_of(b), Signal::SIGTERM),
            deadline(b, 3)
        ]
    );
    // b ignores SIGTERM: killed when its deadline fires.
    m.handle(t1 + Duration::from_secs(3), Event::Timer(Timer::StopDeadline { svc: b, run: 1 }));
    assert_eq!(drain(&mut m), [signal(b, pid_of(b), Signal::SIGKILL)]);
    // A late deadline of c's run does nothing.
    m.handle(t1, Event::Timer(Timer::StopDeadline { svc: c, run: 1 }));
    assert_eq!(drain(&mut m), []);
    m.handle(t1, Event::Exited { svc: b, exit: Exit::Signal(Signal::SIGKILL) });
    let after_b = drain(&mut m);
    assert_eq!(
        after_b,
        [
            signal(b, pid_of(b), Signal::SIGKILL),
            signal(a, pid_of(a), Signal::SIGTERM),
            deadline(a, 10)
        ]
    );
    m.handle(t1, Event::Exited { svc: a, exit: Exit::Code(0) });
    drain(&mut m);
    assert!(m.finished());
    assert!(!m.hurry());
    assert_eq!(m.outcome().unwrap_failed().to_string(), "b had to be killed");
}

#[test]
fn a_clean_stop_is_clean() {
    let (mut m, t0) = machine(CHAIN);
    start_all(&mut m, t0);
    m.handle(t0, Event::Stop(Signal::SIGINT));
    for _ in 0..4 {
        let running: Vec<usize> = drain(&mut m)
            .into_iter()
            .filter_map(|a| match a {
                Action::Signal { svc, signal: Signal::SIGTERM, .. } => Some(svc),
                _ => None,
            })
            .collect();
        for svc in running {
            m.handle(t0, Event::Exited { svc, exit: Exit::Code(0) });
        }
        if m.finished() {
            break;
        }
    }
    assert!(m.finished());
    assert!(matches!(m.outcome(), Outcome::Clean));
}

#[test]
fn a_second_signal_kills_everything_at_once() {
    let (mut m, t0) = machine(CHAIN);
    start_all(&mut m, t0);
    let (a, b, c, solo) = (index(&m, "a"), index(&m, "b"), index(&m, "c"), index(&m, "solo"));
    m.handle(t0, Event::Stop(Signal::SIGINT));
    drain(&mut m);
    assert!(!m.hurry());
    m.handle(t0, Event::Stop(Signal::SIGINT));
    let mut killed: Vec<usize> = drain(&mut m)
        .into_iter()
        .map(|a| match a {
            Action::Signal { svc, pid: p, signal: Signal::SIGKILL } => {
                assert_eq!(p, pid(100 + svc as i32));
                svc
            }
            other => panic!("{other:?}"),
        })
        .collect();
    killed.sort();
    let mut all = vec![a, b, c, solo];
    all.sort();
    assert_eq!(killed, all, "every group, those told to stop and those waiting");
    assert!(m.hurry());
    for svc in all {
        m.handle(t0, Event::Exited { svc, exit: Exit::Signal(Signal::SIGKILL) });
    }
    assert!(m.finished());
    assert_eq!(m.outcome().unwrap_failed().to_string(), "a, b, c, solo had to be killed");
}

#[test]
fn the_guard_gone_kills_everything_at_once() {
    let (mut m, t0) = machine(CHAIN);
    start_all(&mut m, t0);
    m.handle(t0, Event::GuardGone);
    let actions = drain(&mut m);
    assert_eq!(actions.len(), 4);
    assert!(actions.iter().all(|a| matches!(a, Action::Signal { signal: Signal::SIGKILL, .. })));
    assert!(m.hurry());
}

#[test]
fn the_guard_gone_before_the_start_starts_nothing() {
    let (mut m, t0) = machine(CHAIN);
    m.handle(t0, Event::GuardGone);
    m.start(t0);
    assert_eq!(drain(&mut m), []);
    assert!(m.finished());
    assert!(matches!(m.outcome(), Outcome::Failed(Failure::GuardGone)));
}

/// Runs service `svc` once more at `at`, after the restart its last
/// exit asked for, and returns that backoff.
fn exits_and_restarts(m: &mut Machine, svc: usize, at: Instant, exit: Exit) -> Duration {
    m.handle(at, Event::Exited { svc, exit });
    let actions = drain(m);
    let [Action::Signal { signal: Signal::SIGKILL, .. }, Arm { at: due, timer }] = actions[..]
    else {
        panic!("{actions:?}")
    };
    assert_eq!(timer, Timer::Restart { svc, run: m.services[svc].run });
    m.handle(due, Event::Timer(timer));
    let run = m.services[svc].run;
    assert_eq!(drain(m), [Spawn { svc, run }]);
    m.handle(due, Event::Spawned { svc, pid: pid(1000 + run as i32) });
    assert_eq!(drain(m), []);
    due.duration_since(at)
}

#[test]
fn backoff_doubles_then_the_server_gives_up() {
    let (mut m, t0) = machine(
        r#"
        [services.crashy]
        payload = "p"
        restart = "always"
        max_restarts = 3
        "#,
    );
    start_all(&mut m, t0);
    let mut at = t0;
    let mut delays = Vec::new();
    for _ in 0..3 {
        at += Duration::from_secs(1);
        delays.push(exits_and_restarts(&mut m, 0, at, Exit::Code(0)));
        at += *delays.last().unwrap();
    }
    let ms = Duration::from_millis;
    assert_eq!(delays, [ms(250), ms(500), ms(1000)]);
    m.handle(at, Event::Exited { svc: 0, exit: Exit::Code(2) });
    assert_eq!(drain(&mut m), [signal(0, 1004, Signal::SIGKILL)], "its fourth run");
    assert!(m.finished());
    assert_eq!(
        m.outcome().unwrap_failed().to_string(),
        "crashy exited (exit status 2) after 3 restarts within 1m: giving up"
    );
}

#[test]
fn restarts_that_leave_the_window_are_forgotten() {
    let (mut m, t0) = machine(
        r#"
        [services.crashy]
        payload = "p"
        restart = "on-failure"
        max_restarts = 2
        restart_window = "10s"
        "#,
    );
    start_all(&mut m, t0);
    let ms = Duration::from_millis;
    let crash = Exit::Signal(Signal::SIGSEGV);
    assert_eq!(exits_and_restarts(&mut m, 0, t0, crash), ms(250));
    assert_eq!(exits_and_restarts(&mut m, 0, t0 + ms(300), crash), ms(500));
    // Both restarts are more than 10s old: it starts afresh.
    let later = t0 + Duration::from_secs(11);
    assert_eq!(exits_and_restarts(&mut m, 0, later, crash), ms(250));
    assert_eq!(exits_and_restarts(&mut m, 0, later + ms(300), crash), ms(500));
    m.handle(later + ms(900), Event::Exited { svc: 0, exit: crash });
    drain(&mut m);
    assert!(m.finished());
    assert!(matches!(m.outcome(), Outcome::Failed(Failure::GaveUp { max_restarts: 2, .. })));
}

#[test]
fn restart_policies() {
    let (mut m, t0) = machine(
        r#"
        [services.no]
        payload = "p"
        [services.on-failure]
        payload = "p"
        restart = "on-failure"
        [services.always]
        payload = "p"
        restart = "always"
        "#,
    );
    start_all(&mut m, t0);
    let (no, on_failure, always) = (index(&m, "no"), index(&m, "on-failure"), index(&m, "always"));
    // on-failure: restarted after a failure, done after a clean exit.
    assert_eq!(exits_and_restarts(&mut m, on_failure, t0, Exit::Code(1)), BASE);
    m.handle(t0, Event::Exited { svc: on_failure, exit: Exit::Code(0) });
    assert_eq!(drain(&mut m).len(), 1, "only the group's SIGKILL");
    assert_eq!(state(&m, "on-failure"), State::Completed);
    // always: restarted after a clean exit too.
    assert_eq!(exits_and_restarts(&mut m, always, t0, Exit::Code(0)), BASE);
    // no: any exit, even a clean one, fails the server.
    m.handle(t0, Event::Exited { svc: no, exit: Exit::Code(0) });
    assert_eq!(
        drain(&mut m),
        [
            signal(no, 100 + no as i32, Signal::SIGKILL),
            signal(always, 1002, Signal::SIGTERM),
            Arm {
                at: t0 + Duration::from_secs(10),
                timer: Timer::StopDeadline { svc: always, run: 2 }
            },
        ]
    );
    m.handle(t0, Event::Exited { svc: always, exit: Exit::Signal(Signal::SIGTERM) });
    drain(&mut m);
    assert!(m.finished());
    assert_eq!(
        m.outcome().unwrap_failed().to_string(),
        "no exited (exit status 0) and its restart policy is \"no\""
    );
}

const BASE: Duration = Duration::from_millis(250);

#[test]
fn every_service_done_by_its_policy_ends_the_server() {
    let (mut m, t0) = machine(
        r#"
        [services.once]
        payload = "p"
        restart = "on-failure"
        "#,
    );
    start_all(&mut m, t0);
    m.handle(t0, Event::Exited { svc: 0, exit: Exit::Code(0) });
    drain(&mut m);
    assert!(m.finished());
    assert!(matches!(m.outcome(), Outcome::Failed(Failure::AllExited)));
}

#[test]
fn a_shutdown_during_a_backoff_cancels_the_restart() {
    let (mut m, t0) = machine(
        r#"
        [services.crashy]
        payload = "p"
        restart = "always"
        [services.other]
        payload = "p"
        "#,
    );
    start_all(&mut m, t0);
    m.handle(t0, Event::Exited { svc: 0, exit: Exit::Code(1) });
    let actions = drain(&mut m);
    let Arm { timer, .. } = actions[1] else { panic!("{actions:?}") };
    m.handle(t0, Event::Stop(Signal::SIGTERM));
    assert_eq!(state(&m, "crashy"), State::Done { clean: true });
    drain(&mut m);
    m.handle(t0 + BASE, Event::Timer(timer));
    assert_eq!(drain(&mut m), [], "no spawn in a shutdown");
    m.handle(t0, Event::Exited { svc: 1, exit: Exit::Code(0) });
    drain(&mut m);
    assert!(m.finished());
    assert!(matches!(m.outcome(), Outcome::Clean));
}

#[test]
fn a_service_that_exits_during_the_shutdown_is_not_restarted() {
    let (mut m, t0) = machine(
        r#"
        [services.db]
        payload = "p"
        restart = "always"
        [services.api]
        payload = "p"
        depends_on = ["db"]
        "#,
    );
    start_all(&mut m, t0);
    m.handle(t0, Event::Stop(Signal::SIGTERM));
    drain(&mut m);
    // db is still waited for by api, but ends by itself: not restarted,
    // and clean.
    m.handle(t0, Event::Exited { svc: 0, exit: Exit::Code(1) });
    assert_eq!(drain(&mut m), [signal(0, 100, Signal::SIGKILL)]);
    assert_eq!(state(&m, "db"), State::Done { clean: true });
}

#[test]
fn reload_signals_only_services_with_a_reload_signal() {
    let (mut m, t0) = machine(
        r#"
        [services.plain]
        payload = "p"
        [services.reloads]
        payload = "p"
        reload_signal = "SIGUSR2"
        "#,
    );
    start_all(&mut m, t0);
    m.handle(t0, Event::Reload);
    assert_eq!(drain(&mut m), [signal(1, 101, Signal::SIGUSR2)]);
    m.handle(t0, Event::Stop(Signal::SIGTERM));
    drain(&mut m);
    m.handle(t0, Event::Reload);
    assert_eq!(drain(&mut m), [], "no reload in a shutdown");
}

#[test]
fn a_service_is_found_by_its_pid_while_it_runs() {
    let (mut m, t0) = machine(CHAIN);
    start_all(&mut m, t0);
    let c = index(&m, "c");
    assert_eq!(m.service_of(pid(100 + c as i32)), Some(c));
    assert_eq!(m.service_of(pid(7)), None, "an orphan");
    m.handle(t0, Event::Stop(Signal::SIGTERM));
    assert_eq!(m.service_of(pid(100 + c as i32)), Some(c), "stopping");
    m.handle(t0, Event::Exited { svc: c, exit: Exit::Code(0) });
    assert_eq!(m.service_of(pid(100 + c as i32)), None, "done");
}

#[test]
fn any_order_of_services_is_fine() {
    // Built by hand, dependents first: the machine does not rely on the
    // manifest's order.
    let manifest = Manifest::parse(CHAIN, "test", &["p"]).unwrap();
    let mut services = manifest.services;
    services.reverse();
    let t0 = Instant::now();
    let mut m = Machine::new(services, t0);
    m.start(t0);
    let mut order = Vec::new();
    let mut actions = drain(&mut m);
    while !actions.is_empty() {
        let svc = spawned(&mut m, t0, &actions);
        order.push(m.spec(svc).name.clone());
        actions = drain(&mut m);
    }
    let pos = |n: &str| order.iter().position(|o| o == n).unwrap();
    assert_eq!(order.len(), 4, "{order:?}");
    assert!(pos("a") < pos("b") && pos("b") < pos("c"), "{order:?}");
}

impl Outcome {
    fn unwrap_failed(self) -> Failure {
        match self {
            Outcome::Failed(f) => f,
            Outcome::Clean => panic!("a clean outcome"),
        }
    }
}

#[test]
fn a_restart_of_one_service_leaves_its_dependents_running() {
    let (mut m, t0) = machine(CHAIN);
    start_all(&mut m, t0);
    let (b, c) = (index(&m, "b"), index(&m, "c"));
    let t1 = t0 + Duration::from_secs(5);
    m.handle(t1, Event::Restart { svcs: vec![b] });
    let deadline =
        Arm { at: t1 + Duration::from_secs(3), timer: Timer::StopDeadline { svc: b, run: 1 } };
    assert_eq!(drain(&mut m), [signal(b, 100 + b as i32, Signal::SIGTERM), deadline]);
    assert_eq!(m.view(b).state, "restarting");
    m.handle(t1, Event::Exited { svc: b, exit: Exit::Signal(Signal::SIGTERM) });
    // Started again from the same payload at once: what it needs is ready.
    let actions = drain(&mut m);
    assert_eq!(actions, [signal(b, 100 + b as i32, Signal::SIGKILL), Spawn { svc: b, run: 2 }]);
    m.handle(t1, Event::Spawned { svc: b, pid: pid(200) });
    assert_eq!(drain(&mut m), []);
    assert_eq!(m.view(b).state, "ready");
    assert_eq!(m.view(b).restarts, 1);
    // c was not named: it ran on, and was never signalled.
    assert_eq!(state(&m, "c"), State::Running { pid: pid(100 + c as i32), ready: true, since: t0 });
    // Not a failure, and not counted against its restart policy.
    assert!(!m.stopping());
    assert_eq!(m.services[b].history.count(), 0);
}

#[test]
fn a_restart_of_everything_stops_in_reverse_order_and_starts_in_order() {
    let (mut m, t0) = machine(CHAIN);
    start_all(&mut m, t0);
    let (a, b, c, solo) = (index(&m, "a"), index(&m, "b"), index(&m, "c"), index(&m, "solo"));
    let sigterms = |actions: &[Action]| -> Vec<usize> {
        let mut svcs: Vec<usize> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Signal { svc, signal: Signal::SIGTERM, .. } => Some(*svc),
                _ => None,
            })
            .collect();
        svcs.sort_unstable();
        svcs
    };
    m.handle(t0, Event::Restart { svcs: vec![] });
    let mut first = vec![c, solo];
    first.sort_unstable();
    assert_eq!(sigterms(&drain(&mut m)), first);
    m.handle(t0, Event::Exited { svc: solo, exit: Exit::Code(0) });
    // solo needs nothing: it starts again at once.
    let actions = drain(&mut m);
    assert!(actions.contains(&Spawn { svc: solo, run: 2 }), "{actions:?}");
    m.handle(t0, Event::Spawned { svc: solo, pid: pid(300) });
    drain(&mut m);
    m.handle(t0, Event::Exited { svc: c, exit: Exit::Code(0) });
    // c waits: b, which it needs, is being restarted; b goes now.
    let actions = drain(&mut m);
    assert_eq!(sigterms(&actions), [b]);
    assert!(!actions.iter().any(|a| matches!(a, Spawn { .. })), "{actions:?}");
    m.handle(t0, Event::Exited { svc: b, exit: Exit::Code(0) });
    assert_eq!(sigterms(&drain(&mut m)), [a]);
    m.handle(t0, Event::Exited { svc: a, exit: Exit::Code(0) });
    // Then up again in dependency order: a, b, c.
    for svc in [a, b, c] {
        let actions = drain(&mut m);
        assert_eq!(spawned(&mut m, t0, &actions), svc);
    }
    assert_eq!(drain(&mut m), []);
    assert!((0..4).all(|svc| m.view(svc).state == "ready"));
}

#[test]
fn a_stop_asked_twice_is_graceful_and_restarts_are_ignored_while_stopping() {
    let (mut m, t0) = machine(CHAIN);
    start_all(&mut m, t0);
    while m.next_notice().is_some() {}
    m.handle(t0, Event::StopAsked);
    assert_eq!(m.next_notice(), Some(Notice::Stopping));
    drain(&mut m);
    m.handle(t0, Event::StopAsked);
    m.handle(t0, Event::Restart { svcs: vec![] });
    // No SIGKILL, nothing spawned: the first stop goes on at its pace.
    assert_eq!(drain(&mut m), []);
    assert!(!m.hurry());
}

#[test]
fn notices_tell_what_a_client_watches_for() {
    let (mut m, t0) = machine(CHAIN);
    start_all(&mut m, t0);
    let notices: Vec<Notice> = std::iter::from_fn(|| m.next_notice()).collect();
    let started = notices.iter().filter(|n| matches!(n, Notice::Started { .. })).count();
    let ready = notices.iter().filter(|n| matches!(n, Notice::Ready { .. })).count();
    assert_eq!((started, ready), (4, 4), "{notices:?}");
    assert!(matches!(notices.last(), Some(Notice::AllReady { .. })), "{notices:?}");
}
