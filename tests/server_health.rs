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
