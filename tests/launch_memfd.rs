//! The memfd backend on the real kernel: seals, no descriptor leaks, no
//! file system writes, one memfd per payload, and the fallback to the cache
//! where `vm.memfd_noexec` forbids exec from memory.
#![cfg(target_os = "linux")]

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::process::{Command, Stdio};

use common::*;
use stigmer::launch::MemfdLauncher;
use stigmer::{Launch as _, Payload};

#[test]
fn payload_sees_all_seals_and_cannot_write_itself() {
    let env = TestEnv::new();
    let o = env.run(Some("memfd"), "probe", &[]);
    ok(&o);
    let seals = probe_field(&o, "seals");
    for seal in ["seal", "shrink", "grow", "write", "exec"] {
        assert!(seals.split([' ', ',']).any(|s| s == seal), "{seal} missing from {seals}");
    }
    assert!(probe_field(&o, "write-self").starts_with("denied"), "{}", stdout(&o));
    assert_eq!(probe_field(&o, "exe"), "/memfd:probe (deleted)");
    assert!(!env.home.exists(), "the memfd backend wrote to STIGMER_HOME");
}

#[test]
fn the_memfd_holds_exactly_the_payload() {
    // With the compress feature this checks what decompression wrote.
    let env = TestEnv::new();
    let list = ok(&env.stigmer().args(["list", "--json"]).output().unwrap());
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    let probe = list.as_array().unwrap().iter().find(|p| p["name"] == "probe").unwrap();
    let mut child = env
        .stigmer()
        .args(["--backend", "memfd", "run", "probe", "--quiet", "--sleep", "5000"])
        .spawn()
        .unwrap();
    let exe = format!("/proc/{}/exe", child.id());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !fs::read_link(&exe).is_ok_and(|l| l.to_string_lossy().starts_with("/memfd:")) {
        assert!(std::time::Instant::now() < deadline, "probe never ran");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let bytes = fs::read(&exe).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(bytes.len() as u64, probe["size"].as_u64().unwrap());
    assert_eq!(stigmer::Digest::of(&bytes).to_string(), probe["sha256"].as_str().unwrap());
}

#[test]
fn payload_inherits_no_descriptor() {
    let env = TestEnv::new();
    let o = env
        .stigmer()
        .args(["--backend", "memfd", "run", "probe"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(probe_field(&o, "fds"), inheritable_fds(), "only what the test itself passes down");
}

/// The descriptors any child of this test inherits: 0, 1, 2 and whatever
/// the test's own parent left open without close-on-exec.
fn inheritable_fds() -> String {
    const O_CLOEXEC: u32 = 0o2000000;
    let mut fds: Vec<u32> = vec![0, 1, 2];
    for entry in fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(info) = fs::read_to_string(format!("/proc/self/fdinfo/{fd}")) else { continue };
        let flags = info.lines().find_map(|l| l.strip_prefix("flags:")).unwrap_or("0");
        let flags = u32::from_str_radix(flags.trim(), 8).unwrap();
        if fd > 2 && flags & O_CLOEXEC == 0 {
            fds.push(fd);
        }
    }
    fds.sort();
    fds.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

#[test]
fn memfd_is_filled_with_sendfile_from_the_executable() {
    let env = TestEnv::new();
    let o = env
        .stigmer()
        .args(["-vv", "--backend", "memfd", "run", "probe", "--quiet"])
        .output()
        .unwrap();
    ok(&o);
    let want = if cfg!(feature = "compress") {
        "decompressed into the memfd"
    } else {
        "filled the memfd with sendfile()"
    };
    assert!(stderr(&o).contains(want), "{}", stderr(&o));
}

#[test]
fn read_only_root_runs_from_memory_and_writes_nothing() {
    require!(have("bwrap"), "bubblewrap (bwrap) is not installed");
    let env = TestEnv::new();
    let probe = bwrap(&env).args(["run", "probe"]).output().unwrap();
    let script = bwrap(&env).args(["run", "hello", "ro"]).output().unwrap();
    // bwrap itself can be refused (no user namespaces): that is a skip, not a pass.
    require!(
        !stderr(&probe).starts_with("bwrap:"),
        "bubblewrap cannot create a sandbox here: {}",
        stderr(&probe)
    );
    ok(&probe);
    assert_eq!(probe_field(&probe, "exe"), auto_elf_exe("probe"));
    assert_eq!(ok(&script), "hello from an embedded shell script (argv: ro)\n");
    let memfd = bwrap(&env).args(["--backend", "memfd", "run", "probe"]).output().unwrap();
    assert_eq!(probe_field(&memfd, "exe"), "/memfd:probe (deleted)", "{}", stderr(&memfd));
    assert!(!env.home.exists(), "stigmer wrote its cache folder");

    // The cache, by contrast, has nowhere to go, and says so in one line.
    let o = bwrap(&env).args(["--backend", "cache", "run", "probe"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("Read-only file system") && err.contains("STIGMER_HOME"), "{err}");
}

/// `stigmer` under bubblewrap with everything read-only: the root, `/dev`
/// (so no writable `/dev/shm`), and no tmpfs anywhere.
fn bwrap(env: &TestEnv) -> Command {
    let mut cmd = Command::new("bwrap");
    cmd.args(["--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "--remount-ro", "/dev"])
        .args(["--unshare-pid", "--die-with-parent", "--"])
        .arg(stigmer_bin())
        .env("STIGMER_HOME", &env.home)
        .env_remove("STIGMER_BACKEND");
    cmd
}

/// Runs `stigmer ARGS` in a new pid namespace whose `vm.memfd_noexec` is
/// `value`. The sysctl is per pid namespace: the host's is untouched.
#[test]
fn memfd_noexec_1_still_runs_from_memory() {
    require!(can_set_memfd_noexec(), "needs root, unshare and vm.memfd_noexec (Linux 6.3+) at 0");
    let env = TestEnv::new();
    let o = with_memfd_noexec(&env, 1, &["--backend", "memfd", "run", "probe"]);
    ok(&o);
    assert_eq!(probe_field(&o, "exe"), "/memfd:probe (deleted)", "MFD_EXEC keeps it executable");
    assert_eq!(stderr(&o), "", "no warning at level 1");
    let o = with_memfd_noexec(&env, 1, &["run", "probe"]);
    assert_eq!(probe_field(&o, "exe"), auto_elf_exe("probe"));
    assert_eq!(stderr(&o), "", "no warning at level 1");
    let o = with_memfd_noexec(&env, 1, &["run", "hello"]);
    assert!(ok(&o).starts_with("hello from an embedded shell script"));
}

/// Where the kernel refuses executable memfds, what `auto` would run from
/// one (a `#!` script; an ELF payload in a build that compresses them) goes
/// to the cache with one warning. An ELF payload `auto` maps needs no memfd
/// and runs as anywhere else.
#[test]
fn memfd_noexec_2_falls_back_to_the_cache_with_one_warning() {
    require!(can_set_memfd_noexec(), "needs root, unshare and vm.memfd_noexec (Linux 6.3+) at 0");
    let env = TestEnv::new();
    let o = with_memfd_noexec(&env, 2, &["run", "hello", "x"]);
    assert_eq!(ok(&o), "hello from an embedded shell script (argv: x)\n");
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "exactly one warning: {err}");
    assert!(
        err.contains("WARN") && err.contains("refused") && err.contains("memfd_create"),
        "{err}"
    );
    assert!(fs::read_dir(env.home.join("bin")).unwrap().count() > 0, "nothing in the cache");
    let o = with_memfd_noexec(&env, 2, &["run", "probe"]);
    ok(&o);
    if AUTO_ELF_BACKEND == "mapped" {
        assert_eq!(probe_field(&o, "exe"), auto_elf_exe("probe"));
        assert_eq!(stderr(&o), "", "no warning: nothing needed a memfd");
    } else {
        assert!(probe_field(&o, "exe").starts_with(env.home.to_str().unwrap()), "{}", stdout(&o));
    }

    // Forcing memfd gives the kernel's refusal instead of a fallback.
    let o = with_memfd_noexec(&env, 2, &["--backend", "memfd", "run", "probe"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("Permission denied"), "{}", stderr(&o));

    // With no usable cache either, one error names both causes and the fix.
    fs::remove_dir_all(&env.home).unwrap();
    fs::write(&env.home, "").unwrap();
    let o = with_memfd_noexec(&env, 2, &["run", "hello"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("refuses exec from memory") && err.contains("not a folder"), "{err}");
    assert!(err.contains("mount a volume"), "{err}");
}

fn system_payload(name: &str, path: &str) -> Payload {
    Payload::from_bytes(name.to_owned(), fs::read(path).unwrap())
}

fn exe_inode(pid: u32) -> u64 {
    fs::metadata(format!("/proc/{pid}/exe")).unwrap().ino()
}

/// The command line of a just-spawned child. A memfd payload is spawned
/// with `posix_spawn`, which returns once the child's exec has replaced its
/// memory but maybe before the kernel has copied the arguments in: until
/// then, the command line reads empty.
fn cmdline(pid: u32) -> String {
    for _ in 0..500 {
        let line = fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
        if !line.is_empty() {
            return line;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("process {pid} still has no command line after 5 s");
}

#[test]
fn spawns_share_one_sealed_memfd_and_leak_none() {
    let launcher = MemfdLauncher::new();
    let sleep = system_payload("sleep", "/bin/sleep");
    let mut a = launcher.prepare(&sleep).unwrap().command().arg("30").spawn().unwrap();
    let mut b = launcher.prepare(&sleep).unwrap().command().arg("30").spawn().unwrap();
    let link = fs::read_link(format!("/proc/{}/exe", a.id())).unwrap();
    assert_eq!(link.to_str().unwrap(), "/memfd:sleep (deleted)");
    assert_eq!(exe_inode(a.id()), exe_inode(b.id()), "both spawns run the same memfd");
    assert_eq!(cmdline(a.id()), "sleep\x0030\x00");
    for fd in fs::read_dir(format!("/proc/{}/fd", a.id())).unwrap().flatten() {
        let target = fs::read_link(fd.path()).unwrap();
        assert!(!target.to_string_lossy().contains("memfd:"), "leaked {target:?}");
    }
    a.kill().unwrap();
    b.kill().unwrap();
    a.wait().unwrap();
    b.wait().unwrap();
}

#[test]
fn spawned_script_gets_its_descriptor_and_others_do_not() {
    let launcher = MemfdLauncher::new();
    let script =
        Payload::from_bytes("s", &b"#!/bin/sh\necho \"script ok $1\"\nls /proc/$$/fd\n"[..]);
    let prepared = launcher.prepare(&script).unwrap();
    let out = prepared.command().arg("x").stdin(Stdio::null()).output().unwrap();
    let text = ok(&out);
    assert!(text.starts_with("script ok x\n"), "{text}");
    // An ELF spawned after it does not see the script's memfd.
    let sh = system_payload("sh", "/bin/sh");
    let o = launcher
        .prepare(&sh)
        .unwrap()
        .command()
        .args(["-c", "for f in /proc/$$/fd/*; do readlink $f; done; true"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!ok(&o).contains("memfd:"), "{}", stdout(&o));
}
