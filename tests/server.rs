//! `stigmer server` with real processes: ordering and readiness, whole log
//! lines, signals and stop timeouts, restart policies, and that nothing is
//! left behind. (The checks read `/proc`, so this file is Linux-only; the
//! supervisor has no Linux-only code but the child subreaper.)
#![cfg(target_os = "linux")]

mod common;

use std::os::unix::process::ExitStatusExt as _;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;

/// A marker to find a test's processes in the process table.
fn marker(test: &str) -> String {
    format!("marker-{test}-{}", std::process::id())
}

#[track_caller]
fn assert_nothing_left(marker: &str) {
    // The kernel may take a moment to finish tearing down a killed group.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let left = processes_with(marker);
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "processes left behind: {left:#?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn index_of(lines: &[String], text: &str) -> usize {
    lines
        .iter()
        .position(|l| l.contains(text))
        .unwrap_or_else(|| panic!("no {text:?} in:\n{}", lines.join("\n")))
}

#[test]
fn dependents_start_only_once_their_dependency_is_ready() {
    let env = TestEnv::new();
    let (port, m) = (free_port(), marker("order"));
    let manifest = format!(
        r#"
[services.api]
payload = "probe"
args = ["--delay", "700", "--quiet", "--listen", "{port}", "--sleep", "60000", "--say", "{m}"]
ready = {{ tcp = "127.0.0.1:{port}", timeout = "10s" }}

[services.runner]
payload = "probe"
depends_on = ["api"]
args = ["--quiet", "--say", "runner up {m}", "--sleep", "60000"]

[services.logger]
payload = "probe"
args = ["--quiet", "--delay", "300", "--say", "logger ready now", "--sleep", "60000", "--say", "{m}"]
ready = {{ log = "ready now", timeout = "10s" }}
"#
    );
    let server = env.server(&manifest, &[], &[]);
    server.wait_stderr("all services running", 20);
    // "Started" is the spawn; its first line comes once it runs.
    server.wait_stdout(20, |l| l.iter().any(|l| l.starts_with("runner | runner up")));
    server.signal(Signal::SIGTERM);
    let (status, out, err) = server.finish(20);
    assert_eq!(status.code(), Some(0), "{}", err.join("\n"));
    assert!(
        index_of(&err, "api: ready in") < index_of(&err, "runner: started"),
        "{}",
        err.join("\n")
    );
    assert!(index_of(&err, "logger: ready in") < index_of(&err, "all services running"));
    let api_ready: f64 = err[index_of(&err, "api: ready in")]
        .rsplit(' ')
        .next()
        .unwrap()
        .trim_end_matches('s')
        .parse()
        .unwrap();
    assert!(api_ready >= 0.7, "api cannot be ready before it listens: {api_ready}");
    assert!(out.iter().any(|l| l.starts_with("runner | runner up")), "{out:?}");
    // Reverse dependency order on the way down.
    assert!(
        index_of(&err, "runner: stopped") < index_of(&err, "api: stopped"),
        "{}",
        err.join("\n")
    );
    assert_nothing_left(&m);
}

#[test]
fn a_readiness_timeout_fails_clearly_and_stops_what_was_started() {
    let env = TestEnv::new();
    let (port, m) = (free_port(), marker("notready"));
    let manifest = format!(
        r#"
[services.api]
payload = "probe"
args = ["--quiet", "--sleep", "60000", "--say", "{m}"]
ready = {{ http = "http://127.0.0.1:{port}/healthz", timeout = "600ms" }}

[services.runner]
payload = "probe"
depends_on = ["api"]
args = ["--quiet", "--say", "{m}"]
"#
    );
    let (status, _, err) = env.server(&manifest, &[], &[]).finish(20);
    assert_eq!(status.code(), Some(1));
    let last = err.last().unwrap();
    assert!(last.starts_with("error: api was not ready within 600ms: "), "{last}");
    assert!(last.to_lowercase().contains("refused"), "{last}");
    assert!(!err.iter().any(|l| l.contains("runner: started")), "{}", err.join("\n"));
    assert_nothing_left(&m);
}

#[test]
fn heavy_concurrent_output_is_never_torn() {
    let env = TestEnv::new();
    let m = marker("spam");
    let mut manifest = String::new();
    for name in ["alpha", "beta", "gamma-service"] {
        manifest += &format!(
            "[services.{name}]\npayload = \"probe\"\nargs = [\"--quiet\", \"--spam\", \"3000\", \"--sleep\", \"60000\", \"--say\", \"{m}\"]\n"
        );
    }
    let server = env.server(&manifest, &[], &[]);
    server.wait_stdout(60, |lines| lines.iter().filter(|l| l.contains(" end")).count() >= 3 * 6000);
    server.signal(Signal::SIGINT);
    let (status, out, err) = server.finish(20);
    assert_eq!(status.code(), Some(0), "{}", err.join("\n"));
    let body = format!(" {} end", "x".repeat(2000));
    let mut counts = std::collections::HashMap::new();
    for line in out.iter().filter(|l| l.contains("spam ")) {
        let (prefix, rest) =
            line.split_once(" | ").unwrap_or_else(|| panic!("no prefix: {line:.80}"));
        let name = prefix.trim_end();
        assert_eq!(prefix.len(), "gamma-service".len(), "names are padded: {prefix:?}");
        assert!(
            rest.starts_with("spam out ") || rest.starts_with("spam err "),
            "torn: {line:.120}"
        );
        assert!(rest.ends_with(&body), "torn: {line:.120}");
        *counts.entry(name.to_owned()).or_insert(0) += 1;
    }
    for name in ["alpha", "beta", "gamma-service"] {
        assert_eq!(counts.get(name), Some(&6000), "{counts:?}");
    }
}

#[test]
fn json_logs_are_one_object_per_line() {
    let env = TestEnv::new();
    let manifest = "[services.api]\npayload = \"probe\"\nargs = [\"--quiet\", \"--say\", \"hello json\", \"--sleep\", \"60000\"]\n";
    let server = env.server(manifest, &[], &["--json-logs"]);
    server.wait_stdout(10, |l| !l.is_empty());
    server.signal(Signal::SIGTERM);
    let (status, out, _) = server.finish(20);
    assert!(status.success());
    let v: serde_json::Value = serde_json::from_str(&out[0]).unwrap();
    assert_eq!(v, serde_json::json!({"service": "api", "stream": "stdout", "line": "hello json"}));
}

#[test]
fn sigterm_stops_everything_and_kills_what_ignores_it() {
    let env = TestEnv::new();
    let m = marker("stubborn");
    let manifest = format!(
        r#"
[services.polite]
payload = "probe"
args = ["--quiet", "--orphan", "61234", "--sleep", "60000", "--say", "{m}"]

[services.stubborn]
payload = "probe"
args = ["--quiet", "--ignore", "15", "--sleep", "60000", "--say", "{m}"]
stop_timeout = "700ms"
"#
    );
    let server = env.server(&manifest, &[], &[]);
    server.wait_stderr("all services running", 20);
    // polite left a grandchild behind (its --orphan); the supervisor, a
    // child subreaper, became its parent, and it is in polite's process
    // group.
    let orphan = "/proc/self/exe --quiet --sleep 61234";
    let grandchildren = wait_processes(orphan, 1, 10);
    let supervisor = server.supervisor();
    wait_until(
        5,
        || format!("{grandchildren:?} not reparented to the supervisor {supervisor}"),
        || parent_of(grandchildren[0].0) == Some(supervisor),
    );
    let t = Instant::now();
    server.signal(Signal::SIGTERM);
    let (status, _, err) = server.finish(20);
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(700) && took < Duration::from_secs(5), "{took:?}");
    assert!(
        err.iter().any(|l| l.contains("stubborn: still running 700ms after SIGTERM: killing it")),
        "{}",
        err.join("\n")
    );
    assert!(err.iter().any(|l| l.contains("polite: stopped (killed by SIGTERM)")));
    assert_eq!(status.code(), Some(1), "a service had to be killed");
    assert!(err.last().unwrap().contains("stubborn had to be killed"));
    assert_nothing_left(&m);
    assert_nothing_left(orphan);
}

#[test]
fn a_second_sigint_kills_at_once() {
    let env = TestEnv::new();
    let m = marker("twice");
    let manifest = format!(
        "[services.deaf]\npayload = \"probe\"\nargs = [\"--quiet\", \"--ignore\", \"2\", \"--ignore\", \"15\", \"--sleep\", \"60000\", \"--say\", \"{m}\"]\nstop_signal = \"SIGINT\"\nstop_timeout = \"30s\"\n"
    );
    let server = env.server(&manifest, &[], &[]);
    server.wait_stderr("all services running", 20);
    server.signal(Signal::SIGINT);
    server.wait_stderr("stopping all services", 10);
    let t = Instant::now();
    server.signal(Signal::SIGINT);
    let (status, _, err) = server.finish(10);
    assert!(t.elapsed() < Duration::from_secs(3));
    assert!(
        err.iter().any(|l| l.contains("SIGINT again: killing all services now")),
        "{}",
        err.join("\n")
    );
    assert_eq!(status.code(), Some(1));
    assert_nothing_left(&m);
}

#[test]
fn restart_on_failure_reuses_the_same_memfd_then_gives_up() {
    let env = TestEnv::new();
    let manifest = r#"
[services.crashy]
payload = "probe"
args = ["--sleep", "50", "--exit", "3"]
restart = "on-failure"
max_restarts = 3
restart_window = "1m"
"#;
    let (status, out, err) = env.server(manifest, &[], &["--backend", "memfd"]).finish(30);
    assert_eq!(status.code(), Some(1));
    let starts = err.iter().filter(|l| l.contains("crashy: started")).count();
    assert_eq!(starts, 4, "the first run and 3 restarts:\n{}", err.join("\n"));
    assert!(
        err.iter().any(|l| l.contains("restarting in 250ms (1 of 3 allowed in 1m)")),
        "{}",
        err.join("\n")
    );
    assert!(
        err.iter().any(|l| l.contains("restarting in 1s (3 of 3 allowed in 1m)")),
        "{}",
        err.join("\n")
    );
    assert_eq!(
        err.last().unwrap(),
        "error: crashy exited (exit status 3) after 3 restarts within 1m: giving up"
    );
    let ids: std::collections::BTreeSet<_> =
        out.iter().filter_map(|l| l.strip_prefix("crashy | exe-id: ")).collect();
    assert_eq!(ids.len(), 1, "every run executed the same memfd inode: {out:?}");
    let exes: Vec<_> = out.iter().filter_map(|l| l.strip_prefix("crashy | exe: ")).collect();
    assert_eq!(exes, vec!["/memfd:probe (deleted)"; 4]);
}

#[test]
fn restart_policies() {
    let env = TestEnv::new();
    // "always" restarts a clean exit; "on-failure" does not.
    let manifest = r#"
[services.always]
payload = "probe"
args = ["--quiet", "--sleep", "20"]
restart = "always"
max_restarts = 2

[services.once]
payload = "probe"
args = ["--quiet"]
restart = "on-failure"
"#;
    let (status, _, err) = env.server(manifest, &[], &[]).finish(30);
    assert_eq!(status.code(), Some(1));
    assert!(err.iter().any(|l| {
        l.contains("once: exited (exit status 0); not restarted (restart = \"on-failure\")")
    }));
    assert_eq!(
        err.iter().filter(|l| l.contains("always: started")).count(),
        3,
        "{}",
        err.join("\n")
    );
    assert!(err.last().unwrap().contains("always exited (exit status 0) after 2 restarts"));

    // "no": the server stops and names the service.
    let manifest = "[services.quitter]\npayload = \"probe\"\nargs = [\"--quiet\", \"--exit\", \"4\"]\n[services.other]\npayload = \"probe\"\nargs = [\"--quiet\", \"--sleep\", \"60000\"]\n";
    let (status, _, err) = env.server(manifest, &[], &[]).finish(20);
    assert_eq!(status.code(), Some(1));
    assert_eq!(
        err.last().unwrap(),
        "error: quitter exited (exit status 4) and its restart policy is \"no\""
    );
    assert!(err.iter().any(|l| l.contains("other: stopped (killed by SIGTERM)")));
}

#[test]
fn manifest_errors_are_one_line_before_anything_starts() {
    let env = TestEnv::new();
    let cases = [
        ("[services.api]\npayload = \"probe\"\nport = 80\n", "service api: unknown key \"port\""),
        (
            "[services.api]\npayload = \"nope\"\n",
            "service api: payload \"nope\" is not in this build",
        ),
        (
            "[services.a]\npayload = \"probe\"\ndepends_on = [\"b\"]\n[services.b]\npayload = \"probe\"\ndepends_on = [\"a\"]\n",
            "services a -> b -> a form a dependency cycle",
        ),
        (
            "[services.api]\npayload = \"probe\"\nstop_timeout = \"soon\"\n",
            "stop_timeout \"soon\" is not a duration",
        ),
        (
            "[services.api]\npayload = \"probe\"\nready = { tcp = \"nowhere\" }\n",
            "ready.tcp \"nowhere\" is not a host:port",
        ),
    ];
    for (manifest, want) in cases {
        let (status, out, err) = env.server(manifest, &[], &[]).finish(10);
        assert_eq!(status.code(), Some(2), "{manifest}");
        assert_eq!(err.len(), 1, "{err:?}");
        assert!(err[0].starts_with("error: ") && err[0].contains(want), "{}\nwant {want}", err[0]);
        assert!(out.is_empty());
    }
    let o = env.stigmer().args(["server", "--config", "/nonexistent.toml"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("read the manifest \"/nonexistent.toml\""), "{}", stderr(&o));
}

#[test]
fn the_demo_system_runs_and_stops_cleanly() {
    let env = TestEnv::new();
    let o = env.stigmer().args(["list"]).output().unwrap();
    assert!(ok(&o).contains("stigmer-server"));
    // The embedded demo manifest, on its real port (7234): run it once.
    require!(std::net::TcpListener::bind("127.0.0.1:7234").is_ok(), "port 7234 is in use");
    let mut cmd = env.stigmer();
    cmd.arg("server");
    let server = Server::spawn(&mut cmd);
    // Run until each runner has done its work once.
    let wanted = [
        "stigmer-server  | listening on http://127.0.0.1:7234",
        "workflow-runner | finished workflows-",
        "activity-runner | running activities-",
        "stigmer-server  | handed out ",
    ];
    server.wait_stdout(30, |lines| wanted.iter().all(|w| lines.iter().any(|l| l.contains(w))));
    server.signal(Signal::SIGTERM);
    let (status, _, err) = server.finish(20);
    assert_eq!(status.code(), Some(0), "{}", err.join("\n"));
    assert!(err.iter().any(|l| l.contains("all services running")), "{}", err.join("\n"));
    assert!(status.signal().is_none());
    // stdout is read to the end: the last lines are written, no wait.
    assert!(!err.iter().any(|l| l.contains("not being read")), "{}", err.join("\n"));
}

#[test]
fn closed_stdout_and_stderr_do_not_orphan_the_services() {
    // `stigmer server 2>&1 | head`: the reader goes away, then a SIGINT
    // comes. stigmer must still stop everything, though it cannot say so.
    let env = TestEnv::new();
    let m = marker("closed");
    let config = env.dir.path().join("services.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[services.quiet]
payload = "probe"
args = ["--quiet", "--say", "{m}", "--sleep", "60000"]

[services.other]
payload = "probe"
args = ["--quiet", "--say", "{m}", "--sleep", "60000"]
"#
        ),
    )
    .unwrap();
    let mut child = ChildGuard(
        std::process::Command::new(stigmer_bin())
            .args(["server", "--config"])
            .arg(&config)
            .env("STIGMER_HOME", &env.home)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut lines = std::io::BufRead::lines(stderr);
    assert!(lines.any(|l| l.unwrap().contains("all services running")));
    drop(lines);
    drop(child.stdout.take());
    // Wait for both execs to be complete: the spawn returns before the new
    // command line is in place, so a look right away may find only one.
    wait_processes(&m, 2, 10);

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "stigmer did not exit after SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    assert_nothing_left(&m);
}
