//! The library as another program uses it, with a payload of its own
//! embedded in the test binary by `build.rs`: `auto` maps an ELF payload
//! from the program's own file, and a child that cannot load it mapped
//! (here: a seccomp filter the program installed in the child, which
//! refuses what the loader needs) runs it from a sealed memfd instead,
//! while a forced `mapped` fails with the refusal.
#![cfg(target_os = "linux")]

use std::os::unix::process::CommandExt as _;
use std::process::{Command, Output, Stdio};

use nix::libc;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};
use stigmer::launch::Launch as _;
use stigmer::{Backend, Bundle, Choice, Launcher};

static PAYLOADS: Bundle = stigmer::include_payloads!();

/// A filter that refuses (`EPERM`) `syscall` when its argument `arg`,
/// masked with `mask`, is `value`, and allows everything else.
fn refuse(syscall: i64, arg: u8, mask: u64, value: u64) -> BpfProgram {
    let when =
        SeccompCondition::new(arg, SeccompCmpArgLen::Qword, SeccompCmpOp::MaskedEq(mask), value)
            .unwrap();
    let rules = [(syscall, vec![SeccompRule::new(vec![when]).unwrap()])].into_iter().collect();
    let arch = std::env::consts::ARCH.try_into().unwrap();
    SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Errno(libc::EPERM as u32), arch)
        .unwrap()
        .try_into()
        .unwrap()
}

/// `greet Ada` as `choice` runs it, spawned with `filter` installed in the
/// child first (as a program's own `pre_exec` steps are); the backend it
/// was prepared for, and its output or the spawn's error.
fn greet(choice: Choice, filter: Option<BpfProgram>) -> (Backend, Result<Output, String>) {
    let home = tempfile::tempdir().unwrap();
    let catalog = PAYLOADS.catalog();
    let launcher = Launcher::new(choice, Some(home.path().to_owned()));
    let prepared = launcher.prepare(catalog.get("greet").unwrap()).unwrap();
    let mut cmd: Command = prepared.command();
    cmd.arg("Ada").stdout(Stdio::piped()).stderr(Stdio::piped());
    if let Some(filter) = filter {
        // SAFETY: the closure runs in the child between fork and exec; it
        // makes prctl(2) and seccomp(2) calls on a program built before
        // the fork, and allocates nothing.
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(move || seccompiler::apply_filter(&filter).map_err(std::io::Error::other));
        }
    }
    let out = match prepared.spawn(&mut cmd) {
        Ok(child) => Ok(child.wait_with_output().unwrap()),
        Err(e) => Err(e.to_string()),
    };
    (prepared.backend(), out)
}

fn said(out: &Output) -> String {
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn auto_maps_an_elf_payload_from_the_programs_own_file() {
    let (backend, out) = greet(Choice::Auto, None);
    assert_eq!(backend, Backend::Mapped);
    assert!(said(&out.unwrap()).starts_with("hello, Ada (from greet, pid "));
}

/// Three ways the child's loader is refused after the launcher found it
/// allowed: `PR_SET_MM` (what puts the payload's argv in
/// `/proc/PID/cmdline`), `mmap` with `MAP_GROWSDOWN` (how it maps the
/// payload's stack), and `rseq` (how it takes back glibc's registration in
/// stigmer's memory, which the kernel would otherwise write to once that
/// is unmapped: the payload would die of it). Each time `auto` runs the
/// payload all the same, and `--backend mapped` fails with the refusal.
#[test]
fn a_child_that_cannot_load_it_mapped_runs_it_from_a_memfd_under_auto() {
    let set_mm = libc::PR_SET_MM as u64;
    let growsdown = libc::MAP_GROWSDOWN as u64;
    // (what, system call, argument, mask, value)
    let refusals = [
        ("prctl(PR_SET_MM)", libc::SYS_prctl, 0, u64::MAX, set_mm),
        ("mmap(MAP_GROWSDOWN)", libc::SYS_mmap, 3, growsdown, growsdown),
        ("rseq", libc::SYS_rseq, 0, 0, 0),
    ];
    for (what, syscall, arg, mask, value) in refusals {
        let filter = || refuse(syscall, arg, mask, value);
        let (backend, out) = greet(Choice::Auto, Some(filter()));
        assert_eq!(backend, Backend::Mapped, "{what}");
        let out = out.unwrap_or_else(|e| panic!("{what}: auto did not fall back: {e}"));
        assert!(said(&out).starts_with("hello, Ada (from greet, pid "), "{what}: {out:?}");

        let (_, out) = greet(Choice::Only(Backend::Mapped), Some(filter()));
        let err = out.expect_err(what);
        assert!(err.contains("not permitted"), "{what}: {err}");
    }
}
