//! The container recipe's conditions, under bubblewrap: `deploy/pod.yaml`
//! (and the `Dockerfile`) run stigmer as a non-root user with a read-only
//! root, no capabilities, and `STIGMER_HOME` on an emptyDir. Docker cannot
//! run on the project's machines, so this test reads those settings from the
//! pod spec itself and recreates them: a change to one shows in the other.
#![cfg(target_os = "linux")]

mod common;

use std::fs;

use common::*;

/// The value after `key:` on the first line of `text` that has it.
fn setting<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("deploy/pod.yaml has no {key}"))
        .trim()
}

#[test]
fn the_pods_locked_down_conditions_run_the_services_from_memory() {
    require!(is_root() && have("bwrap"), "needs root and bubblewrap to recreate the pod");
    let pod = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/pod.yaml")).unwrap();
    let uid = setting(&pod, "runAsUser");
    assert_eq!(setting(&pod, "runAsGroup"), uid);
    assert_eq!(setting(&pod, "runAsNonRoot"), "true");
    assert_eq!(setting(&pod, "readOnlyRootFilesystem"), "true");
    assert_eq!(setting(&pod, "allowPrivilegeEscalation"), "false");
    assert_eq!(setting(&pod, "drop"), r#"["ALL"]"#);
    let home = setting(&pod, "value");
    assert_eq!(setting(&pod, "mountPath"), home, "STIGMER_HOME is the emptyDir");
    let dockerfile =
        fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile")).unwrap();
    assert!(dockerfile.contains(&format!("USER {uid}:{uid}")), "the image runs as the pod's user");
    assert!(dockerfile.contains(&format!("ENV STIGMER_HOME={home}")));

    // The pod, recreated: the host's root read-only, a new user namespace
    // where stigmer is uid `uid` with no capabilities, and an empty tmpfs
    // (the emptyDir) at STIGMER_HOME, created inside a read-only tmpfs so
    // that nothing of the host's is touched.
    let parent = std::path::Path::new(home).parent().unwrap().to_str().unwrap().to_owned();
    let wrapper = [
        "bwrap",
        "--unshare-user",
        "--uid",
        uid,
        "--gid",
        uid,
        "--ro-bind",
        "/",
        "/",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--tmpfs",
        &parent,
        "--dir",
        home,
        "--remount-ro",
        &parent,
        "--tmpfs",
        home,
        "--setenv",
        "STIGMER_HOME",
        home,
        "--cap-drop",
        "ALL",
        "--unshare-pid",
        "--die-with-parent",
        "--",
    ];
    let env = TestEnv::new();
    let port = free_port();
    let manifest = format!(
        r#"
[services.stigmer-server]
args = ["--port", "{port}"]
ready = {{ http = "http://127.0.0.1:{port}/healthz", timeout = "20s" }}

[services.workflow-runner]
depends_on = ["stigmer-server"]
args = ["--server", "http://127.0.0.1:{port}"]
"#
    );
    let server = env.server(&manifest, &wrapper, &[]);
    server.wait_stderr("all services running", 30);
    assert!(
        !server.stderr.lock().unwrap().iter().any(|l| l.contains("WARN")),
        "no fallback, no warning: {:?}",
        server.stderr.lock().unwrap()
    );

    // The services answer, and run mapped from stigmer's own file (or from
    // sealed memfds, in a build that stores payloads compressed): the cache
    // on the emptyDir is never needed.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(), "nothing on {port}");
    // "All services running" comes once each is spawned; wait for both to
    // have exec'd.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let services = processes_with(&format!("http://127.0.0.1:{port}"))
            .into_iter()
            .chain(processes_with(&format!("--port {port}")))
            .collect::<Vec<_>>();
        let not_cached = services
            .iter()
            .filter_map(|(pid, _)| fs::read_link(format!("/proc/{pid}/exe")).ok())
            .filter(|exe| match AUTO_ELF_BACKEND {
                "mapped" => exe == stigmer_bin(),
                _ => exe.to_string_lossy().starts_with("/memfd:"),
            })
            .count();
        if not_cached == 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "both services {AUTO_ELF_BACKEND}: {services:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    // SIGTERM reaches stigmer (as the container runtime sends it to the
    // container's first process; here bwrap is in between), and everything
    // stops cleanly.
    let config = env.dir.path().join("services.toml");
    let stigmer = processes_with(&format!("server --config {}", config.display()))
        .into_iter()
        .map(|(pid, _)| pid)
        .filter(|&pid| pid != server.child.id())
        .filter(|&pid| fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|e| e == stigmer_bin()))
        .collect::<Vec<_>>();
    // The guard and the supervisor (its child); the signal goes to the guard.
    let stigmer: Vec<u32> = stigmer
        .iter()
        .copied()
        .filter(|pid| parent_of(*pid).is_none_or(|parent| !stigmer.contains(&parent)))
        .collect();
    assert_eq!(stigmer.len(), 1, "{stigmer:?}");
    // `kubectl exec POD -- stigmer server status`: another process of the
    // pod's user, in the pod's namespaces (its read-only root, its
    // emptyDir), reaches the server through its control socket.
    let exec = |args: &[&str]| {
        std::process::Command::new("timeout")
            .args(["-s", "KILL", "60", "nsenter", "--target", &stigmer[0].to_string()])
            .args(["--user", "--mount", "--setuid", uid, "--setgid", uid, "--"])
            .arg(stigmer_bin())
            .args(args)
            .env("STIGMER_HOME", home)
            .output()
            .unwrap()
    };
    let o = exec(&["server", "status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", stdout(&o), stderr(&o)));
    assert_eq!(status["all_ready"], true, "{status:#}");
    // The journal has a line before the server's stdout does.
    let listening = format!("| listening on http://127.0.0.1:{port}");
    server.wait_stdout(30, |l| {
        l.iter().any(|l| l.starts_with("stigmer-server ") && l.contains(&listening))
    });
    let o = exec(&["server", "logs", "stigmer-server"]);
    assert!(ok(&o).contains(&format!("stigmer-server | listening on http://127.0.0.1:{port}")));

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(stigmer[0] as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let (status, _, stderr) = server.finish(30);
    assert!(status.success(), "{status}: {stderr:?}");
}

#[test]
fn with_nothing_writable_the_server_is_reached_through_an_abstract_socket() {
    require!(is_root() && have("bwrap"), "needs root and bubblewrap for a read-only root");
    // A read-only root and no volume at all: STIGMER_HOME cannot be made.
    let sandbox = |home: &str| -> Vec<String> {
        let args = ["bwrap", "--unshare-user", "--uid", "65532", "--gid", "65532"];
        let rest = ["--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev"];
        let mut v: Vec<String> = args.iter().chain(&rest).map(|s| s.to_string()).collect();
        v.extend(
            ["--setenv", "STIGMER_HOME", home, "--cap-drop", "ALL", "--die-with-parent", "--"]
                .map(String::from),
        );
        v
    };
    let env = TestEnv::new();
    let home = "/nonexistent/stigmer";
    let wrapper = sandbox(home);
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let m = format!("ro-{}", std::process::id());
    let manifest = format!(
        "[services.a]\npayload = \"probe\"\nargs = [\"--quiet\", \"--say\", \"{m}\", \"--sleep\", \"600000\"]\n"
    );
    let server = env.server(&manifest, &wrapper, &[]);
    server.wait_stderr("all services running", 30);
    // Its line is in the journal before it is on the server's stdout.
    let said = format!("a | {m}");
    server.wait_stdout(30, |l| l.contains(&said));
    // Another process under the same read-only root (bubblewrap keeps the
    // network namespace, where abstract sockets live).
    let exec = |args: &[&str]| {
        std::process::Command::new("timeout")
            .args(["-s", "KILL", "60"])
            .args(&wrapper)
            .arg(stigmer_bin())
            .args(args)
            .output()
            .unwrap()
    };
    let o = exec(&["server", "status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", stdout(&o), stderr(&o)));
    assert_eq!(status["all_ready"], true, "{status:#}");
    assert!(status["socket"].as_str().unwrap().starts_with("@stigmer-65532-"), "{status:#}");
    let o = exec(&["server", "logs", "a"]);
    assert!(ok(&o).contains(&format!("a | {m}")), "{}", stdout(&o));
    ok(&exec(&["server", "stop"]));
    let (status, _, err) = server.finish(30);
    assert!(status.success(), "{status}: {err:?}");
    assert!(err.iter().any(|l| l.contains("stigmer server stop: stopping all services")));
    assert!(processes_with(&m).iter().all(|p| state_of(p.0).is_none_or(|s| s == 'Z')));
}
