//! `stigmer server start | stop | status | restart | logs` against real
//! servers: the whole lifecycle on every backend, `start` twice, `stop`
//! with nothing running, a killed server's stale socket, a service that
//! fails while `start` waits, the foreground server answering too, and
//! other users refused on the socket at both of its places (a socket file,
//! an abstract socket) and in both directions (a client of another user,
//! a server of another user).
#![cfg(target_os = "linux")]

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};

use common::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sha2::Digest as _;

/// `stigmer ARGS`, bounded in time so that a hang fails the test.
fn stigmer(env: &TestEnv, args: &[&str]) -> Output {
    let mut cmd = Command::new("timeout");
    cmd.args(["-s", "KILL", "60"]).arg(stigmer_bin()).args(args);
    cmd.env("STIGMER_HOME", &env.home).env_remove("RUST_LOG").env_remove("STIGMER_BACKEND");
    cmd.output().unwrap()
}

/// The demo system (a server with an HTTP readiness check, a runner that
/// depends on it) on a free port.
fn demo(env: &TestEnv) -> String {
    let port = free_port();
    let manifest = format!(
        r#"
[services.api]
payload = "stigmer-server"
args = ["--port", "{port}"]
ready = {{ http = "http://127.0.0.1:{port}/healthz", timeout = "20s" }}
stop_timeout = "5s"

[services.runner]
payload = "workflow-runner"
depends_on = ["api"]
args = ["--server", "127.0.0.1:{port}", "--queue", "workflows", "--interval", "100"]
restart = "on-failure"
"#
    );
    let path = env.dir.path().join("services.toml");
    std::fs::write(&path, manifest).unwrap();
    path.display().to_string()
}

/// `server status --json`, parsed.
fn status_json(env: &TestEnv) -> serde_json::Value {
    let o = stigmer(env, &["server", "status", "--json"]);
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!("status --json: {e}\nstdout:\n{}\nstderr:\n{}", stdout(&o), stderr(&o))
    })
}

/// The pid of service `name` in a status.
fn pid_of(status: &serde_json::Value, name: &str) -> u64 {
    let services = status["services"].as_array().unwrap();
    let s = services.iter().find(|s| s["name"] == name).unwrap();
    s["pid"].as_u64().unwrap_or_else(|| panic!("{name} has no pid: {status:#}"))
}

/// Asserts that nothing started with this env's `STIGMER_HOME` runs.
#[track_caller]
fn assert_nothing_left(env: &TestEnv) {
    let left: Vec<_> =
        processes_of_home(&env.home).into_iter().filter(|p| *p != std::process::id()).collect();
    let what: Vec<_> = left.iter().flat_map(|p| processes_with(&p.to_string())).collect();
    assert!(left.is_empty(), "left running: {left:?} {what:#?}");
}

#[test]
fn start_status_logs_restart_stop_on_every_backend() {
    for backend in BACKENDS {
        let env = TestEnv::new();
        let config = demo(&env);
        let o = stigmer(&env, &["--backend", backend, "server", "start", "--config", &config]);
        let out = ok(&o);
        assert!(out.contains("Starting api... ✓"), "{out}");
        assert!(out.contains("Starting runner... ✓"), "{out}");
        assert!(out.contains("All services running"), "{out}");
        // `start` returned: what runs is detached from it, and from us.
        let status = status_json(&env);
        assert_eq!(status["running"], true);
        assert_eq!(status["all_ready"], true, "{status:#}");
        let server = status["pid"].as_u64().unwrap() as u32;
        for s in status["services"].as_array().unwrap() {
            assert_eq!(s["state"], "ready", "{s:#}");
            assert_eq!(s["backend"], *backend, "{s:#}");
            assert!(s["rss"].as_u64().unwrap() > 0, "{s:#}");
            assert_eq!(s["memfd"].is_u64(), *backend == "memfd", "{s:#}");
            assert!(state_of(s["pid"].as_u64().unwrap() as u32).is_some());
        }
        let api = &status["services"][0];
        assert_eq!(api["ready"]["check"], format!("http://127.0.0.1:{}/healthz", port(&config)));
        assert_eq!(api["ready"]["last"]["ok"], true, "{api:#}");
        // The table, and its exit status.
        let o = stigmer(&env, &["server", "status"]);
        let table = ok(&o);
        assert!(table.starts_with(&format!("stigmer server running: pid {server} ")), "{table}");
        assert!(
            table.lines().any(|l| l.starts_with("runner ") && l.contains(" ready ")),
            "{table}"
        );

        // Logs: each line with the time it was read, and its service.
        wait_until(
            20,
            || "the runner's first task in the logs".into(),
            || {
                stdout(&stigmer(&env, &["server", "logs", "runner"]))
                    .contains("finished workflows-")
            },
        );
        let o = stigmer(&env, &["server", "logs", "-n", "3", "runner"]);
        let lines: Vec<String> = ok(&o).lines().map(str::to_owned).collect();
        assert_eq!(lines.len(), 3, "{lines:?}");
        for line in &lines {
            let (at, rest) = line.split_once(' ').unwrap();
            assert!(humantime::parse_rfc3339(at).is_ok(), "{line}");
            assert!(rest.starts_with("runner | "), "{line}");
        }
        let o = stigmer(&env, &["server", "logs", "--json", "-n", "1000"]);
        let sources: Vec<String> = ok(&o)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .map(|v| v["source"].as_str().unwrap().to_owned())
            .collect();
        for source in ["api", "runner", "stigmer"] {
            assert!(sources.iter().any(|s| s == source), "{source} in {sources:?}");
        }

        // Restart one service: a new pid for it, the same for the other.
        let (api_pid, runner_pid) = (pid_of(&status, "api"), pid_of(&status, "runner"));
        let o = stigmer(&env, &["server", "restart", "runner"]);
        assert!(ok(&o).contains("Restarting runner... ✓"), "{}", stdout(&o));
        let after = status_json(&env);
        assert_eq!(pid_of(&after, "api"), api_pid);
        assert_ne!(pid_of(&after, "runner"), runner_pid);
        assert!(state_of(runner_pid as u32).is_none_or(|s| s == 'Z'), "the old runner is gone");
        let runner = after["services"].as_array().unwrap().iter().find(|s| s["name"] == "runner");
        assert_eq!(runner.unwrap()["restarts"], 1);
        let o = stigmer(&env, &["server", "logs", "stigmer"]);
        assert!(ok(&o).contains("runner: stopped (killed by SIGTERM); starting it again"));
        // A name that is not a service: refused, nothing restarted.
        let o = stigmer(&env, &["server", "restart", "nope"]);
        assert_eq!(o.status.code(), Some(1));
        assert!(
            stderr(&o).contains("no service \"nope\" in this server: its services are api, runner")
        );

        // Stop: when it returns, every process of the server is gone.
        let o = stigmer(&env, &["server", "stop"]);
        assert!(ok(&o).contains(&format!("Stopping stigmer server (pid {server})")));
        assert_nothing_left(&env);
        assert!(!env.home.join("run/control.sock").exists(), "the socket goes with the server");
        let o = stigmer(&env, &["server", "status"]);
        assert_eq!(o.status.code(), Some(3), "{}", stdout(&o));
        assert!(stdout(&o).contains("no stigmer server is running"));
        assert_eq!(status_json(&env), serde_json::json!({ "running": false }));
    }
}

/// The port of a manifest written by [`demo`].
fn port(config: &str) -> u16 {
    let text = std::fs::read_to_string(config).unwrap();
    let at = text.find("--port\", \"").unwrap() + 10;
    text[at..].split('"').next().unwrap().parse().unwrap()
}

#[test]
fn start_twice_starts_one_server_and_a_foreground_one_is_refused() {
    let env = TestEnv::new();
    let config = demo(&env);
    ok(&stigmer(&env, &["server", "start", "--config", &config]));
    let first = status_json(&env);
    let pid = first["pid"].as_u64().unwrap();
    let o = stigmer(&env, &["server", "start", "--config", &config]);
    assert_eq!(ok(&o).trim(), format!("stigmer server is already running (pid {pid})"));
    let again = status_json(&env);
    assert_eq!(again["pid"], first["pid"]);
    assert_eq!(pid_of(&again, "api"), pid_of(&first, "api"));
    // The foreground server is the same server: it will not run a second.
    let o = stigmer(&env, &["server", "--config", &config]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(&format!(
            "a stigmer server is already running for STIGMER_HOME={} (pid {pid})",
            env.home.display()
        )),
        "{}",
        stderr(&o)
    );
    ok(&stigmer(&env, &["server", "stop"]));
    assert_nothing_left(&env);
}

#[test]
fn with_nothing_running_stop_is_fine_and_the_rest_say_so() {
    let env = TestEnv::new();
    let o = stigmer(&env, &["server", "stop"]);
    assert!(ok(&o).contains("no stigmer server is running"), "{}", stdout(&o));
    let o = stigmer(&env, &["server", "status"]);
    assert_eq!(o.status.code(), Some(3));
    for args in [&["server", "logs"][..], &["server", "restart"]] {
        let o = stigmer(&env, args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let err = stderr(&o);
        assert!(err.starts_with("error: no stigmer server is running for STIGMER_HOME="), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    // None of them made anything.
    assert!(!env.home.exists());
}

#[test]
fn a_killed_servers_socket_is_replaced_never_trusted() {
    let env = TestEnv::new();
    let config = demo(&env);
    ok(&stigmer(&env, &["server", "start", "--config", &config]));
    let status = status_json(&env);
    let (guard, supervisor) = (status["pid"].as_u64().unwrap(), status["supervisor"].as_u64());
    // kill -9 of both halves, the supervisor first: it holds the socket,
    // and must get no chance to clean up (the guard's end would give it
    // one: it would stop the services and remove its socket itself).
    for pid in [supervisor, Some(guard)].into_iter().flatten() {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
    wait_until(
        20,
        || "the killed server's processes to go".into(),
        || processes_of_home(&env.home).is_empty(),
    );
    let socket = env.home.join("run/control.sock");
    assert!(socket.exists(), "a killed server leaves its socket file");
    // Nobody answers there: not running, at once.
    let o = stigmer(&env, &["server", "status"]);
    assert_eq!(o.status.code(), Some(3), "{}{}", stdout(&o), stderr(&o));
    let o = stigmer(&env, &["server", "stop"]);
    assert!(ok(&o).contains("no stigmer server is running"));
    // And a new server takes its place.
    ok(&stigmer(&env, &["server", "start", "--config", &config]));
    let new = status_json(&env);
    assert_ne!(new["pid"].as_u64(), Some(guard));
    ok(&stigmer(&env, &["server", "stop"]));
    assert_nothing_left(&env);

    // Another layout of the same: a socket file nobody listens on, put
    // there by hand, with a lock nobody holds.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    assert_eq!(stigmer(&env, &["server", "status"]).status.code(), Some(3));
    ok(&stigmer(&env, &["server", "start", "--config", &config]));
    assert_eq!(status_json(&env)["all_ready"], true);
    ok(&stigmer(&env, &["server", "stop"]));
    assert_nothing_left(&env);
}

#[test]
fn a_service_that_fails_makes_start_fail_with_its_last_lines() {
    let env = TestEnv::new();
    let port = free_port();
    let manifest = format!(
        r#"
[services.db]
payload = "probe"
args = ["--quiet", "--sleep", "600000"]

[services.api]
payload = "probe"
depends_on = ["db"]
args = ["--quiet", "--say", "api: config file /etc/api.toml is missing", "--exit", "3"]
ready = {{ tcp = "127.0.0.1:{port}", timeout = "20s" }}
"#
    );
    let config = env.dir.path().join("services.toml");
    std::fs::write(&config, manifest).unwrap();
    let o = stigmer(&env, &["server", "start", "--config", config.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stdout(&o).contains("Starting db... ✓"), "{}", stdout(&o));
    assert!(stdout(&o).contains("Starting api... ✗"), "{}", stdout(&o));
    let err = stderr(&o);
    assert!(err.contains("api | api: config file /etc/api.toml is missing"), "{err}");
    assert!(
        err.contains("error: api exited (exit status 3) and its restart policy is \"no\""),
        "{err}"
    );
    // It stopped what it started before `start` returned.
    assert_nothing_left(&env);
    assert_eq!(stigmer(&env, &["server", "status"]).status.code(), Some(3));
}

#[test]
fn the_foreground_server_answers_status_logs_and_stop() {
    for backend in BACKENDS {
        let env = TestEnv::new();
        let m = format!("fg-{backend}-{}", std::process::id());
        let manifest = format!(
            "[services.a]\npayload = \"probe\"\nargs = [\"--quiet\", \"--say\", \"{m}\", \"--sleep\", \"600000\"]\n"
        );
        let server = env.server(&manifest, &[], &["--backend", backend]);
        server.wait_stderr("all services running", 20);
        // A service with no ready check is running once spawned: wait for
        // its line, which the journal has before the server's stdout does.
        let said = format!("a | {m}");
        server.wait_stdout(20, |l| l.contains(&said));
        let status = status_json(&env);
        assert_eq!(status["pid"].as_u64(), Some(u64::from(server.child.id())));
        assert_eq!(status["all_ready"], true);
        let o = stigmer(&env, &["server", "logs", "a"]);
        assert!(ok(&o).contains(&format!("a | {m}")), "{}", stdout(&o));
        let o = stigmer(&env, &["server", "stop"]);
        ok(&o);
        let (status, _, err) = server.finish(20);
        assert_eq!(status.code(), Some(0), "{}", err.join("\n"));
        assert!(err.iter().any(|l| l.contains("stigmer server stop: stopping all services")));
        assert_nothing_left(&env);
    }
}

#[test]
fn logs_follow_gets_new_lines_and_ends_with_the_server() {
    let env = TestEnv::new();
    let config = demo(&env);
    ok(&stigmer(&env, &["server", "start", "--config", &config]));
    let mut follow = Command::new(stigmer_bin());
    follow.args(["server", "logs", "-f", "-n", "0", "runner"]).env("STIGMER_HOME", &env.home);
    let follower = Server::spawn(&mut follow);
    // Lines the runner writes from now on come through, as they come.
    follower
        .wait_stdout(20, |lines| lines.iter().any(|l| l.contains("runner | finished workflows-")));
    assert!(follower.stdout.lock().unwrap().iter().all(|l| l.contains(" runner | ")));
    ok(&stigmer(&env, &["server", "stop"]));
    let (status, _, err) = follower.finish(20);
    assert_eq!(status.code(), Some(0), "{}", err.join("\n"));
    assert_nothing_left(&env);
}

/// Kills whatever runs with `STIGMER_HOME=home` when dropped, as `TestEnv`
/// does for its own home.
struct HomeGuard(std::path::PathBuf);

impl Drop for HomeGuard {
    fn drop(&mut self) {
        for pid in processes_of_home(&self.0) {
            kill_tree(pid);
        }
    }
}

/// The name of the abstract socket of `home` for uid 0.
fn abstract_name(home: &Path) -> String {
    let digest = sha2::Sha256::digest(home.as_os_str().as_encoded_bytes());
    let hash: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("stigmer-{}-{hash}", nix::unistd::geteuid())
}

/// Runs python3 `code` as uid and gid 65534 (nobody), with `arg`.
fn as_nobody(code: &str, arg: &str) -> std::process::Child {
    Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .args(["/usr/bin/python3", "-c", code, arg])
        // Nothing of ours (a PATH of root's tools, say) for its sake.
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .current_dir("/")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// python3: connect to the unix socket argv[1] (`@name`: abstract), ask
/// for the status, print what comes back.
const ASK_STATUS: &str = r#"
import socket, sys
path = sys.argv[1]
path = "\0" + path[1:] if path.startswith("@") else path
s = socket.socket(socket.AF_UNIX)
s.connect(path)
s.sendall(b'{"op":"status"}\n')
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
sys.stdout.write(data.decode())
"#;

/// python3: bind the abstract socket argv[1] (`@name`) and answer every
/// connection with a made-up status, as a server would.
const SQUAT: &str = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind("\0" + sys.argv[1][1:])
s.listen(8)
print("bound", flush=True)
while True:
    c, _ = s.accept()
    try:
        c.sendall(b'{"status":{}}\n')
    except OSError:
        pass  # a client that hung up at once: it refused us
    c.close()
"#;

#[test]
fn another_user_is_refused_on_either_kind_of_socket() {
    let python = Path::new("/usr/bin/python3").exists();
    require!(is_root() && have("setpriv") && python, "needs root, setpriv and /usr/bin/python3");
    // 1. A socket file made reachable by others (a folder opened up by
    // mistake): the server itself refuses them.
    let env = TestEnv::new();
    let config = demo(&env);
    ok(&stigmer(&env, &["server", "start", "--config", &config]));
    let socket = env.home.join("run/control.sock");
    for (path, mode) in [
        (&env.dir.path().to_owned(), 0o755),
        (&env.home, 0o711),
        (&env.home.join("run"), 0o711),
        (&socket, 0o777),
    ] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let nobody = as_nobody(ASK_STATUS, socket.to_str().unwrap()).wait_with_output().unwrap();
    let said = stdout(&nobody);
    assert!(
        said.contains("permission denied: uid 65534 is not this server's user"),
        "{said}{}",
        stderr(&nobody)
    );
    assert!(!said.contains("\"services\""), "no status for another user: {said}");
    let o = stigmer(&env, &["server", "logs", "stigmer"]);
    assert!(ok(&o).contains("refused a control connection from uid 65534"), "{}", stdout(&o));
    for path in [&env.home, &env.home.join("run")] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    ok(&stigmer(&env, &["server", "stop"]));
    assert_nothing_left(&env);

    // 2. An abstract socket (its STIGMER_HOME sits in a folder others may
    // write to, so no socket file is trusted there): anyone in the network
    // namespace can connect, and is refused the same way.
    let env = TestEnv::new();
    let open = env.dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let home = open.join("home");
    let _guard = HomeGuard(home.clone());
    let config = demo(&env);
    let run = |args: &[&str]| {
        Command::new("timeout")
            .args(["-s", "KILL", "60"])
            .arg(stigmer_bin())
            .args(args)
            .env("STIGMER_HOME", &home)
            .env_remove("STIGMER_BACKEND")
            .output()
            .unwrap()
    };
    ok(&run(&["server", "start", "--config", &config]));
    let status: serde_json::Value =
        serde_json::from_slice(&run(&["server", "status", "--json"]).stdout).unwrap();
    let name = format!("@{}", abstract_name(&home));
    assert_eq!(status["socket"], name.as_str(), "{status:#}");
    assert!(!home.join("run").exists());
    let nobody = as_nobody(ASK_STATUS, &name).wait_with_output().unwrap();
    assert!(
        stdout(&nobody).contains("permission denied: uid 65534"),
        "{}{}",
        stdout(&nobody),
        stderr(&nobody)
    );
    ok(&run(&["server", "stop"]));
    wait_until(10, || "the server to go".into(), || processes_of_home(&home).is_empty());

    // 3. The other way round: another user binds the abstract name first,
    // posing as the server. A client refuses to talk to it, and a server
    // refuses to start rather than be unreachable.
    let mut impostor = ChildGuard(as_nobody(SQUAT, &name));
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(impostor.stdout.as_mut().unwrap()),
        &mut first,
    )
    .unwrap();
    assert_eq!(first.trim(), "bound");
    let o = run(&["server", "status"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains(&format!("the control socket {name} is held by uid 65534")), "{err}");
    assert!(err.contains("not by you (uid 0): refusing to use it"), "{err}");
    assert!(impostor.try_wait().unwrap().is_none(), "the impostor still holds the name");
    let o = run(&["server", "--config", &config]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("is held by uid 65534"), "{}", stderr(&o));
    assert!(processes_of_home(&home).is_empty(), "nothing started");
}

/// `stigmer ARGS` with `STIGMER_HOME=home`, bounded in time.
fn stigmer_at(home: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new("timeout");
    cmd.args(["-s", "KILL", "60"]).arg(stigmer_bin()).args(args);
    cmd.env("STIGMER_HOME", home).env_remove("RUST_LOG").env_remove("STIGMER_BACKEND");
    cmd.output().unwrap()
}

#[test]
fn a_completed_job_counts_as_done_for_status() {
    let env = TestEnv::new();
    let config = env.dir.path().join("job.toml");
    std::fs::write(
        &config,
        r#"
[services.migrate]
payload = "probe"
args = ["--quiet", "--say", "migrating", "--exit", "0"]

[services.api]
payload = "probe"
depends_on = { migrate = "completed_successfully" }
args = ["--quiet", "--say", "api up", "--sleep", "600000"]
"#,
    )
    .unwrap();
    ok(&stigmer(&env, &["server", "start", "--config", config.to_str().unwrap()]));
    let o = stigmer(&env, &["server", "status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(o.status.code(), Some(0), "{status:#}");
    assert_eq!(status["all_ready"], true, "{status:#}");
    let states: Vec<&str> = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["completed", "ready"]);
    ok(&stigmer(&env, &["server", "stop"]));
    assert_nothing_left(&env);
}

#[test]
fn a_home_too_long_for_a_socket_path_is_still_reached() {
    let env = TestEnv::new();
    // `HOME/run/control.sock` longer than a socket address takes (108).
    let home = env.dir.path().join("h".repeat(100)).join("home");
    let _guard = HomeGuard(home.clone());
    let config = demo(&env);
    ok(&stigmer_at(&home, &["server", "start", "--config", &config]));
    let o = stigmer_at(&home, &["server", "status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(status["socket"].as_str().unwrap().starts_with("@stigmer-"), "{status:#}");
    ok(&stigmer_at(&home, &["server", "stop"]));
    assert!(processes_of_home(&home).is_empty(), "the server is gone");
}

#[test]
fn a_socket_folder_gone_untrusted_is_an_error_and_no_second_server_starts() {
    let env = TestEnv::new();
    let config = demo(&env);
    ok(&stigmer(&env, &["server", "start", "--config", &config]));
    let run = env.home.join("run");
    for (dir, mode) in [(&run, 0o777), (&env.home, 0o770)] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).unwrap();
        let o = stigmer(&env, &["server", "status"]);
        assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
        assert!(stderr(&o).contains("writable by group or others"), "{}", stderr(&o));
        assert!(stderr(&o).contains(&format!("chmod go-w {}", dir.display())), "{}", stderr(&o));
        let o = stigmer(&env, &["server", "start", "--config", &config]);
        assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    // One server: its guard and its supervisor, nothing else of stigmer's.
    let servers: Vec<_> = processes_of_home(&env.home)
        .into_iter()
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == b"--wait-for-watch"))
        })
        .collect();
    assert_eq!(servers.len(), 2, "a guard and its supervisor: {servers:?}");
    ok(&stigmer(&env, &["server", "status"]));
    ok(&stigmer(&env, &["server", "stop"]));
    assert_nothing_left(&env);
}

/// python3, as another user: hold 100 connections to argv[1] open, open and
/// close 500 more, print "held", and keep holding them for 5 s.
const CROWD: &str = r#"
import socket, sys, time
path = sys.argv[1]
path = "\0" + path[1:] if path.startswith("@") else path
held = []
for _ in range(100):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    held.append(s)
for _ in range(500):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    s.close()
print("held", flush=True)
time.sleep(5)
"#;

#[test]
fn other_users_can_neither_take_the_connections_nor_flood_the_log() {
    require!(is_root() && have("setpriv"), "needs root and setpriv to act as another user");
    // An abstract socket: the one another user can reach.
    let env = TestEnv::new();
    let open = env.dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let home = open.join("home");
    let _guard = HomeGuard(home.clone());
    let config = demo(&env);
    ok(&stigmer_at(&home, &["server", "start", "--config", &config]));
    let name = format!("@{}", abstract_name(&home));
    let mut crowd = ChildGuard(as_nobody(CROWD, &name));
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(crowd.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line, "held\n", "the crowd connected");
    // With 100 of another user's connections open, this user's are answered.
    for _ in 0..3 {
        let o = stigmer_at(&home, &["server", "status"]);
        assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    }
    // And the 600 refusals are a warning or two, not 600 lines of the log.
    let logs = ok(&stigmer_at(&home, &["server", "logs", "-n", "2000", "stigmer"]));
    let warnings = logs.lines().filter(|l| l.contains("refused a control connection")).count();
    assert!((1..=3).contains(&warnings), "{warnings} warnings:\n{logs}");
    assert!(logs.contains("started (pid"), "the server's own lines are still there:\n{logs}");
    drop(crowd);
    ok(&stigmer_at(&home, &["server", "stop"]));
    assert!(processes_of_home(&home).is_empty());
}

#[test]
fn status_of_a_stopped_server_fails_in_time_instead_of_hanging() {
    let env = TestEnv::new();
    let config = demo(&env);
    ok(&stigmer(&env, &["server", "start", "--config", &config]));
    let supervisor = status_json(&env)["supervisor"].as_u64().unwrap() as i32;
    kill(Pid::from_raw(supervisor), Signal::SIGSTOP).unwrap();
    let started = std::time::Instant::now();
    let o = stigmer(&env, &["server", "status"]);
    let took = started.elapsed();
    kill(Pid::from_raw(supervisor), Signal::SIGCONT).unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stderr(&o).contains("did not answer within 10s"), "{}", stderr(&o));
    assert!(took < std::time::Duration::from_secs(30), "{took:?}");
    ok(&stigmer(&env, &["server", "stop"]));
    assert_nothing_left(&env);
}

#[test]
fn the_logs_of_a_server_that_is_gone_come_from_its_log_file() {
    let env = TestEnv::new();
    let config = demo(&env);
    ok(&stigmer(&env, &["server", "start", "--config", &config]));
    wait_until(
        20,
        || "a finished task in the logs".into(),
        || stdout(&stigmer(&env, &["server", "logs", "runner"])).contains("finished workflows-"),
    );
    ok(&stigmer(&env, &["server", "stop"]));
    assert_nothing_left(&env);
    let o = stigmer(&env, &["server", "logs", "-n", "1000"]);
    let out = ok(&o);
    assert!(stderr(&o).contains("its last lines, from"), "{}", stderr(&o));
    assert!(out.contains("runner | finished workflows-"), "{out}");
    // Its own last words too, with one timestamp each.
    let last = out.lines().last().unwrap();
    assert!(last.contains("stigmer | INFO all services stopped"), "{last}");
    let o = stigmer(&env, &["server", "logs", "-n", "2", "api"]);
    assert_eq!(ok(&o).lines().count(), 2);
    // Nothing to follow.
    let o = stigmer(&env, &["server", "logs", "-f"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no stigmer server is running"), "{}", stderr(&o));
    let mode = std::fs::metadata(env.home.join("run/server.log")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "private: services log secrets");
}

#[test]
fn a_restart_of_everything_reuses_the_sealed_memfds_in_dependency_order() {
    use std::os::unix::fs::MetadataExt as _;
    let env = TestEnv::new();
    let config = demo(&env);
    ok(&stigmer(&env, &["--backend", "memfd", "server", "start", "--config", &config]));
    let before = status_json(&env);
    let inode = |pid: u64| std::fs::metadata(format!("/proc/{pid}/exe")).unwrap().ino();
    let (api, runner) = (pid_of(&before, "api"), pid_of(&before, "runner"));
    let inodes = (inode(api), inode(runner));
    let o = stigmer(&env, &["server", "restart"]);
    let out = ok(&o);
    // Stopped dependents first, started dependencies first.
    let at = |text: &str| out.find(text).unwrap_or_else(|| panic!("no {text:?} in {out}"));
    assert!(at("Stopped runner") < at("Stopped api"), "{out}");
    assert!(at("Restarting api... ✓") < at("Restarting runner... ✓"), "{out}");
    let after = status_json(&env);
    let (api2, runner2) = (pid_of(&after, "api"), pid_of(&after, "runner"));
    assert!(api2 != api && runner2 != runner, "{after:#}");
    // The same sealed memfds: nothing was copied again.
    assert_eq!((inode(api2), inode(runner2)), inodes);
    ok(&stigmer(&env, &["server", "stop"]));
    assert_nothing_left(&env);
}
