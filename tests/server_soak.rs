//! Repetition: 200 start/stop cycles of the demo system leave nothing
//! behind, and a service restarted again and again costs stigmer no
//! descriptor and no second memfd.
#![cfg(target_os = "linux")]

mod common;

use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;

#[test]
fn two_hundred_start_stop_cycles_of_the_demo_system() {
    let env = TestEnv::new();
    let m = format!("soak-marker-{}", std::process::id());
    let mut guards = Vec::new();
    for cycle in 0..200 {
        let port = free_port();
        // The demo payloads, on a port of this cycle's own; the marker is an
        // extra argument they ignore, to find them in the process table.
        let manifest = format!(
            r#"
[services.stigmer-server]
args = ["--port", "{port}", "{m}"]
ready = {{ http = "http://127.0.0.1:{port}/healthz", timeout = "10s" }}
[services.workflow-runner]
depends_on = ["stigmer-server"]
args = ["--server", "127.0.0.1:{port}", "--interval", "20", "{m}"]
[services.activity-runner]
payload = "workflow-runner"
depends_on = ["stigmer-server"]
args = ["--server", "127.0.0.1:{port}", "--queue", "activities", "{m}"]
"#
        );
        let server = env.server(&manifest, &[], &[]);
        guards.push(server.child.id());
        server.wait_stderr("all services running", 20);
        server.signal(if cycle % 2 == 0 { Signal::SIGTERM } else { Signal::SIGINT });
        let (status, _, err) = server.finish(20);
        assert_eq!(status.code(), Some(0), "cycle {cycle}:\n{}", err.join("\n"));
    }
    assert!(processes_with(&m).is_empty(), "{:?}", processes_with(&m));
    // Only this test's servers: the other test of this file runs at the
    // same time, and its server is a zombie for a moment when it exits.
    let me = std::process::id();
    let zombies: Vec<_> =
        children_of(me).into_iter().filter(|c| c.1 == 'Z' && guards.contains(&c.0)).collect();
    assert!(zombies.is_empty(), "{zombies:?}");
}

#[test]
fn restarts_leak_no_descriptor_and_share_one_memfd() {
    let env = TestEnv::new();
    let manifest = r#"
[services.flaky]
payload = "probe"
args = ["--quiet", "--exit", "1"]
restart = "on-failure"
max_restarts = 1000
restart_window = "300ms"

[services.steady]
payload = "probe"
args = ["--quiet", "--sleep", "60000"]
"#;
    let server = env.server(manifest, &[], &["--backend", "memfd"]);
    // The supervisor holds the memfds and the pipes (the guard, the pid
    // started, only waits).
    let pid = server.supervisor();
    let fds = || -> Vec<String> {
        let mut links: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read_link(e.path()).ok())
            .map(|t| t.to_string_lossy().into_owned())
            .collect();
        links.sort();
        links
    };
    let restarts = |n: usize| {
        let s = &server;
        move || {
            s.stderr.lock().unwrap().iter().filter(|l| l.contains("flaky: started")).count() >= n
        }
    };
    let wait = |pred: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !pred() {
            assert!(
                std::time::Instant::now() < deadline,
                "{}",
                server.stderr.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    wait(&restarts(3));
    let early = fds();
    wait(&restarts(20));
    let late = fds();
    let memfds: Vec<_> = late.iter().filter(|l| l.starts_with("/memfd:")).collect();
    assert_eq!(memfds, ["/memfd:probe (deleted)"], "one memfd for the one payload");
    // Pipes of the current run come and go, and so does the /dev/null std
    // opens in the parent for a spawn's stdin; everything else must be
    // equal.
    let stable = |v: &[String]| {
        v.iter()
            .filter(|l| !l.starts_with("pipe:") && *l != "/dev/null")
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(stable(&early), stable(&late));
    assert!(late.len() <= early.len() + 2, "{early:?} -> {late:?}");
    server.signal(Signal::SIGTERM);
    let (status, _, _) = server.finish(20);
    assert_eq!(status.code(), Some(0));
}
