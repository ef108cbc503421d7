//! stigmer as PID 1 (a container's entrypoint), in a new pid namespace:
//! orphaned grandchildren are reaped, SIGTERM stops everything, and the exit
//! status is right.
#![cfg(target_os = "linux")]

mod common;

use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;

fn ns_pid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("NSpid:"))?;
    line.split_whitespace().last()?.parse().ok()
}

#[test]
fn as_pid1_orphans_are_reaped_and_sigterm_stops_everything() {
    require!(is_root() && have("unshare"), "needs root and unshare for a new pid namespace");
    let env = TestEnv::new();
    let m = format!("pid1-marker-{}", std::process::id());
    let manifest = format!(
        r#"
[services.orphaner]
payload = "probe"
args = ["--quiet", "--orphan", "1500", "--sleep", "60000", "--say", "{m}"]

[services.other]
payload = "probe"
args = ["--quiet", "--orphan", "1501", "--sleep", "60000", "--say", "{m}"]
"#
    );
    let server = env.server(&manifest, &["unshare", "--pid", "--fork", "--mount-proc"], &[]);
    server.wait_stderr("all services running", 20);
    let unshare = server.pid().as_raw() as u32;
    let stigmer = children_of(unshare).first().expect("unshare forked stigmer").0;
    assert_eq!(ns_pid(stigmer), Some(1), "stigmer is PID 1 in its namespace");

    std::thread::sleep(Duration::from_millis(500));
    let orphans: Vec<_> =
        processes_with("/proc/self/exe --quiet --sleep 150").into_iter().map(|p| p.0).collect();
    assert_eq!(orphans.len(), 2, "two grandchildren left behind by their parents");
    let children: Vec<u32> = children_of(stigmer).into_iter().map(|c| c.0).collect();
    assert!(orphans.iter().all(|o| children.contains(o)), "orphans belong to PID 1");

    // They exit at 1.5s; PID 1 must reap them.
    std::thread::sleep(Duration::from_millis(1800));
    let zombies: Vec<_> = children_of(stigmer).into_iter().filter(|c| c.1 == 'Z').collect();
    assert!(zombies.is_empty(), "zombies under PID 1: {zombies:?}");
    assert!(processes_with("/proc/self/exe --quiet --sleep 150").is_empty());

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(stigmer as i32), Signal::SIGTERM).unwrap();
    let (status, _, err) = server.finish(20);
    assert_eq!(status.code(), Some(0), "{}", err.join("\n"));
    assert!(
        err.iter().any(|l| l.contains("all services stopped after SIGTERM")),
        "{}",
        err.join("\n")
    );
    assert!(processes_with(&m).is_empty(), "{:?}", processes_with(&m));
}
