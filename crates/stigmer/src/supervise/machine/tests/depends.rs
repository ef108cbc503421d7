//! `depends_on` conditions and one-shot jobs.

use super::*;

#[test]
fn started_dependents_do_not_wait_for_readiness_healthy_ones_do() {
    let (mut m, t0) = machine(
        r#"
        [services.db]
        payload = "p"
        ready = { tcp = "127.0.0.1:5432", timeout = "5s" }
        [services.eager]
        payload = "p"
        depends_on = { db = "started" }
        [services.patient]
        payload = "p"
        depends_on = { db = "healthy" }
        "#,
    );
    let (db, eager, patient) = (index(&m, "db"), index(&m, "eager"), index(&m, "patient"));
    m.start(t0);
    assert_eq!(drain(&mut m), [Spawn { svc: db, run: 1 }]);
    m.handle(t0, Event::Spawned { svc: db, pid: pid(10) });
    // db runs, not ready: eager starts right away, patient waits.
    assert_eq!(drain(&mut m), [CheckReady { svc: db, run: 1 }, Spawn { svc: eager, run: 1 }]);
    m.handle(t0, Event::Spawned { svc: eager, pid: pid(11) });
    assert_eq!(drain(&mut m), []);
    assert_eq!(state(&m, "patient"), State::Waiting);
    assert!(!m.all_ready);
    m.handle(t0, Event::Ready { svc: db, run: 1 });
    assert_eq!(drain(&mut m), [Spawn { svc: patient, run: 1 }]);
    m.handle(t0, Event::Spawned { svc: patient, pid: pid(12) });
    assert!(m.all_ready);
}

/// `migrate`, a job that `api` waits for, and `web`, which needs nothing.
const JOB: &str = r#"
    [services.migrate]
    payload = "p"
    [services.api]
    payload = "p"
    depends_on = { migrate = "completed_successfully" }
    [services.web]
    payload = "p"
"#;

/// Starts [`JOB`]'s `migrate` and `web` (pids 100 + index); `api` waits.
fn start_job(m: &mut Machine, t0: Instant) -> (usize, usize, usize) {
    let (migrate, api, web) = (index(m, "migrate"), index(m, "api"), index(m, "web"));
    m.start(t0);
    for _ in 0..2 {
        let actions = drain(m);
        let svc = spawned(m, t0, &actions);
        assert_ne!(svc, api, "api waits for migrate to complete");
    }
    assert_eq!(drain(m), []);
    assert_eq!(state(m, "api"), State::Waiting);
    assert!(!m.all_ready, "a job still running is not done");
    (migrate, api, web)
}

#[test]
fn a_job_that_exits_0_completes_and_starts_what_waits_for_it() {
    let (mut m, t0) = machine(JOB);
    let (migrate, api, web) = start_job(&mut m, t0);
    let t1 = t0 + Duration::from_secs(2);
    m.handle(t1, Event::Exited { svc: migrate, exit: Exit::Code(0) });
    assert_eq!(
        drain(&mut m),
        [signal(migrate, 100 + migrate as i32, Signal::SIGKILL), Spawn { svc: api, run: 1 }]
    );
    assert_eq!(state(&m, "migrate"), State::Completed);
    assert_eq!(m.service_of(pid(100 + migrate as i32)), None);
    m.handle(t1, Event::Spawned { svc: api, pid: pid(200) });
    assert_eq!(drain(&mut m), []);
    assert!(m.all_ready, "every long-running service ready, every job completed");
    assert!(!m.finished());
    // A stop: the completed job is simply done.
    m.handle(t1, Event::Stop(Signal::SIGTERM));
    let actions = drain(&mut m);
    assert!(!actions.iter().any(|a| matches!(a, Action::Signal { svc, .. } if *svc == migrate)));
    m.handle(t1, Event::Exited { svc: api, exit: Exit::Signal(Signal::SIGTERM) });
    m.handle(t1, Event::Exited { svc: web, exit: Exit::Signal(Signal::SIGTERM) });
    drain(&mut m);
    assert!(m.finished());
    assert!(matches!(m.outcome(), Outcome::Clean));
}

#[test]
fn a_job_that_fails_stops_the_server_and_what_waits_never_starts() {
    for exit in [Exit::Code(3), Exit::Signal(Signal::SIGKILL)] {
        let (mut m, t0) = machine(JOB);
        let (migrate, _, web) = start_job(&mut m, t0);
        m.handle(t0, Event::Exited { svc: migrate, exit });
        assert_eq!(
            drain(&mut m),
            [
                signal(migrate, 100 + migrate as i32, Signal::SIGKILL),
                signal(web, 100 + web as i32, Signal::SIGTERM),
                Arm {
                    at: t0 + Duration::from_secs(10),
                    timer: Timer::StopDeadline { svc: web, run: 1 }
                },
            ]
        );
        assert_eq!(state(&m, "api"), State::Done { clean: true }, "never started");
        m.handle(t0, Event::Exited { svc: web, exit: Exit::Signal(Signal::SIGTERM) });
        drain(&mut m);
        assert!(m.finished());
        let failure = m.outcome().unwrap_failed();
        assert!(matches!(failure, Failure::JobFailed { .. }), "{failure:?}");
        assert_eq!(
            failure.to_string(),
            format!(
                "job migrate failed ({exit}) and its restart policy is \"no\": api, waiting for \
                 it to complete successfully, cannot start"
            )
        );
    }
}

#[test]
fn a_job_stopped_before_it_completes_is_stopped_like_any_service() {
    let (mut m, t0) = machine(JOB);
    let (migrate, _, web) = start_job(&mut m, t0);
    m.handle(t0, Event::Stop(Signal::SIGINT));
    let signalled: Vec<usize> = drain(&mut m)
        .into_iter()
        .filter_map(|a| match a {
            Action::Signal { svc, signal: Signal::SIGTERM, .. } => Some(svc),
            _ => None,
        })
        .collect();
    assert_eq!(signalled, [migrate, web]);
    assert_eq!(state(&m, "api"), State::Done { clean: true });
    // Its exit 0 now is a stop, not a completion: nothing starts.
    m.handle(t0, Event::Exited { svc: migrate, exit: Exit::Code(0) });
    m.handle(t0, Event::Exited { svc: web, exit: Exit::Code(0) });
    assert!(!drain(&mut m).iter().any(|a| matches!(a, Spawn { .. })));
    assert!(m.finished());
    assert!(matches!(m.outcome(), Outcome::Clean));
}

#[test]
fn an_on_failure_job_is_retried_until_it_completes() {
    let (mut m, t0) = machine(&JOB.replacen(
        "[services.migrate]\n    payload = \"p\"",
        "[services.migrate]\n    payload = \"p\"\n    restart = \"on-failure\"",
        1,
    ));
    let (migrate, api, _) = start_job(&mut m, t0);
    assert_eq!(exits_and_restarts(&mut m, migrate, t0, Exit::Code(1)), BASE);
    assert_eq!(state(&m, "api"), State::Waiting, "a failed run completes nothing");
    m.handle(t0 + BASE, Event::Exited { svc: migrate, exit: Exit::Code(0) });
    let actions = drain(&mut m);
    assert_eq!(actions[1..], [Spawn { svc: api, run: 1 }], "{actions:?}");
    assert_eq!(state(&m, "migrate"), State::Completed);
}

#[test]
fn a_restart_no_service_awaited_only_as_started_still_stops_the_server_when_it_exits() {
    let (mut m, t0) = machine(
        r#"
        [services.once]
        payload = "p"
        [services.after]
        payload = "p"
        depends_on = { once = "started" }
        "#,
    );
    start_all(&mut m, t0);
    m.handle(t0, Event::Exited { svc: index(&m, "once"), exit: Exit::Code(0) });
    drain(&mut m);
    m.handle(t0, Event::Exited { svc: index(&m, "after"), exit: Exit::Code(0) });
    assert!(m.finished());
    assert_eq!(
        m.outcome().unwrap_failed().to_string(),
        "once exited (exit status 0) and its restart policy is \"no\""
    );
}

#[test]
fn a_dependency_that_completes_before_a_healthy_dependent_starts_fails_the_server() {
    // slow keeps waits from starting until after quick has completed.
    let (mut m, t0) = machine(
        r#"
        [services.quick]
        payload = "p"
        restart = "on-failure"
        [services.slow]
        payload = "p"
        ready = { log = "up", timeout = "5s" }
        [services.waits]
        payload = "p"
        depends_on = { quick = "healthy", slow = "healthy" }
        "#,
    );
    let (quick, slow) = (index(&m, "quick"), index(&m, "slow"));
    m.start(t0);
    for _ in 0..2 {
        let actions = drain(&mut m);
        spawned(&mut m, t0, &actions);
    }
    assert_eq!(drain(&mut m), [CheckReady { svc: slow, run: 1 }]);
    m.handle(t0, Event::Exited { svc: quick, exit: Exit::Code(0) });
    let actions = drain(&mut m);
    assert!(actions.contains(&signal(slow, 100 + slow as i32, Signal::SIGTERM)), "{actions:?}");
    assert_eq!(state(&m, "waits"), State::Done { clean: true });
    m.handle(t0, Event::Exited { svc: slow, exit: Exit::Code(0) });
    assert!(m.finished());
    assert_eq!(
        m.outcome().unwrap_failed().to_string(),
        "waits cannot start: it waits for quick to be healthy, but quick completed (exited with \
         status 0) and its restart policy does not run it again"
    );
}

#[test]
fn a_restart_of_everything_runs_a_job_again_only_once_what_needs_it_is_down() {
    let (mut m, t0) = machine(JOB);
    let (migrate, api, web) = start_job(&mut m, t0);
    m.handle(t0, Event::Exited { svc: migrate, exit: Exit::Code(0) });
    let actions = drain(&mut m);
    assert_eq!(spawned(&mut m, t0, &actions), api);
    assert_eq!(drain(&mut m), []);
    m.handle(t0, Event::Restart { svcs: vec![] });
    let actions = drain(&mut m);
    // api and web are asked to stop; migrate, completed, does not run
    // again while api, which needs it, is still up.
    assert!(
        !actions.iter().any(|a| matches!(a, Spawn { svc, .. } if *svc == migrate)),
        "{actions:?}"
    );
    for svc in [api, web] {
        assert!(matches!(m.services[svc].state, State::Stopping { .. }), "{svc} stops");
    }
    m.handle(t0, Event::Exited { svc: web, exit: Exit::Code(0) });
    let actions = drain(&mut m);
    assert!(actions.contains(&Spawn { svc: web, run: 2 }), "{actions:?}");
    assert!(
        !actions.iter().any(|a| matches!(a, Spawn { svc, .. } if *svc == migrate)),
        "{actions:?}"
    );
    m.handle(t0, Event::Spawned { svc: web, pid: pid(300) });
    drain(&mut m);
    // api down: now the job runs, then api again once it completed.
    m.handle(t0, Event::Exited { svc: api, exit: Exit::Code(0) });
    let actions = drain(&mut m);
    assert_eq!(spawned(&mut m, t0, &actions), migrate);
    assert_eq!(drain(&mut m), []);
    m.handle(t0, Event::Exited { svc: migrate, exit: Exit::Code(0) });
    let actions = drain(&mut m);
    assert_eq!(spawned(&mut m, t0, &actions), api);
    assert!(m.all_ready);
}
