//! Hosts whose seccomp policy refuses exec from memory (container runtimes,
//! systemd's `MemoryDenyWriteExecute`-style profiles): what `auto` runs from
//! a memfd runs from the cache with one warning, what it maps needs no memfd,
//! and `stigmer doctor` says so. Where the policy refuses the mapped
//! loader's `prctl(PR_SET_MM)`, ELF payloads run from memfds instead.
//!
//! Each test installs a real seccomp filter (with seccompiler) in the
//! stigmer child between fork and exec, answering `EPERM` to one system
//! call; the filter is inherited by everything stigmer runs.
#![cfg(target_os = "linux")]

mod common;

use std::os::unix::process::CommandExt as _;
use std::process::{Command, Output};

use common::*;
use seccompiler::{BpfProgram, SeccompAction, SeccompFilter};
use serde_json::Value;

/// A filter that allows everything but `syscall`, which fails with EPERM.
fn deny(syscall: nix::libc::c_long) -> BpfProgram {
    let rules = [(syscall, vec![])].into_iter().collect();
    let arch = std::env::consts::ARCH.try_into().expect("an architecture seccompiler knows");
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(nix::libc::EPERM as u32),
        arch,
    )
    .unwrap();
    filter.try_into().unwrap()
}

/// A filter that allows everything but `syscall` with its argument `arg`
/// (32 bits of it) equal to `value`, which fails with EPERM.
fn deny_when(syscall: nix::libc::c_long, arg: u8, value: u64) -> BpfProgram {
    use seccompiler::{SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompRule};
    let when = SeccompCondition::new(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value);
    let rule = SeccompRule::new(vec![when.unwrap()]).unwrap();
    let rules = [(syscall, vec![rule])].into_iter().collect();
    let arch = std::env::consts::ARCH.try_into().unwrap();
    SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(nix::libc::EPERM as u32),
        arch,
    )
    .unwrap()
    .try_into()
    .unwrap()
}

/// `cmd`, run under `filter`.
fn under(filter: BpfProgram, cmd: &mut Command) -> Output {
    // SAFETY: the closure runs in the child between fork and exec. It makes
    // two system calls (prctl(2) and seccomp(2)) on a program built before
    // the fork, and allocates nothing.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || seccompiler::apply_filter(&filter).map_err(std::io::Error::other));
    }
    cmd.env_remove("STIGMER_BACKEND").output().unwrap()
}

fn warnings(o: &Output) -> Vec<String> {
    stderr(o).lines().filter(|l| l.contains("WARN")).map(str::to_owned).collect()
}

/// Under `filter`, which refuses exec from memfds, `refusal` naming how: a
/// `#!` script (which `auto` runs from a memfd) runs from the cache with one
/// warning; an ELF payload runs mapped with no warning (in a build that
/// compresses payloads, from the cache too); doctor says the same. Its
/// report.
fn a_refused_memfd_sends_to_the_cache(filter: impl Fn() -> BpfProgram, refusal: &[&str]) -> Value {
    let env = TestEnv::new();
    let o = under(filter(), env.stigmer().args(["run", "hello", "x"]));
    assert_eq!(ok(&o), "hello from an embedded shell script (argv: x)\n");
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    let warned = warnings(&o);
    assert_eq!(warned.len(), 1, "{}", stderr(&o));
    assert!(refusal.iter().all(|r| warned[0].contains(r)), "{refusal:?}: {warned:?}");
    assert!(std::fs::read_dir(env.home.join("bin")).unwrap().count() > 0, "nothing cached");

    let o = under(filter(), env.stigmer().args(["run", "probe"]));
    ok(&o);
    if AUTO_ELF_BACKEND == "mapped" {
        assert_eq!(probe_field(&o, "exe"), auto_elf_exe("probe"));
        assert_eq!(warnings(&o), Vec::<String>::new(), "nothing needed a memfd");
    } else {
        assert!(probe_field(&o, "exe").starts_with(env.home.to_str().unwrap()), "{}", stdout(&o));
        assert_eq!(warnings(&o).len(), 1, "{}", stderr(&o));
    }

    let o = under(filter(), env.stigmer().args(["doctor", "--json"]));
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let report: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(report["memfd"]["exec"]["ok"], false, "{report}");
    for p in report["payloads"].as_array().unwrap() {
        let mapped = p["kind"] == "elf" && AUTO_ELF_BACKEND == "mapped";
        assert_eq!(p["backend"], if mapped { "mapped" } else { "cache" }, "{p}");
        assert_eq!(p["ok"], true, "{p}");
    }
    report
}

#[test]
fn memfd_create_denied_runs_from_the_cache_what_is_not_mapped_with_one_warning() {
    let deny = || deny(nix::libc::SYS_memfd_create);
    let report = a_refused_memfd_sends_to_the_cache(deny, &["memfd_create", "refused"]);
    assert!(report["seccomp"].as_str().unwrap().starts_with("2 (filter"), "{report}");
    assert_eq!(report["memfd"]["create"]["ok"], false, "{report}");

    // Forcing memfd gives the refusal, not a fallback.
    let env = TestEnv::new();
    let o = under(deny(), env.stigmer().args(["--backend", "memfd", "run", "probe"]));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("Operation not permitted"), "{}", stderr(&o));
}

#[test]
fn execveat_denied_runs_from_the_cache_what_is_not_mapped_with_one_warning() {
    // The memfd is made and sealed; only the exec from it is refused.
    let deny = || deny(nix::libc::SYS_execveat);
    let report = a_refused_memfd_sends_to_the_cache(deny, &["refused", "not permitted"]);
    assert_eq!(report["memfd"]["create"]["ok"], true, "{report}");
    let exec = &report["memfd"]["exec"];
    assert!(exec["detail"].as_str().unwrap().contains("execveat"), "{report}");
}

/// A profile that refuses `fcntl(F_GET_SEALS)` (the memfd crate checks a
/// new memfd with it) is a refusal like the others: a fallback, never a
/// panic, in `stigmer run` and in `stigmer doctor`.
#[test]
fn get_seals_denied_falls_back_instead_of_crashing() {
    let get_seals = nix::libc::F_GET_SEALS as u64;
    let filter = || deny_when(nix::libc::SYS_fcntl, 1, get_seals);
    a_refused_memfd_sends_to_the_cache(filter, &["refused"]);
}

/// A profile that refuses `prctl(PR_SET_MM)`, which the mapped loader needs:
/// `auto` runs ELF payloads from sealed memfds instead (`run`: after the
/// loader undid what it did; the server: asked once, before it starts any),
/// with no warning, and doctor and list say so; forcing `mapped` gives the
/// refusal.
#[test]
fn the_mapped_loader_refused_runs_elf_payloads_from_memfds() {
    require!(AUTO_ELF_BACKEND == "mapped", "auto maps no payload in this build");
    let filter = || deny_when(nix::libc::SYS_prctl, 0, nix::libc::PR_SET_MM as u64);
    let env = TestEnv::new();
    let o = under(filter(), env.stigmer().args(["run", "probe", "a b"]));
    ok(&o);
    assert_eq!(probe_field(&o, "exe"), "/memfd:probe (deleted)");
    assert_eq!(probe_field(&o, "argv"), r#"["probe", "a b"]"#);
    assert_eq!(warnings(&o), Vec::<String>::new(), "{}", stderr(&o));

    let o = under(filter(), env.stigmer().args(["--backend", "mapped", "run", "probe"]));
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("Operation not permitted") && err.lines().count() == 1, "{err}");

    let o = under(filter(), env.stigmer().args(["doctor", "--json"]));
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let report: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(report["mapped"]["ok"], false, "{report}");
    for p in report["payloads"].as_array().unwrap() {
        assert_eq!(p["backend"], "memfd", "{p}");
        assert_eq!(p["ok"], true, "{p}");
    }
    // And list, which asks the kernel too.
    let o = under(filter(), env.stigmer().args(["list", "--json"]));
    let rows: Value = serde_json::from_str(&ok(&o)).unwrap();
    for p in rows.as_array().unwrap().iter().filter(|p| p["kind"] != "asset") {
        assert_eq!(p["backend"], "memfd", "{p}");
    }

    // The server asks once, and starts its services from memfds.
    let config = env.dir.path().join("services.toml");
    let manifest =
        "[services.api]\npayload = \"probe\"\nargs = [\"--quiet\", \"--sleep\", \"60000\"]\n";
    std::fs::write(&config, manifest).unwrap();
    let mut cmd = env.stigmer();
    cmd.args(["server", "--config"]).arg(&config).env_remove("STIGMER_BACKEND");
    let filter = filter();
    // SAFETY: as in `under`.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || seccompiler::apply_filter(&filter).map_err(std::io::Error::other));
    }
    let server = Server::spawn(&mut cmd);
    let pid = server.service_pid("api", 20);
    let exe = || std::fs::read_link(format!("/proc/{pid}/exe"));
    wait_until(
        10,
        || format!("api (pid {pid}) runs from {:?}", exe()),
        || exe().is_ok_and(|exe| exe.as_os_str() == "/memfd:probe (deleted)"),
    );
    server.signal(nix::sys::signal::Signal::SIGTERM);
    let (status, _, err) = server.finish(20);
    assert!(status.success(), "{err:?}");
    assert!(!err.iter().any(|l| l.contains("WARN")), "{err:?}");
}
