//! The mapped backend with the demo payloads: a payload mapped straight
//! from stigmer's own file runs as from disk (argv, name, exit status,
//! signals), shows its argv in `/proc/PID/cmdline`, maps its segments from
//! stigmer's file at a 64 KiB-aligned offset, pins no shared memory, holds
//! no memfd, keeps stigmer's file from being written while it runs, and
//! runs under `stigmer server` with restarts. What it cannot map (a `#!`
//! script) is refused with the reason. The other classes of ELF payload are
//! in `tests/mapped_matrix.rs`.
#![cfg(target_os = "linux")]

mod common;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};

use common::*;

/// `stigmer --backend mapped run probe ARGS --say ready --sleep 60000`
/// from `exe`, once it said "ready"; its stdout lines so far.
fn running_probe(env: &TestEnv, exe: &std::path::Path, args: &[&str]) -> (ChildGuard, Vec<String>) {
    let mut cmd = Command::new(exe);
    cmd.env("STIGMER_HOME", &env.home).env_remove("STIGMER_BACKEND");
    cmd.args(["--backend", "mapped", "run", "probe"]).args(args);
    cmd.args(["--say", "ready", "--sleep", "60000"]).stdout(Stdio::piped());
    let mut child = ChildGuard(cmd.spawn().unwrap());
    let mut lines = Vec::new();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    loop {
        let mut line = String::new();
        assert!(out.read_line(&mut line).unwrap() > 0, "the probe ended early: {lines:?}");
        let line = line.trim_end().to_owned();
        let done = line == "ready";
        lines.push(line);
        if done {
            break;
        }
    }
    (child, lines)
}

fn field(lines: &[String], key: &str) -> String {
    let prefix = format!("{key}: ");
    lines.iter().find_map(|l| l.strip_prefix(&prefix)).unwrap_or_default().to_owned()
}

fn status_field(pid: u32, key: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find_map(|l| l.strip_prefix(&format!("{key}:"))).unwrap_or("").trim().to_owned()
}

#[test]
fn a_mapped_payload_runs_from_stigmers_file_with_nothing_copied_or_pinned() {
    let env = TestEnv::new();
    let (child, lines) = running_probe(&env, stigmer_bin(), &["x y", "z"]);
    let pid = child.id();
    // It is the same process: stigmer replaced itself with the payload.
    assert_eq!(
        field(&lines, "argv"),
        r#"["probe", "x y", "z", "--say", "ready", "--sleep", "60000"]"#
    );
    assert_eq!(field(&lines, "comm"), "probe");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert_eq!(cmdline, b"probe\0x y\0z\0--say\0ready\0--sleep\x0060000\0");
    // /proc/PID/exe is stigmer (the known difference from execve).
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert_eq!(exe, std::fs::canonicalize(stigmer_bin()).unwrap());
    // Nothing copied: no memfd, no shared memory.
    assert_eq!(status_field(pid, "RssShmem"), "0 kB");
    let fds: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten().collect();
    for fd in fds {
        let target = std::fs::read_link(fd.path()).unwrap_or_default();
        assert!(!target.to_string_lossy().contains("memfd:"), "{target:?}");
    }
    // Its segments come from stigmer's file, at the payload's offset (64
    // KiB-aligned), executable where they should be; stigmer's own code
    // is gone but for one page of it.
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let exe = exe.display().to_string();
    let from_exe: Vec<&str> = maps.lines().filter(|l| l.ends_with(&exe)).collect();
    // (start, end, file offset) of each; the payload's segments lie next to
    // each other, the one page of stigmer's code kept apart (below or above
    // them in the file, as the linker placed stigmer's code).
    let spans: Vec<(u64, u64, u64)> = from_exe
        .iter()
        .map(|l| {
            let mut f = l.split_whitespace();
            let (start, end) = f.next().unwrap().split_once('-').unwrap();
            let hex = |v: &str| u64::from_str_radix(v, 16).unwrap();
            (hex(start), hex(end), hex(f.nth(1).unwrap()))
        })
        .collect();
    let payload: Vec<&(u64, u64, u64)> = spans
        .iter()
        .filter(|(start, end, _)| spans.iter().any(|o| o.1 == *start || o.0 == *end))
        .collect();
    assert_eq!(payload.len(), spans.len() - 1, "one page of stigmer's apart: {maps}");
    let first = payload.iter().map(|s| s.2).min().unwrap();
    assert_eq!(first % (64 * 1024), 0, "the payload starts on 64 KiB: {maps}");
    let code: Vec<&&str> = from_exe.iter().filter(|l| l.contains(" r-xp ")).collect();
    assert_eq!(code.len(), 2, "the payload's code and the jump page: {maps}");
    assert!(maps.lines().any(|l| l.ends_with("[stack]")), "{maps}");
    assert!(maps.lines().any(|l| l.ends_with("[vdso]")), "{maps}");
    assert!(!maps.contains("/libc.so") || maps.lines().any(|l| l.contains("ld-linux")), "{maps}");
    let mut child = child;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt as _;
    assert_eq!(status.signal(), Some(15), "killed by the default action of SIGTERM");
}

#[test]
fn exit_statuses_and_signals_are_the_payloads() {
    let env = TestEnv::new();
    let o = env.run(Some("mapped"), "probe", &["--quiet", "--exit", "7"]);
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    let o = env.run(Some("mapped"), "probe", &["--quiet", "--signal", "9"]);
    use std::os::unix::process::ExitStatusExt as _;
    assert_eq!(o.status.signal(), Some(9));
    // A signal it ignores by itself does nothing; stigmer's own handlers
    // are gone (SIGINT kills it by default).
    let (mut child, _) = running_probe(&env, stigmer_bin(), &["--ignore", "15"]);
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    assert_eq!(child.wait().unwrap().signal(), Some(2));
}

#[test]
fn stigmers_file_cannot_be_written_while_a_mapped_payload_runs() {
    let env = TestEnv::new();
    // A copy of stigmer of this test's own, that nothing else runs.
    let copy = env.dir.path().join("stigmer");
    std::fs::copy(stigmer_bin(), &copy).unwrap();
    let (mut child, _) = running_probe(&env, &copy, &[]);
    let write = || std::fs::OpenOptions::new().write(true).open(&copy);
    let err = write().unwrap_err();
    assert_eq!(err.raw_os_error(), Some(nix::libc::ETXTBSY), "{err}");
    child.kill().unwrap();
    child.wait().unwrap();
    // Once it is gone, the file is writable again: the refusal was its.
    assert!(write().is_ok());
}

#[test]
fn what_cannot_be_mapped_is_refused_with_the_reason() {
    let env = TestEnv::new();
    let o = env.run(Some("mapped"), "hello", &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("hello cannot be mapped: a #! script, which its interpreter reads"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn the_demo_services_run_mapped_and_restart() {
    let env = TestEnv::new();
    let port = free_port();
    let manifest = format!(
        r#"
[services.api]
payload = "stigmer-server"
args = ["--port", "{port}"]
ready = {{ http = "http://127.0.0.1:{port}/healthz", timeout = "20s" }}

[services.runner]
payload = "workflow-runner"
depends_on = ["api"]
args = ["--server", "127.0.0.1:{port}", "--queue", "workflows", "--interval", "100"]
restart = "on-failure"
"#
    );
    let server = env.server(&manifest, &[], &["--backend", "mapped"]);
    server.wait_stderr("all services running", 30);
    let marker = format!("127.0.0.1:{port} --queue");
    let runner = || wait_processes(&marker, 1, 10)[0].0;
    let first = runner();
    assert_eq!(status_field(first, "RssShmem"), "0 kB");
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{first}/comm")).unwrap(),
        "workflow-runner\n"
    );
    let starts =
        |lines: &[String]| lines.iter().filter(|l| l.contains("runner: started (pid")).count();
    let started = starts(&server.stderr.lock().unwrap());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // The restart: one more start line, a new process, and work done after
    // the kill.
    let said = server.stdout.lock().unwrap().len();
    wait_until(20, || "a new start".into(), || starts(&server.stderr.lock().unwrap()) > started);
    wait_until(20, || "a new runner".into(), || runner() != first);
    let second = runner();
    assert_eq!(status_field(second, "RssShmem"), "0 kB");
    // The new runner's first line, then work it did (the first one's last
    // lines may still be in the pipe after the kill).
    let runner_says = |l: &String, what: &str| l.starts_with("runner") && l.contains(what);
    server.wait_stdout(20, |lines| {
        let polls = lines[said..].iter().position(|l| runner_says(l, "| polling "));
        polls.is_some_and(|p| {
            lines[said + p..].iter().any(|l| runner_says(l, "finished workflows-"))
        })
    });
    server.signal(nix::sys::signal::Signal::SIGTERM);
    let (status, _, stderr) = server.finish(30);
    assert!(status.success(), "{status:?} {stderr:?}");
}
