//! stigmer as PID 1 (a container's entrypoint), in a new pid namespace:
//! orphaned grandchildren are reaped, SIGTERM stops everything, and the exit
//! status is right.
#![cfg(target_os = "linux")]

mod common;

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
args = ["--quiet", "--orphan", "4000", "--sleep", "60000", "--say", "{m}"]

[services.other]
payload = "probe"
args = ["--quiet", "--orphan", "4001", "--sleep", "60000", "--say", "{m}"]
"#
    );
    let server = env.server(&manifest, &["unshare", "--pid", "--fork", "--mount-proc"], &[]);
    server.wait_stderr("all services running", 20);
    let unshare = server.pid().as_raw() as u32;
    let stigmer = children_of(unshare).first().expect("unshare forked stigmer").0;
    assert_eq!(ns_pid(stigmer), Some(1), "stigmer is PID 1 in its namespace");

    // stigmer (PID 1) is the guard; its one child, the supervisor, is the
    // services' parent and a child subreaper.
    let kids = children_of(stigmer);
    assert_eq!(kids.len(), 1, "the guard has one child, the supervisor: {kids:?}");
    let supervisor = kids[0].0;
    let orphans: Vec<_> = wait_processes("/proc/self/exe --quiet --sleep 400", 2, 10)
        .into_iter()
        .map(|p| p.0)
        .collect();
    wait_until(
        5,
        || format!("orphans {orphans:?} not reparented to the supervisor"),
        || orphans.iter().all(|o| parent_of(*o) == Some(supervisor)),
    );

    // They exit at 4 s (long enough to be seen alive and reparented on a
    // loaded machine); they must be reaped, leaving no zombie.
    wait_until(
        10,
        || format!("{:?}", processes_with("/proc/self/exe --quiet --sleep 400")),
        || processes_with("/proc/self/exe --quiet --sleep 400").is_empty(),
    );
    let zombies = || -> Vec<_> {
        [stigmer, supervisor]
            .into_iter()
            .flat_map(children_of)
            .filter(|c| c.1 == 'Z' && orphans.contains(&c.0))
            .collect()
    };
    wait_until(5, || format!("orphans left as zombies: {:?}", zombies()), || zombies().is_empty());

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
