//! The name a user sees in `ps -o comm`, `top` and `pgrep -x` for every way
//! a payload is started: `memfd:NAME` from memory (the kernel prefixes a
//! memfd's name, and cuts `comm` to 15 bytes), `NAME` from the cache.
#![cfg(target_os = "linux")]

mod common;

use common::*;
use nix::sys::signal::Signal;

/// What `comm` a payload called `name` gets from `backend`.
fn expected(backend: &str, name: &str) -> String {
    let full = if backend == "memfd" { format!("memfd:{name}") } else { name.to_owned() };
    full.chars().take(15).collect()
}

#[test]
fn stigmer_run_names_the_process_after_the_payload() {
    for backend in BACKENDS {
        let env = TestEnv::new();
        let o = env.run(Some(backend), "probe", &[]);
        assert_eq!(probe_field(&o, "comm"), expected(backend, "probe"), "{backend}");
    }
}

#[test]
fn services_are_named_after_their_payload_and_pgrep_finds_them() {
    require!(have("pgrep"), "needs pgrep");
    for backend in BACKENDS {
        let env = TestEnv::new();
        let manifest = "[services.api]\npayload = \"probe\"\nargs = [\"--quiet\", \"--sleep\", \"60000\"]\n\
                        [services.tool]\npayload = \"hello\"\nargs = [\"x\"]\nrestart = \"always\"\nmax_restarts = 1000\n";
        let server = env.server(manifest, &[], &["--backend", backend]);
        server.wait_stderr("api: started (pid ", 20);
        let line = server
            .stderr
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains("api: started (pid "))
            .cloned()
            .unwrap();
        let pid: u32 =
            line.split("(pid ").nth(1).unwrap().split(',').next().unwrap().parse().unwrap();
        // The name is set by the exec: wait for it rather than for a time.
        let want = expected(backend, "probe");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim_end() == want {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{backend}: comm is {comm:?}, not {want:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let o = std::process::Command::new("pgrep").args(["-x", &want]).output().unwrap();
        assert!(
            stdout(&o).lines().any(|l| l == pid.to_string()),
            "pgrep -x {want}: {}",
            stdout(&o)
        );
        server.signal(Signal::SIGTERM);
        let (_, out, err) = server.finish(20);
        // The #! script ran too (its interpreter names the process after
        // the script's descriptor; what matters is that it ran).
        assert!(
            out.iter().any(|l| l.starts_with("tool") && l.contains("hello")),
            "{backend}: {out:?}\n{err:?}"
        );
    }
}
