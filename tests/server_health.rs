//! `exec` checks and liveness (`health`), with real processes: an `exec`
//! readiness check is run until it passes, a failing or overrunning one is
//! named with its output and leaves nothing behind. Nothing here waits a
//! fixed time: each test waits for the supervisor's own log lines.
#![cfg(target_os = "linux")]

mod common;

use common::*;
use nix::sys::signal::Signal;

#[test]
fn an_exec_readiness_check_is_run_until_it_passes() {
    let env = TestEnv::new();
    let m = test_marker("exec-ready");
    let flag = env.dir.path().join("ready-flag");
    let manifest = format!(
        r#"
[services.api]
payload = "probe"
args = ["--quiet", "--sleep", "60000", "--say", "{m}"]
ready = {{ exec = ["test", "-e", {flag:?}], timeout = "60s" }}

[services.runner]
payload = "probe"
depends_on = ["api"]
args = ["--quiet", "--say", "runner up", "--sleep", "60000", "--say", "{m}"]
"#
    );
    let server = env.server(&manifest, &[], &[]);
    server.wait_stderr("api: started", 20);
    // The check cannot pass without the file.
    let early = server.stderr.lock().unwrap().clone();
    assert!(!early.iter().any(|l| l.contains("api: ready")), "{early:#?}");
    std::fs::write(&flag, "").unwrap();
    server.wait_stderr("all services running", 30);
    server.signal(Signal::SIGTERM);
    let (status, _, err) = server.finish(20);
    let all = err.join("\n");
    assert_eq!(status.code(), Some(0), "{all}");
    assert!(line_index(&err, "api: ready in") < line_index(&err, "runner: started"), "{all}");
    assert_no_process_with(&m);
}

#[test]
fn an_exec_readiness_check_that_fails_is_named_with_its_last_output_line() {
    let env = TestEnv::new();
    let m = test_marker("exec-fails");
    let manifest = format!(
        r#"
[services.api]
payload = "probe"
args = ["--quiet", "--sleep", "60000", "--say", "{m}"]
ready = {{ exec = ["sh", "-c", "echo checking; echo 'db is down' >&2; exit 3"], timeout = "2s" }}
"#
    );
    let (status, _, err) = env.server(&manifest, &[], &[]).finish(20);
    assert_eq!(status.code(), Some(1), "{err:#?}");
    assert_eq!(
        err.last().unwrap(),
        "error: api was not ready within 2s: exec [\"sh\", \"-c\", \"echo checking; echo 'db is \
         down' >&2; exit 3\"] exited (exit status 3); last output line: \"db is down\""
    );
    assert_no_process_with(&m);
}

#[test]
fn an_exec_check_that_overruns_is_killed_with_its_process_group() {
    let env = TestEnv::new();
    let m = test_marker("exec-overruns");
    // sh forks the sleep: both are in the check's group.
    let manifest = format!(
        r#"
[services.api]
payload = "probe"
args = ["--quiet", "--sleep", "60000", "--say", "{m}"]
ready = {{ exec = ["sh", "-c", "echo started; sleep 987; : {m}"], timeout = "500ms" }}
"#
    );
    let (status, _, err) = env.server(&manifest, &[], &[]).finish(20);
    assert_eq!(status.code(), Some(1), "{err:#?}");
    let last = err.last().unwrap();
    assert!(
        last.starts_with("error: api was not ready within 500ms: exec [\"sh\", \"-c\", ")
            && last
                .ends_with("did not finish within 500ms (killed); last output line: \"started\""),
        "{last}"
    );
    assert!(!err.iter().any(|l| l.contains("left its service's process group")), "{err:#?}");
    assert_no_process_with(&m);
    assert_no_process_with("sleep 987");
}

#[test]
fn a_service_whose_exec_health_check_starts_failing_is_restarted_and_the_log_says_why() {
    let env = TestEnv::new();
    let m = test_marker("exec-health");
    let flag = env.dir.path().join("healthy-flag");
    std::fs::write(&flag, "").unwrap();
    let manifest = format!(
        r#"
[services.web]
payload = "probe"
args = ["--quiet", "--say", "web up", "--sleep", "60000", "--say", "{m}"]
restart = "on-failure"
health = {{ exec = ["test", "-e", {flag:?}], interval = "100ms", timeout = "10s", retries = 2 }}
"#
    );
    let server = env.server(&manifest, &[], &[]);
    server.wait_stderr("all services running", 20);
    std::fs::remove_file(&flag).unwrap();
    server.wait_stderr("web: unhealthy after 2 failed health checks in a row", 30);
    // Healthy again from here on: the next run stays up.
    std::fs::write(&flag, "").unwrap();
    server.wait_stderr("restarting in 250ms", 30);
    server.wait_stdout(30, |l| l.iter().filter(|l| l.ends_with("| web up")).count() >= 2);
    server.signal(Signal::SIGTERM);
    let (status, _, err) = server.finish(20);
    let all = err.join("\n");
    assert_eq!(status.code(), Some(0), "{all}");
    let check = format!("exec [\"test\", \"-e\", {:?}] exited (exit status 1)", flag.display());
    let first = line_index(&err, "web: health check failed (1 of 2 in a row)");
    assert!(err[first].ends_with(&check), "{}", err[first]);
    let unhealthy = line_index(&err, "web: unhealthy");
    assert!(
        err[unhealthy].ends_with(&format!(
            "web: unhealthy after 2 failed health checks in a row (the last: {check}); stopping \
             it with SIGTERM to restart it"
        )),
        "{}",
        err[unhealthy]
    );
    let stopped = line_index(&err, "web: stopped (killed by SIGTERM) for being unhealthy");
    assert!(err[stopped].ends_with("restarting in 250ms (1 of 5 allowed in 1m)"), "{all}");
    assert!(first < unhealthy && unhealthy < stopped, "{all}");
    assert!(stopped < err.iter().rposition(|l| l.contains("web: started")).unwrap(), "{all}");
    assert_no_process_with(&m);
}

#[test]
fn a_service_whose_tcp_health_check_starts_failing_is_restarted_then_given_up_on() {
    let env = TestEnv::new();
    let m = test_marker("tcp-health");
    // The address checked is this test's: it answers two checks, then
    // closes, and every later check is refused.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let answered = std::thread::spawn(move || {
        for _ in 0..2 {
            drop(listener.accept().unwrap());
        }
    });
    let manifest = format!(
        r#"
[services.web]
payload = "probe"
args = ["--quiet", "--sleep", "60000", "--say", "{m}"]
restart = "always"
max_restarts = 1
health = {{ tcp = "{addr}", interval = "100ms", timeout = "5s", retries = 2 }}

[services.other]
payload = "probe"
args = ["--quiet", "--sleep", "60000", "--say", "{m}"]
"#
    );
    let server = env.server(&manifest, &[], &[]);
    answered.join().unwrap();
    let (status, _, err) = server.finish(60);
    let all = err.join("\n");
    assert_eq!(status.code(), Some(1), "{all}");
    // Two checks passed (the two connections this test answered) before
    // any failed.
    let first_failure = line_index(&err, "web: health check failed (1 of 2 in a row)");
    assert!(line_index(&err, "all services running") < first_failure, "{all}");
    assert_eq!(err.iter().filter(|l| l.contains("web: started")).count(), 2, "{all}");
    assert_eq!(err.iter().filter(|l| l.contains("web: unhealthy after 2")).count(), 2, "{all}");
    let last = err.last().unwrap();
    assert!(
        last.starts_with(
            "error: web was restarted once within 1m and is unhealthy again after 2 failed \
             health checks in a row (the last: "
        ) && last.to_lowercase().contains("refused")
            && last.ends_with("): giving up"),
        "{last}"
    );
    assert!(err.iter().any(|l| l.contains("other: stopped")), "{all}");
    assert_no_process_with(&m);
}

#[test]
fn an_unhealthy_service_with_restart_no_stops_the_server_naming_it() {
    let env = TestEnv::new();
    let m = test_marker("unhealthy-no");
    let manifest = format!(
        r#"
[services.web]
payload = "probe"
args = ["--quiet", "--sleep", "60000", "--say", "{m}"]
health = {{ exec = ["false"], interval = "100ms", retries = 1 }}
"#
    );
    let (status, _, err) = env.server(&manifest, &[], &[]).finish(30);
    assert_eq!(status.code(), Some(1), "{err:#?}");
    assert_eq!(
        err.last().unwrap(),
        "error: web is unhealthy after 1 failed health check (the last: exec [\"false\"] exited \
         (exit status 1)), and its restart policy is \"no\""
    );
    assert!(err.iter().any(|l| l.contains("web: stopped (killed by SIGTERM)")), "{err:#?}");
    assert_no_process_with(&m);
}
