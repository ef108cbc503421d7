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

/// A refusal: `(syscall, arg, mask, value)`, see [`refuse`].
type Refusal = (i64, u8, u64, u64);

/// A filter that refuses (`EPERM`) each `(syscall, arg, mask, value)`:
/// that system call when its argument `arg`, masked with `mask`, is
/// `value`; and allows everything else.
fn refuse(rules: &[Refusal]) -> BpfProgram {
    let rules = rules
        .iter()
        .map(|&(syscall, arg, mask, value)| {
            let when = SeccompCondition::new(
                arg,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(mask),
                value,
            )
            .unwrap();
            (syscall, vec![SeccompRule::new(vec![when]).unwrap()])
        })
        .collect();
    let arch = std::env::consts::ARCH.try_into().unwrap();
    SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Errno(libc::EPERM as u32), arch)
        .unwrap()
        .try_into()
        .unwrap()
}

/// `greet Ada` as `choice` runs it, spawned with `filter` installed in the
/// child first (as a program's own `pre_exec` steps are); the backend it
/// was prepared for, and its output and the backend it ran from, or the
/// spawn's error.
fn greet(
    choice: Choice,
    filter: Option<BpfProgram>,
) -> (Backend, Result<(Output, Backend), String>) {
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
        Ok(child) => {
            let ran_from = prepared.ran_from(child.id());
            Ok((child.wait_with_output().unwrap(), ran_from))
        }
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
    let (out, ran_from) = out.unwrap();
    assert!(said(&out).starts_with("hello, Ada (from greet, pid "));
    assert_eq!(ran_from, Backend::Mapped);
}

/// Three ways the child's loader is refused after the launcher found it
/// allowed: `PR_SET_MM` (what puts the payload's argv in
/// `/proc/PID/cmdline`), `mmap` with `MAP_GROWSDOWN` (how it maps the
/// payload's stack), and `rseq` (how it takes back glibc's registration in
/// stigmer's memory, which the kernel would otherwise write to once that
/// is unmapped: the payload would die of it); and the stack refused with
/// `execveat` too, where the memfd the child falls back to is exec'd
/// through `/proc/self/fd/N`. Each time `auto` runs the payload all the
/// same, and `--backend mapped` fails with the refusal.
#[test]
fn a_child_that_cannot_load_it_mapped_runs_it_from_a_memfd_under_auto() {
    let set_mm = libc::PR_SET_MM as u64;
    let growsdown = libc::MAP_GROWSDOWN as u64;
    let stack = (libc::SYS_mmap, 3, growsdown, growsdown);
    let refusals: [(&str, &[Refusal]); 4] = [
        ("prctl(PR_SET_MM)", &[(libc::SYS_prctl, 0, u64::MAX, set_mm)]),
        ("mmap(MAP_GROWSDOWN)", &[stack]),
        ("rseq", &[(libc::SYS_rseq, 0, 0, 0)]),
        ("mmap(MAP_GROWSDOWN) and execveat", &[stack, (libc::SYS_execveat, 0, 0, 0)]),
    ];
    for (what, rules) in refusals {
        if what == "rseq" && cfg!(target_env = "musl") {
            // musl registers no rseq area: there is nothing to take back,
            // and the payload runs mapped, refusal or not.
            let (_, out) = greet(Choice::Only(Backend::Mapped), Some(refuse(rules)));
            assert_eq!(out.map(|(_, ran_from)| ran_from), Ok(Backend::Mapped), "{what}");
            continue;
        }
        let (backend, out) = greet(Choice::Auto, Some(refuse(rules)));
        assert_eq!(backend, Backend::Mapped, "{what}");
        let (out, ran_from) = out.unwrap_or_else(|e| panic!("{what}: auto did not fall back: {e}"));
        assert!(said(&out).starts_with("hello, Ada (from greet, pid "), "{what}: {out:?}");
        assert_eq!(ran_from, Backend::Memfd, "{what}: what status would say");

        let (_, out) = greet(Choice::Only(Backend::Mapped), Some(refuse(rules)));
        let err = out.expect_err(what);
        // musl's mmap() reports an anonymous mapping's EPERM as ENOMEM.
        let musl_mmap = cfg!(target_env = "musl") && what.starts_with("mmap");
        let refused = if musl_mmap { "Out of memory" } else { "not permitted" };
        assert!(err.contains(refused), "{what}: {err}");
    }
}
