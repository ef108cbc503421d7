//! `depends_on` conditions and one-shot jobs, with real processes: a job
//! completes before what waits for it starts, `started` does not wait for
//! readiness where `healthy` does, and a failing job stops the server.
//! Orders are read from the supervisor's own log lines, which one thread
//! writes in the order it decides; nothing here waits a fixed time.
#![cfg(target_os = "linux")]

mod common;

use common::*;
use nix::sys::signal::Signal;

#[test]
fn a_job_completes_before_what_waits_for_it_starts_and_is_simply_done_at_the_stop() {
    let env = TestEnv::new();
    let m = test_marker("job");
    let manifest = format!(
        r#"
[services.migrate]
payload = "probe"
args = ["--quiet", "--say", "migrating", "--sleep", "300", "--exit", "0"]

[services.api]
payload = "probe"
depends_on = {{ migrate = "completed_successfully" }}
args = ["--quiet", "--say", "api up", "--sleep", "60000", "--say", "{m}"]

[services.web]
payload = "probe"
args = ["--quiet", "--sleep", "60000", "--say", "{m}"]
"#
    );
    let server = env.server(&manifest, &[], &[]);
    server.wait_stderr("all services running", 20);
    server.wait_stdout(20, |l| l.iter().any(|l| l.starts_with("api     | api up")));
    server.signal(Signal::SIGTERM);
    let (status, out, err) = server.finish(20);
    let all = err.join("\n");
    assert_eq!(status.code(), Some(0), "a completed job is clean:\n{all}");
    let completed = line_index(&err, "migrate: completed (exit status 0)");
    assert!(line_index(&err, "migrate: started") < completed, "{all}");
    assert!(completed < line_index(&err, "api: started"), "{all}");
    assert!(line_index(&err, "api: started") < line_index(&err, "all services running"), "{all}");
    assert!(!err.iter().any(|l| l.contains("restart policy")), "{all}");
    assert!(!err.iter().any(|l| l.contains("migrate: stopped")), "{all}");
    assert!(out.iter().any(|l| l == "migrate | migrating"), "{out:?}");
    assert_no_process_with(&m);
}

#[test]
fn started_does_not_wait_for_readiness_and_healthy_does() {
    let env = TestEnv::new();
    let m = test_marker("started");
    // slow's readiness line comes late; eager waits only for it to start,
    // patient for it to be ready.
    let manifest = format!(
        r#"
[services.slow]
payload = "probe"
args = ["--quiet", "--delay", "500", "--say", "slow ready now", "--sleep", "60000", "--say", "{m}"]
ready = {{ log = "ready now", timeout = "20s" }}

[services.eager]
payload = "probe"
depends_on = {{ slow = "started" }}
args = ["--quiet", "--say", "eager up", "--sleep", "60000", "--say", "{m}"]

[services.patient]
payload = "probe"
depends_on = {{ slow = "healthy" }}
args = ["--quiet", "--say", "patient up", "--sleep", "60000", "--say", "{m}"]
"#
    );
    let server = env.server(&manifest, &[], &[]);
    server.wait_stderr("all services running", 20);
    server.wait_stdout(20, |l| l.iter().any(|l| l.ends_with("| patient up")));
    server.signal(Signal::SIGTERM);
    let (status, out, err) = server.finish(20);
    let all = err.join("\n");
    assert_eq!(status.code(), Some(0), "{all}");
    let slow_ready = line_index(&err, "slow: ready in");
    assert!(line_index(&err, "slow: started") < line_index(&err, "eager: started"), "{all}");
    assert!(line_index(&err, "eager: started") < slow_ready, "{all}");
    assert!(slow_ready < line_index(&err, "patient: started"), "{all}");
    assert!(out.iter().any(|l| l.ends_with("| eager up")), "{out:?}");
    // On the way down, both dependents stop before slow.
    let slow_stopped = line_index(&err, "slow: stopped");
    assert!(line_index(&err, "eager: stopped") < slow_stopped, "{all}");
    assert!(line_index(&err, "patient: stopped") < slow_stopped, "{all}");
    assert_no_process_with(&m);
}

#[test]
fn a_failing_job_stops_the_server_with_exit_1_and_what_waits_never_starts() {
    let env = TestEnv::new();
    let m = test_marker("failing-job");
    let manifest = format!(
        r#"
[services.migrate]
payload = "probe"
args = ["--quiet", "--say", "migration failed", "--exit", "3"]

[services.api]
payload = "probe"
depends_on = {{ migrate = "completed_successfully" }}
args = ["--quiet", "--sleep", "60000", "--say", "{m}"]

[services.worker]
payload = "probe"
depends_on = {{ migrate = "completed_successfully", web = "started" }}
args = ["--quiet", "--sleep", "60000", "--say", "{m}"]

[services.web]
payload = "probe"
args = ["--quiet", "--sleep", "60000", "--say", "{m}"]
"#
    );
    let (status, _, err) = env.server(&manifest, &[], &[]).finish(20);
    let all = err.join("\n");
    assert_eq!(status.code(), Some(1), "{all}");
    assert_eq!(
        err.last().unwrap(),
        "error: job migrate failed (exit status 3) and its restart policy is \"no\": api, \
         worker, waiting for it to complete successfully, cannot start",
        "{all}"
    );
    for never in ["api: started", "worker: started"] {
        assert!(!err.iter().any(|l| l.contains(never)), "{never}:\n{all}");
    }
    assert_no_process_with(&m);
}

#[test]
fn condition_mistakes_are_reported_together_before_anything_starts() {
    let env = TestEnv::new();
    let manifest = r#"
[services.cache]
payload = "probe"
restart = "always"

[services.api]
payload = "probe"
depends_on = { cache = "completed_successfully", db = "started", web = "ready" }

[services.web]
payload = "probe"
depends_on = { web = "started" }
"#;
    let (status, out, err) = env.server(manifest, &[], &[]).finish(10);
    assert_eq!(status.code(), Some(2), "{err:?}");
    assert!(out.is_empty(), "{out:?}");
    let want = [
        "service api: depends_on \"web\" = \"ready\" is not a condition: use \"started\", \
         \"healthy\" or \"completed_successfully\"",
        "service api: depends_on \"cache\" = \"completed_successfully\" can never hold",
        "service api: depends_on \"db\" is not a service here",
        "service web: depends_on names itself",
    ];
    assert_eq!(err.len(), want.len(), "{err:#?}");
    for (line, want) in err.iter().zip(want) {
        assert!(line.starts_with("error: ") && line.contains("services.toml\": "), "{line}");
        assert!(line.contains(want), "{line}\nwant: {want}");
    }
}
