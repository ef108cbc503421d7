//! Hosts whose seccomp policy refuses exec from memory (container runtimes,
//! systemd's `MemoryDenyWriteExecute`-style profiles): stigmer runs its
//! payloads from the cache with one warning, and `stigmer doctor` says so.
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

#[test]
fn memfd_create_denied_runs_payloads_from_the_cache_with_one_warning() {
    let env = TestEnv::new();
    let o = under(deny(nix::libc::SYS_memfd_create), env.stigmer().args(["run", "probe"]));
    ok(&o);
    assert!(probe_field(&o, "exe").starts_with(env.home.to_str().unwrap()), "{}", stdout(&o));
    let warned = warnings(&o);
    assert_eq!(warned.len(), 1, "{}", stderr(&o));
    assert!(warned[0].contains("memfd_create") && warned[0].contains("refused"), "{warned:?}");

    // Forcing memfd gives the refusal, not a fallback.
    let o = under(
        deny(nix::libc::SYS_memfd_create),
        env.stigmer().args(["--backend", "memfd", "run", "probe"]),
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("Operation not permitted"), "{}", stderr(&o));

    // doctor sees the filter and the fallback.
    let o = under(deny(nix::libc::SYS_memfd_create), env.stigmer().args(["doctor", "--json"]));
    assert!(o.status.success(), "{}", stdout(&o));
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(report["seccomp"].as_str().unwrap().starts_with("2 (filter"), "{report}");
    assert_eq!(report["memfd"]["create"]["ok"], false, "{report}");
    assert_eq!(report["memfd"]["exec"]["ok"], false, "{report}");
    for p in report["payloads"].as_array().unwrap() {
        assert_eq!(p["backend"], "cache", "{p}");
    }
}

#[test]
fn execveat_denied_runs_payloads_from_the_cache_with_one_warning() {
    let env = TestEnv::new();
    // The memfd is made and sealed; only the exec from it is refused.
    let o = under(deny(nix::libc::SYS_execveat), env.stigmer().args(["run", "probe"]));
    ok(&o);
    assert!(probe_field(&o, "exe").starts_with(env.home.to_str().unwrap()), "{}", stdout(&o));
    let warned = warnings(&o);
    assert_eq!(warned.len(), 1, "{}", stderr(&o));
    assert!(warned[0].contains("refused") && warned[0].contains("not permitted"), "{warned:?}");

    let o = under(deny(nix::libc::SYS_execveat), env.stigmer().args(["doctor", "--json"]));
    assert!(o.status.success(), "{}", stdout(&o));
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(report["memfd"]["create"]["ok"], true, "{report}");
    let exec = &report["memfd"]["exec"];
    assert_eq!(exec["ok"], false, "{report}");
    assert!(exec["detail"].as_str().unwrap().contains("execveat"), "{report}");
    for p in report["payloads"].as_array().unwrap() {
        assert_eq!(p["backend"], "cache", "{p}");
        assert_eq!(p["ok"], true, "{p}");
    }
}

/// A profile that refuses `fcntl(F_GET_SEALS)` (the memfd crate checks a
/// new memfd with it) is a refusal like the others: a fallback, never a
/// panic, in `stigmer run` and in `stigmer doctor`.
#[test]
fn get_seals_denied_falls_back_instead_of_crashing() {
    use seccompiler::{SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompRule};
    let get_seals = SeccompCondition::new(
        1,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::Eq,
        nix::libc::F_GET_SEALS as u64,
    )
    .unwrap();
    let filter = || -> BpfProgram {
        let rule = SeccompRule::new(vec![get_seals.clone()]).unwrap();
        let rules = [(nix::libc::SYS_fcntl, vec![rule])].into_iter().collect();
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
    };
    let env = TestEnv::new();
    let o = under(filter(), env.stigmer().args(["run", "probe"]));
    ok(&o);
    assert!(probe_field(&o, "exe").starts_with(env.home.to_str().unwrap()), "{}", stdout(&o));
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    assert_eq!(warnings(&o).len(), 1, "{}", stderr(&o));

    let o = under(filter(), env.stigmer().args(["doctor", "--json"]));
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(report["memfd"]["exec"]["ok"], false, "{report}");
}
