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
        let pid = server.service_pid("api", 20);
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
        server.wait_stdout(20, |l| l.iter().any(|l| l.starts_with("tool") && l.contains("hello")));
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

/// A `#!` script is exec'd by descriptor too, and the kernel then names the
/// process after the interpreter it runs (`/bin/sh` → `dash` on Debian):
/// the one exception, documented in the README.
#[test]
fn a_script_is_named_by_its_interpreter_exec() {
    use stigmer::{Launch as _, Payload};
    let script = Payload::from_bytes("greet", &b"#!/bin/sh\ncat /proc/$$/comm\n"[..]);
    for backend in BACKENDS {
        let env = TestEnv::new();
        let launcher = stigmer::Launcher::new(backend.parse().unwrap(), Some(env.home.clone()));
        let prepared = launcher.prepare(&script).unwrap();
        let mut cmd = prepared.command();
        cmd.stdout(std::process::Stdio::piped());
        let out = prepared.spawn(&mut cmd).unwrap().wait_with_output().unwrap();
        let comm = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let sh = std::fs::canonicalize("/bin/sh").unwrap();
        let interpreter = sh.file_name().unwrap().to_str().unwrap();
        assert_eq!(comm, interpreter.chars().take(15).collect::<String>(), "{backend}");
    }
}
