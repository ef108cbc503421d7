//! Health checks: when they run, how failures are counted, and what an
//! unhealthy service gets.

use super::*;

use Action::CheckHealth;

/// `api` (pid 100, checked every 10s, 3 retries, on-failure) and `web`
/// (pid 101), which needs it healthy. Started, both running and ready.
const LIVE: &str = r#"
    [services.api]
    payload = "p"
    restart = "on-failure"
    health = { tcp = "127.0.0.1:9", interval = "10s", retries = 3 }
    [services.web]
    payload = "p"
    depends_on = ["api"]
"#;

const TEN: Duration = Duration::from_secs(10);

fn refused() -> NotReady {
    NotReady::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))
}

/// A machine for `toml` whose first service is `api`, started with its
/// health timer armed (returned) and the others started after it.
fn live(toml: &str) -> (Machine, Instant, Timer) {
    let (mut m, t0) = machine(toml);
    let api = index(&m, "api");
    m.start(t0);
    assert_eq!(drain(&mut m), [Spawn { svc: api, run: 1 }]);
    m.handle(t0, Event::Spawned { svc: api, pid: pid(100) });
    let actions = drain(&mut m);
    let timer = Timer::Health { svc: api, run: 1 };
    assert_eq!(actions[0], Arm { at: t0 + TEN, timer }, "the first check, interval after ready");
    let mut actions = actions[1..].to_vec();
    while !actions.is_empty() {
        spawned(&mut m, t0, &actions);
        actions = drain(&mut m);
    }
    (m, t0, timer)
}

/// The health check `timer` fires at `at` and fails: what follows.
fn fails(m: &mut Machine, at: Instant, timer: Timer) -> Vec<Action> {
    let Timer::Health { svc, run } = timer else { panic!("{timer:?}") };
    m.handle(at, Event::Timer(timer));
    assert_eq!(drain(m), [CheckHealth { svc, run }]);
    m.handle(at, Event::Unhealthy { svc, run, why: refused() });
    drain(m)
}

/// `api` (run `n`) exits at `at` and is restarted after its backoff, as
/// pid `1000 + n + 1`: when its new run is ready, and its health timer.
fn restarted(m: &mut Machine, at: Instant, exit: Exit) -> (Instant, Timer) {
    m.handle(at, Event::Exited { svc: 0, exit });
    let actions = drain(m);
    let [Action::Signal { signal: Signal::SIGKILL, .. }, Arm { at: due, timer }] = actions[..]
    else {
        panic!("{actions:?}")
    };
    m.handle(due, Event::Timer(timer));
    let run = m.services[0].run;
    assert_eq!(drain(m), [Spawn { svc: 0, run }]);
    m.handle(due, Event::Spawned { svc: 0, pid: pid(1000 + run as i32) });
    let health = Timer::Health { svc: 0, run };
    assert_eq!(drain(m), [Arm { at: due + TEN, timer: health }]);
    (due, health)
}

/// The health check `timer` fires at `at` and passes: what follows.
fn passes(m: &mut Machine, at: Instant, timer: Timer) -> Vec<Action> {
    let Timer::Health { svc, run } = timer else { panic!("{timer:?}") };
    m.handle(at, Event::Timer(timer));
    assert_eq!(drain(m), [CheckHealth { svc, run }]);
    m.handle(at, Event::Healthy { svc, run });
    drain(m)
}

#[test]
fn a_check_is_due_interval_after_readiness_then_after_each_verdict() {
    let (mut m, t0, timer) = live(LIVE);
    assert!(m.all_ready);
    assert_eq!(m.health(0), None, "no check has run yet");
    let t1 = t0 + TEN;
    assert_eq!(passes(&mut m, t1, timer), [Arm { at: t1 + TEN, timer }]);
    let result = m.health(0).unwrap();
    assert!(result.ok && result.failures == 0 && result.at == t1 && result.run == 1);
    // A verdict comes late: the next check is interval after it.
    let t2 = t1 + TEN + Duration::from_secs(4);
    assert_eq!(fails(&mut m, t2, timer), [Arm { at: t2 + TEN, timer }]);
    let result = m.health(0).unwrap();
    assert_eq!((result.ok, result.failures, result.at), (false, 1, t2));
    assert!(result.message.to_lowercase().contains("refused"), "{result:?}");
    assert_eq!(m.health(1), None, "web has no health check");
    assert!(m.readiness(0).unwrap().ok);
}

#[test]
fn failures_count_in_a_row_and_a_pass_resets_them() {
    let (mut m, t0, timer) = live(LIVE);
    let mut at = t0;
    for _ in 0..2 {
        at += TEN;
        assert_eq!(fails(&mut m, at, timer), [Arm { at: at + TEN, timer }]);
    }
    assert_eq!(m.health(0).unwrap().failures, 2);
    at += TEN;
    passes(&mut m, at, timer);
    assert_eq!(m.health(0).unwrap().failures, 0);
    for _ in 0..2 {
        at += TEN;
        assert_eq!(fails(&mut m, at, timer), [Arm { at: at + TEN, timer }]);
    }
    assert_eq!(state(&m, "api"), State::Running { pid: pid(100), ready: true, since: t0 });
    at += TEN;
    let actions = fails(&mut m, at, timer);
    assert_eq!(actions[0], signal(0, 100, Signal::SIGTERM), "the third in a row: {actions:?}");
}

#[test]
fn retries_failures_in_a_row_stop_the_service_and_its_policy_restarts_it() {
    let (mut m, t0, timer) = live(LIVE);
    let at = |n: u32| t0 + TEN * n;
    fails(&mut m, at(1), timer);
    fails(&mut m, at(2), timer);
    assert_eq!(
        fails(&mut m, at(3), timer),
        [
            signal(0, 100, Signal::SIGTERM),
            Arm { at: at(3) + TEN, timer: Timer::StopDeadline { svc: 0, run: 1 } },
        ],
        "stopped as in a shutdown; web, which depends on it, is left alone"
    );
    assert_eq!(state(&m, "api"), State::Stopping { pid: pid(100), killed: false });
    assert_eq!(m.service_of(pid(100)), Some(0));
    // A check due now is not run: it is not running and ready.
    m.handle(at(4), Event::Timer(timer));
    assert_eq!(drain(&mut m), []);
    m.handle(at(3), Event::Exited { svc: 0, exit: Exit::Signal(Signal::SIGTERM) });
    let restart = Timer::Restart { svc: 0, run: 1 };
    assert_eq!(
        drain(&mut m),
        [signal(0, 100, Signal::SIGKILL), Arm { at: at(3) + BASE, timer: restart }]
    );
    assert_eq!(state(&m, "api"), State::Backoff);
    m.handle(at(3) + BASE, Event::Timer(restart));
    assert_eq!(drain(&mut m), [Spawn { svc: 0, run: 2 }]);
    let t = at(3) + BASE;
    m.handle(t, Event::Spawned { svc: 0, pid: pid(200) });
    let again = Timer::Health { svc: 0, run: 2 };
    assert_eq!(drain(&mut m), [Arm { at: t + TEN, timer: again }], "checked afresh");
    // The new run starts with no failures: one more is not enough.
    assert_eq!(fails(&mut m, t + TEN, again), [Arm { at: t + TEN * 2, timer: again }]);
    assert!(!m.finished());
}

#[test]
fn an_unhealthy_service_that_ignores_its_stop_signal_is_killed_then_restarted() {
    let (mut m, t0, timer) = live(&LIVE.replace("retries = 3", "retries = 1"));
    let actions = fails(&mut m, t0 + TEN, timer);
    let [_, Arm { at, timer: deadline }] = actions[..] else { panic!("{actions:?}") };
    m.handle(at, Event::Timer(deadline));
    assert_eq!(drain(&mut m), [signal(0, 100, Signal::SIGKILL)]);
    m.handle(at, Event::Exited { svc: 0, exit: Exit::Signal(Signal::SIGKILL) });
    let actions = drain(&mut m);
    assert!(
        matches!(actions[1], Arm { timer: Timer::Restart { svc: 0, run: 1 }, .. }),
        "{actions:?}"
    );
}

#[test]
fn an_unhealthy_service_with_restart_no_fails_the_server() {
    let (mut m, t0, timer) = live(&LIVE.replace("restart = \"on-failure\"", "restart = \"no\""));
    let (api, web) = (index(&m, "api"), index(&m, "web"));
    fails(&mut m, t0 + TEN, timer);
    fails(&mut m, t0 + TEN * 2, timer);
    let at = t0 + TEN * 3;
    // The shutdown stops web first, then api.
    assert_eq!(
        fails(&mut m, at, timer),
        [
            signal(web, 101, Signal::SIGTERM),
            Arm { at: at + TEN, timer: Timer::StopDeadline { svc: web, run: 1 } },
        ]
    );
    m.handle(at, Event::Exited { svc: web, exit: Exit::Signal(Signal::SIGTERM) });
    assert_eq!(drain(&mut m)[1], signal(api, 100, Signal::SIGTERM));
    m.handle(at, Event::Exited { svc: api, exit: Exit::Signal(Signal::SIGTERM) });
    drain(&mut m);
    assert!(m.finished());
    let failure = m.outcome().unwrap_failed().to_string();
    assert!(
        failure.starts_with("api is unhealthy after 3 failed health checks in a row (the last: ")
            && failure.ends_with("), and its restart policy is \"no\""),
        "{failure}"
    );
}

#[test]
fn an_unhealthy_service_restarted_too_often_gives_up() {
    let toml = LIVE
        .replace("retries = 3", "retries = 1")
        .replace("restart = \"on-failure\"", "restart = \"on-failure\"\n    max_restarts = 1");
    let (mut m, t0, timer) = live(&toml);
    let actions = fails(&mut m, t0 + TEN, timer);
    assert_eq!(actions[0], signal(0, 100, Signal::SIGTERM));
    let (t, timer) = restarted(&mut m, t0 + TEN, Exit::Signal(Signal::SIGTERM));
    let actions = fails(&mut m, t + TEN, timer);
    assert_eq!(actions[0], signal(0, 1002, Signal::SIGTERM));
    m.handle(t + TEN, Event::Exited { svc: 0, exit: Exit::Signal(Signal::SIGTERM) });
    drain(&mut m);
    m.handle(t + TEN, Event::Exited { svc: 1, exit: Exit::Signal(Signal::SIGTERM) });
    assert!(m.finished());
    let failure = m.outcome().unwrap_failed();
    assert!(matches!(failure, Failure::GaveUpUnhealthy { max_restarts: 1, failures: 1, .. }));
    assert!(
        failure.to_string().starts_with(
            "api was restarted once within 1m and is unhealthy again after 1 failed health check"
        ),
        "{failure}"
    );
}

#[test]
fn no_check_runs_in_a_shutdown() {
    let (mut m, t0, timer) = live(LIVE);
    m.handle(t0 + TEN, Event::Timer(timer));
    assert_eq!(drain(&mut m), [CheckHealth { svc: 0, run: 1 }]);
    m.handle(t0 + TEN, Event::Stop(Signal::SIGTERM));
    drain(&mut m);
    // The verdict of the check under way, and the next timer, do nothing.
    m.handle(t0 + TEN, Event::Unhealthy { svc: 0, run: 1, why: refused() });
    m.handle(t0 + TEN * 2, Event::Timer(timer));
    m.handle(t0 + TEN * 2, Event::Healthy { svc: 0, run: 1 });
    assert_eq!(drain(&mut m), []);
    assert_eq!(m.health(0), None);
    // An unhealthy service stopped by a shutdown is not restarted.
    let (mut m, t0, timer) = live(&LIVE.replace("retries = 3", "retries = 1"));
    fails(&mut m, t0 + TEN, timer);
    m.handle(t0 + TEN, Event::Stop(Signal::SIGTERM));
    drain(&mut m);
    m.handle(t0 + TEN, Event::Exited { svc: 1, exit: Exit::Signal(Signal::SIGTERM) });
    m.handle(t0 + TEN, Event::Exited { svc: 0, exit: Exit::Signal(Signal::SIGTERM) });
    assert!(!drain(&mut m).iter().any(|a| matches!(a, Arm { .. })));
    assert!(m.finished());
    assert!(matches!(m.outcome(), Outcome::Clean));
}

#[test]
fn verdicts_and_timers_of_an_old_run_are_ignored() {
    let (mut m, t0, timer) = live(LIVE);
    m.handle(t0 + TEN, Event::Timer(timer));
    assert_eq!(drain(&mut m), [CheckHealth { svc: 0, run: 1 }]);
    // Run 1 crashes while its check runs, and is restarted.
    restarted(&mut m, t0 + TEN, Exit::Code(1));
    for event in [
        Event::Unhealthy { svc: 0, run: 1, why: refused() },
        Event::Unhealthy { svc: 0, run: 1, why: refused() },
        Event::Unhealthy { svc: 0, run: 1, why: refused() },
        Event::Healthy { svc: 0, run: 1 },
        Event::Timer(timer),
    ] {
        m.handle(t0 + TEN, event);
        assert_eq!(drain(&mut m), []);
    }
    assert_eq!(m.health(0), None);
    assert_eq!(m.service_of(pid(1002)), Some(0), "run 2 runs on");
}

#[test]
fn failures_within_the_start_period_do_not_count() {
    let (mut m, t0, timer) =
        live(&LIVE.replace("retries = 3", "retries = 1, start_period = \"25s\""));
    for n in 1..=2 {
        let at = t0 + TEN * n;
        assert_eq!(fails(&mut m, at, timer), [Arm { at: at + TEN, timer }], "within 25s");
        assert_eq!(m.health(0).unwrap().failures, 0);
        assert!(!m.health(0).unwrap().ok);
    }
    let actions = fails(&mut m, t0 + TEN * 3, timer);
    assert_eq!(actions[0], signal(0, 100, Signal::SIGTERM), "30s after ready, it counts");
}

#[test]
fn a_verdict_before_readiness_counts_for_nothing_and_readiness_is_kept() {
    let (mut m, t0) = machine(
        r#"
        [services.api]
        payload = "p"
        ready = { log = "up", timeout = "5s" }
        health = { tcp = "127.0.0.1:9" }
        "#,
    );
    m.start(t0);
    drain(&mut m);
    m.handle(t0, Event::Spawned { svc: 0, pid: pid(10) });
    assert_eq!(drain(&mut m), [CheckReady { svc: 0, run: 1 }]);
    assert_eq!(m.readiness(0), None);
    m.handle(t0, Event::Unhealthy { svc: 0, run: 1, why: refused() });
    m.handle(t0, Event::Timer(Timer::Health { svc: 0, run: 1 }));
    assert_eq!(drain(&mut m), [], "not ready: not checked");
    let t1 = t0 + Duration::from_millis(700);
    m.handle(t1, Event::Ready { svc: 0, run: 1 });
    let timer = Timer::Health { svc: 0, run: 1 };
    assert_eq!(drain(&mut m), [Arm { at: t1 + TEN, timer }], "the default interval");
    let ready = m.readiness(0).unwrap();
    assert_eq!((ready.ok, ready.message.as_str(), ready.at), (true, "ready in 0.70s", t1));
    // A failed readiness check is kept too.
    let (mut m, t0) = machine("[services.api]\npayload = \"p\"\nready = { log = \"up\" }\n");
    m.start(t0);
    drain(&mut m);
    m.handle(t0, Event::Spawned { svc: 0, pid: pid(10) });
    drain(&mut m);
    let why = NotReady::NoLine { text: "up".into() };
    m.handle(t0, Event::NotReady { svc: 0, run: 1, why });
    let ready = m.readiness(0).unwrap();
    assert_eq!((ready.ok, ready.message.as_str()), (false, "no output line contained \"up\""));
}
