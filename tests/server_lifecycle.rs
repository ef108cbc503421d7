//! `stigmer server`'s life and death, checked in the process table: nothing
//! outlives it (SIGKILL of the guard or of the supervisor, a panic), stop
//! and reload signals, escaped daemons on a clean stop, a taken address,
//! and shutdowns that finish in time when stdout and stderr are pipes
//! nobody reads. Each test runs on every backend of the platform.
#![cfg(target_os = "linux")]

mod common;

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A number unique to this test run and `k`, for markers that must appear
/// in a command line chosen by probe (`--sleep MS` of its grandchildren).
fn unique_ms(k: u32) -> u32 {
    1_000_000 + (std::process::id() % 100_000) * 20 + k
}

fn marker(test: &str, backend: &str) -> String {
    format!("lifecycle-{test}-{backend}-{}", std::process::id())
}

/// The command line of probe's `--orphan MS` grandchild (same group).
fn orphan(ms: u32) -> String {
    format!("/proc/self/exe --quiet --sleep {ms}")
}

/// The command line of probe's `--daemon MS` grandchild (its own session).
fn daemon(ms: u32) -> String {
    format!("/proc/self/exe --setsid --quiet --sleep {ms}")
}

/// Waits until the daemon `--daemon ms` leaves behind runs and has left
/// its service's session (the probe calls setsid after its exec), and
/// returns its pid.
#[track_caller]
fn wait_daemon(ms: u32) -> u32 {
    let pid = wait_processes(&daemon(ms), 1, 10)[0].0;
    let session = || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let after = stat.rsplit_once(')')?.1;
        after.split_whitespace().nth(3)?.parse::<u32>().ok()
    };
    wait_until(
        10,
        || format!("daemon {pid} in session {:?}", session()),
        || session() == Some(pid),
    );
    pid
}

/// Waits until no live process has any of `markers` in its command line.
#[track_caller]
fn wait_gone(markers: &[&str], secs: u64) {
    let left = || -> Vec<(u32, String)> {
        markers
            .iter()
            .flat_map(|m| processes_with(m))
            .filter(|p| state_of(p.0).is_some_and(|s| s != 'Z'))
            .collect()
    };
    wait_until(secs, || format!("processes left behind: {:#?}", left()), || left().is_empty());
}

#[track_caller]
fn assert_none_left(markers: &[&str]) {
    let left: Vec<_> = markers
        .iter()
        .flat_map(|m| processes_with(m))
        .filter(|p| state_of(p.0).is_some_and(|s| s != 'Z'))
        .collect();
    assert!(left.is_empty(), "processes left behind: {left:#?}");
}

/// Two services: `a` leaves an orphan in its group and a setsid daemon.
fn escaping_manifest(m: &str, orphan_ms: u32, daemon_ms: u32) -> String {
    format!(
        r#"
[services.a]
payload = "probe"
args = ["--quiet", "--orphan", "{orphan_ms}", "--daemon", "{daemon_ms}", "--sleep", "600000", "--say", "{m}"]

[services.b]
payload = "probe"
args = ["--quiet", "--sleep", "600000", "--say", "{m}"]
"#
    )
}

#[test]
fn sigkill_of_the_guard_leaves_no_service_orphan_or_daemon() {
    for (k, backend) in BACKENDS.iter().enumerate() {
        let env = TestEnv::new();
        let m = marker("kill-guard", backend);
        let (o, d) = (unique_ms(2 * k as u32), unique_ms(2 * k as u32 + 1));
        let server = env.server(&escaping_manifest(&m, o, d), &[], &["--backend", backend]);
        server.wait_stderr("all services running", 20);
        wait_processes(&m, 2, 10);
        wait_processes(&orphan(o), 1, 10);
        wait_daemon(d);
        let supervisor = server.supervisor();
        server.signal(Signal::SIGKILL);
        // The supervisor sees the guard's pipe close and kills everything.
        wait_gone(&[&m, &orphan(o), &daemon(d)], 10);
        wait_until(
            10,
            || format!("supervisor {supervisor} still runs"),
            || state_of(supervisor).is_none_or(|s| s == 'Z'),
        );
        let (status, _, err) = server.finish(10);
        assert_eq!(status.code(), None, "the guard died of SIGKILL");
        assert!(
            err.iter().any(|l| l.contains("the guard process is gone: killing all services now")),
            "{backend}: {}",
            err.join("\n")
        );
    }
}

#[test]
fn sigkill_of_the_supervisor_leaves_no_service_orphan_or_daemon() {
    for (k, backend) in BACKENDS.iter().enumerate() {
        let env = TestEnv::new();
        let m = marker("kill-supervisor", backend);
        let (o, d) = (unique_ms(4 + 2 * k as u32), unique_ms(5 + 2 * k as u32));
        let mut server = env.server(&escaping_manifest(&m, o, d), &[], &["--backend", backend]);
        server.wait_stderr("all services running", 20);
        wait_processes(&m, 2, 10);
        wait_processes(&orphan(o), 1, 10);
        wait_daemon(d);
        let supervisor = server.supervisor();
        kill(Pid::from_raw(supervisor as i32), Signal::SIGKILL).unwrap();
        // The guard outlives the supervisor only to kill what is left: by
        // the time it has exited, nothing may be left.
        let status = server.wait_exit(10);
        assert_none_left(&[&m, &orphan(o), &daemon(d)]);
        assert_eq!(status.code(), Some(128 + 9), "{backend}: 128 + SIGKILL");
        let (_, _, err) = server.finish(10);
        assert!(!err.iter().any(|l| l.contains("stopped")), "{backend}: {}", err.join("\n"));
    }
}

#[test]
fn the_services_die_with_the_supervisor_by_their_death_signal() {
    for (k, backend) in BACKENDS.iter().enumerate() {
        let env = TestEnv::new();
        let m = marker("pdeathsig", backend);
        let (o, d) = (unique_ms(20 + 2 * k as u32), unique_ms(21 + 2 * k as u32));
        let mut server = env.server(&escaping_manifest(&m, o, d), &[], &["--backend", backend]);
        server.wait_stderr("all services running", 20);
        let services: Vec<u32> = wait_processes(&m, 2, 10).into_iter().map(|p| p.0).collect();
        let orphan_pid = wait_processes(&orphan(o), 1, 10)[0].0;
        wait_daemon(d);
        let supervisor = server.supervisor();
        // With the guard stopped and the supervisor killed (no hook runs),
        // only PR_SET_PDEATHSIG can end the services.
        server.signal(Signal::SIGSTOP);
        kill(Pid::from_raw(supervisor as i32), Signal::SIGKILL).unwrap();
        for pid in &services {
            wait_until(
                10,
                || format!("service {pid}: {:?}", state_of(*pid)),
                || state_of(*pid).is_none_or(|s| s == 'Z'),
            );
        }
        // Its grandchildren have no death signal: they wait for the guard.
        assert!(state_of(orphan_pid).is_some_and(|s| s != 'Z'), "{backend}: orphan still runs");
        assert_eq!(processes_with(&daemon(d)).len(), 1, "{backend}: daemon still runs");
        server.signal(Signal::SIGCONT);
        let status = server.wait_exit(10);
        assert_none_left(&[&m, &orphan(o), &daemon(d)]);
        assert_eq!(status.code(), Some(128 + 9), "{backend}");
    }
}

#[test]
fn sigquit_and_sighup_stop_gracefully() {
    for backend in BACKENDS {
        for signal in [Signal::SIGQUIT, Signal::SIGHUP] {
            let env = TestEnv::new();
            let m = marker(&format!("stop-{signal}"), backend);
            let manifest = format!(
                "[services.api]\npayload = \"probe\"\nargs = [\"--quiet\", \"--sleep\", \"600000\", \"--say\", \"{m}\"]\n"
            );
            let server = env.server(&manifest, &[], &["--backend", backend]);
            server.wait_stderr("all services running", 20);
            wait_processes(&m, 1, 10);
            server.signal(signal);
            let (status, _, err) = server.finish(20);
            assert_eq!(status.code(), Some(0), "{backend} {signal}: {}", err.join("\n"));
            assert!(
                err.iter().any(|l| l.contains(&format!("all services stopped after {signal}"))),
                "{backend} {signal}: {}",
                err.join("\n")
            );
            // The service got its stop signal (SIGTERM), not the signal.
            assert!(
                err.iter().any(|l| l.contains("api: stopped (killed by SIGTERM)")),
                "{backend} {signal}: {}",
                err.join("\n")
            );
            assert_none_left(&[&m]);
        }
    }
}

#[test]
fn sigusr1_sends_reload_signal_only_to_the_services_that_set_it() {
    for backend in BACKENDS {
        let env = TestEnv::new();
        let m = marker("reload", backend);
        // probe dies of SIGUSR2 and of SIGUSR1 (it handles neither): which
        // service got which signal shows in how it exited.
        let manifest = format!(
            r#"
[services.reloads]
payload = "probe"
args = ["--quiet", "--sleep", "600000", "--say", "{m}-reloads"]
reload_signal = "SIGUSR2"
restart = "always"

[services.plain]
payload = "probe"
args = ["--quiet", "--sleep", "600000", "--say", "{m}-plain"]
restart = "always"
"#
        );
        let server = env.server(&manifest, &[], &["--backend", backend]);
        server.wait_stderr("all services running", 20);
        let reloads = wait_processes(&format!("{m}-reloads"), 1, 10)[0].0;
        let plain = wait_processes(&format!("{m}-plain"), 1, 10)[0].0;
        server.signal(Signal::SIGUSR1);
        server.wait_stderr("reloads: exited (killed by SIGUSR2); restarting", 10);
        // It was restarted: a new process.
        wait_until(
            10,
            || "reloads restarted".into(),
            || {
                processes_with(&format!("{m}-reloads"))
                    .iter()
                    .any(|p| p.0 != reloads && state_of(p.0) != Some('Z'))
            },
        );
        assert!(state_of(reloads).is_none_or(|s| s == 'Z'), "the old reloads is gone");
        // plain got nothing: the same process still sleeps.
        assert_eq!(state_of(plain), Some('S'), "plain still runs");
        server.signal(Signal::SIGTERM);
        let (status, _, err) = server.finish(20);
        assert_eq!(status.code(), Some(0), "{backend}: {}", err.join("\n"));
        assert!(err.iter().any(|l| l.contains("reloads: reload (SIGUSR2)")), "{}", err.join("\n"));
        assert!(!err.iter().any(|l| l.contains("plain: exited")), "{}", err.join("\n"));
        assert!(!err.iter().any(|l| l.contains("plain: reload")), "{}", err.join("\n"));
        assert_none_left(&[&m]);
    }
}

#[test]
fn a_clean_stop_stops_escaped_daemons_and_waits_for_them() {
    for (k, backend) in BACKENDS.iter().enumerate() {
        let env = TestEnv::new();
        let m = marker("escapees", backend);
        let (polite, deaf) = (unique_ms(8 + 2 * k as u32), unique_ms(9 + 2 * k as u32));
        // `deaf` ignores SIGTERM, and so does the daemon it leaves (an
        // ignored signal stays ignored across fork and exec); it stops on
        // SIGINT.
        let manifest = format!(
            r#"
[services.polite]
payload = "probe"
args = ["--quiet", "--daemon", "{polite}", "--sleep", "600000", "--say", "{m}"]

[services.deaf]
payload = "probe"
args = ["--quiet", "--ignore", "15", "--daemon", "{deaf}", "--sleep", "600000", "--say", "{m}"]
stop_signal = "SIGINT"
"#
        );
        let mut server = env.server(&manifest, &[], &["--backend", backend]);
        server.wait_stderr("all services running", 20);
        wait_processes(&m, 2, 10);
        let escapees: Vec<u32> = [polite, deaf].into_iter().map(wait_daemon).collect();
        let supervisor = server.supervisor();
        for e in &escapees {
            wait_until(
                5,
                || format!("{e} reparented to the supervisor"),
                || parent_of(*e) == Some(supervisor),
            );
        }
        let t = Instant::now();
        server.signal(Signal::SIGTERM);
        let status = server.wait_exit(20);
        let took = t.elapsed();
        // stigmer waited for them: none is left once it has exited.
        assert_none_left(&[&m, &daemon(polite), &daemon(deaf)]);
        assert_eq!(status.code(), Some(0), "{backend}");
        // The deaf one was killed after the grace.
        assert!(
            took >= Duration::from_secs(2) && took < Duration::from_secs(6),
            "{backend}: {took:?}"
        );
        let (_, _, err) = server.finish(10);
        for e in &escapees {
            assert!(
                err.iter().any(|l| l.contains(&format!(
                    "pid {e} (exe) left its service's process group: sending SIGTERM"
                ))),
                "{backend}: {}",
                err.join("\n")
            );
        }
        assert!(
            err.iter()
                .any(|l| l.contains("processes still running 2s after SIGTERM: killing them")),
            "{backend}: {}",
            err.join("\n")
        );
    }
}

#[test]
fn a_second_stop_signal_cuts_the_grace_of_escaped_daemons_short() {
    for (k, backend) in BACKENDS.iter().enumerate() {
        let env = TestEnv::new();
        let m = marker("escapee-twice", backend);
        let deaf = unique_ms(16 + k as u32);
        let manifest = format!(
            r#"
[services.deaf]
payload = "probe"
args = ["--quiet", "--ignore", "15", "--daemon", "{deaf}", "--sleep", "600000", "--say", "{m}"]
stop_signal = "SIGINT"
"#
        );
        let mut server = env.server(&manifest, &[], &["--backend", backend]);
        server.wait_stderr("all services running", 20);
        wait_processes(&m, 1, 10);
        wait_daemon(deaf);
        server.signal(Signal::SIGTERM);
        server.wait_stderr("left its service's process group: sending SIGTERM", 10);
        let t = Instant::now();
        server.signal(Signal::SIGTERM);
        let status = server.wait_exit(10);
        assert!(t.elapsed() < Duration::from_millis(1500), "{backend}: {:?}", t.elapsed());
        assert_none_left(&[&m, &daemon(deaf)]);
        assert_eq!(status.code(), Some(0), "{backend}: the service itself stopped cleanly");
        let (_, _, err) = server.finish(10);
        assert!(
            err.iter().any(|l| l.contains("SIGTERM again: killing what is left now")),
            "{backend}: {}",
            err.join("\n")
        );
    }
}

#[test]
fn a_panic_in_the_supervisor_kills_every_service_group_itself() {
    for (k, backend) in BACKENDS.iter().enumerate() {
        let env = TestEnv::new();
        let m = marker("panic", backend);
        let (o, d) = (unique_ms(12 + 2 * k as u32), unique_ms(13 + 2 * k as u32));
        let path = env.dir.path().join("services.toml");
        std::fs::write(&path, escaping_manifest(&m, o, d)).unwrap();
        let mut cmd = env.stigmer();
        cmd.args(["--backend", backend, "server", "--config"]).arg(&path);
        cmd.env("STIGMER_TEST_PANIC", "1");
        let mut server = Server::spawn(&mut cmd);
        server.wait_stderr("all services running", 20);
        wait_processes(&m, 2, 10);
        let orphan_pid = wait_processes(&orphan(o), 1, 10)[0].0;
        wait_daemon(d);
        let supervisor = server.supervisor();
        // With the guard stopped, only the panic hook can kill the orphan:
        // it is in service a's group, but no death signal ties it to the
        // supervisor, and once the supervisor is gone its parent is the
        // (stopped) guard.
        server.signal(Signal::SIGSTOP);
        kill(Pid::from_raw(supervisor as i32), Signal::SIGUSR1).unwrap();
        wait_until(
            10,
            || format!("orphan {orphan_pid}: {:?}", state_of(orphan_pid)),
            || state_of(orphan_pid).is_none_or(|s| s == 'Z'),
        );
        wait_until(
            10,
            || "the supervisor ended".into(),
            || state_of(supervisor).is_none_or(|s| s == 'Z'),
        );
        // The daemon left the group: the guard takes care of it.
        server.signal(Signal::SIGCONT);
        let status = server.wait_exit(10);
        assert_none_left(&[&m, &orphan(o), &daemon(d)]);
        assert_eq!(status.code(), Some(128 + 6), "{backend}: 128 + SIGABRT");
        let (_, _, err) = server.finish(10);
        assert!(
            err.iter()
                .any(|l| l.starts_with("stigmer: the supervisor panicked at crates/stigmer/src/")
                    && l.ends_with("STIGMER_TEST_PANIC is set: panicking; all services killed")),
            "{backend}: {}",
            err.join("\n")
        );
    }
}

#[test]
fn an_address_already_taken_is_named_and_nothing_is_called_ready() {
    for backend in BACKENDS {
        let env = TestEnv::new();
        let m = marker("taken", backend);
        // This test process holds the address.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let check = match *backend {
            "memfd" => format!("tcp = \"127.0.0.1:{port}\""),
            _ => format!("http = \"http://127.0.0.1:{port}/healthz\""),
        };
        let manifest = format!(
            r#"
[services.api]
payload = "probe"
args = ["--quiet", "--listen", "{port}", "--sleep", "600000", "--say", "{m}"]
ready = {{ {check}, timeout = "5s" }}

[services.runner]
payload = "probe"
depends_on = ["api"]
args = ["--quiet", "--sleep", "600000", "--say", "{m}"]
"#
        );
        let (status, _, err) = env.server(&manifest, &[], &["--backend", backend]).finish(20);
        assert_eq!(status.code(), Some(1), "{backend}: {}", err.join("\n"));
        let me = std::process::id();
        let comm = std::fs::read_to_string(format!("/proc/{me}/comm")).unwrap();
        assert_eq!(
            err.last().unwrap(),
            &format!(
                "error: cannot start api: 127.0.0.1:{port} is already in use, by pid {me} ({})",
                comm.trim_end()
            ),
            "{backend}"
        );
        for never in ["api: started", "api: ready in", "runner: started", "all services running"] {
            assert!(!err.iter().any(|l| l.contains(never)), "{backend}: {}", err.join("\n"));
        }
        assert_none_left(&[&m]);
        drop(listener);
    }
}

/// A FIFO at `path`, open for reading by this test (and never read), and
/// filled up, so that any write to it blocks.
fn full_fifo(path: &Path) -> File {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let nonblock = nix::fcntl::OFlag::O_NONBLOCK.bits();
    let reader = std::fs::OpenOptions::new().read(true).custom_flags(nonblock).open(path).unwrap();
    let mut filler =
        std::fs::OpenOptions::new().write(true).custom_flags(nonblock).open(path).unwrap();
    let chunk = [b'.'; 4096];
    loop {
        match std::io::Write::write(&mut filler, &chunk) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("filling the FIFO: {e}"),
        }
    }
    reader
}

/// `stigmer server` on `manifest` with stdout and stderr two full FIFOs
/// that nobody reads.
fn serve_into_full_fifos(env: &TestEnv, manifest: &str, backend: &str) -> (ChildGuard, [File; 2]) {
    let path = env.dir.path().join("services.toml");
    std::fs::write(&path, manifest).unwrap();
    let readers = [full_fifo(&env.dir.path().join("out")), full_fifo(&env.dir.path().join("err"))];
    let open = |name: &str| {
        std::fs::OpenOptions::new().write(true).open(env.dir.path().join(name)).unwrap()
    };
    let child = env
        .stigmer()
        .args(["--backend", backend, "server", "--config"])
        .arg(&path)
        .stdin(std::process::Stdio::null())
        .stdout(open("out"))
        .stderr(open("err"))
        .spawn()
        .unwrap();
    (ChildGuard(child), readers)
}

#[track_caller]
fn wait_exit(child: &mut ChildGuard, secs: u64) -> std::process::ExitStatus {
    let pid = child.id();
    let mut status = None;
    wait_until(
        secs,
        || format!("stigmer (pid {pid}) still running"),
        || {
            status = child.try_wait().unwrap();
            status.is_some()
        },
    );
    status.unwrap()
}

#[test]
fn a_shutdown_into_fifos_nobody_reads_finishes_in_time() {
    for backend in BACKENDS {
        let env = TestEnv::new();
        let m = marker("fifo", backend);
        let manifest = format!(
            r#"
[services.chatty]
payload = "probe"
args = ["--quiet", "--say", "{m}", "--spam", "2000", "--sleep", "600000"]
stop_timeout = "700ms"

[services.other]
payload = "probe"
args = ["--quiet", "--say", "{m}", "--sleep", "600000"]
stop_timeout = "700ms"
"#
        );
        let (mut child, _readers) = serve_into_full_fifos(&env, &manifest, backend);
        wait_processes(&m, 2, 20);
        // chatty is stuck writing: its output cannot get anywhere.
        let t = Instant::now();
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
        let status = wait_exit(&mut child, 10);
        let took = t.elapsed();
        // The stop timeout (700ms), the writer's grace (1s), the last
        // message's (0.5s), and a little.
        assert!(took < Duration::from_millis(700 + 1000 + 500 + 1500), "{backend}: {took:?}");
        assert_eq!(status.code(), Some(0), "{backend}");
        assert_none_left(&[&m]);
    }
}

#[test]
fn a_second_stop_signal_ends_it_at_once_with_fifos_nobody_reads() {
    for backend in BACKENDS {
        let env = TestEnv::new();
        let m = marker("fifo-twice", backend);
        let manifest = format!(
            r#"
[services.deaf]
payload = "probe"
args = ["--quiet", "--ignore", "15", "--say", "{m}", "--sleep", "600000"]
stop_timeout = "60s"

[services.canary]
payload = "probe"
args = ["--quiet", "--say", "{m}-canary", "--sleep", "600000"]
"#
        );
        let (mut child, _readers) = serve_into_full_fifos(&env, &manifest, backend);
        wait_processes(&m, 2, 20);
        let canary = wait_processes(&format!("{m}-canary"), 1, 20)[0].0;
        let guard = Pid::from_raw(child.id() as i32);
        kill(guard, Signal::SIGTERM).unwrap();
        // The shutdown has begun once the canary, which obeys SIGTERM, is
        // gone; deaf ignores it and would be given 60s.
        wait_until(
            10,
            || format!("canary {canary} still runs"),
            || state_of(canary).is_none_or(|s| s == 'Z'),
        );
        let t = Instant::now();
        kill(guard, Signal::SIGTERM).unwrap();
        let status = wait_exit(&mut child, 10);
        assert!(t.elapsed() < Duration::from_secs(3), "{backend}: {:?}", t.elapsed());
        assert_eq!(status.code(), Some(1), "{backend}: a service had to be killed");
        assert_none_left(&[&m]);
    }
}

#[test]
fn manifest_errors_into_a_fifo_nobody_reads_do_not_hang() {
    let env = TestEnv::new();
    let manifest = "[services.api]\npayload = \"probe\"\nport = 80\n";
    let (mut child, _readers) = serve_into_full_fifos(&env, manifest, NATIVE_BACKEND);
    // The problem cannot be written; stigmer gives up on it and exits.
    let status = wait_exit(&mut child, 5);
    assert_eq!(status.code(), Some(2));
}
