//! Assets through a real `stigmer server`: a service reads the demo asset
//! `demo.conf` by the path `${asset:demo.conf}` becomes, from a sealed
//! memfd that is not executable (open in that service only) or from a
//! read-only cache entry checked before each start; an unknown asset is a
//! manifest problem; and on a read-only root the asset comes from memory,
//! with nothing written. (The checks read `/proc`, so this file is
//! Linux-only.)
#![cfg(target_os = "linux")]

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;

use common::*;
use nix::sys::signal::Signal;

/// What the demo asset holds, as built into stigmer.
const DEMO_CONF: &str =
    include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/platform/demo/demo.conf"));

/// A reader of the demo asset, by argument and by variable, and another
/// service that names no asset; both wait to be stopped.
const MANIFEST: &str = r#"
[services.reader]
payload = "probe"
args = ["--cat", "${asset:demo.conf}", "--env", "CONF", "--sleep", "60000"]
env = { CONF = "${asset:demo.conf}" }
restart = "on-failure"

[services.other]
payload = "probe"
args = ["--say", "other is up", "--sleep", "60000"]
"#;

/// The lines `name` wrote, without their prefix.
fn lines_of(out: &[String], name: &str) -> Vec<String> {
    let prefix = format!("{name:<6} | ");
    out.iter().filter_map(|l| l.strip_prefix(&prefix)).map(str::to_owned).collect()
}

/// The value of `name`'s last `key: value` line.
fn field(out: &[String], name: &str, key: &str) -> String {
    let prefix = format!("{key}: ");
    lines_of(out, name)
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
        .unwrap_or_else(|| panic!("no {key:?} line of {name} in {out:#?}"))
}

/// The lines of the asset that `out`'s reader printed, in its last run.
fn cat(out: &[String]) -> Vec<String> {
    let lines = lines_of(out, "reader");
    let start = lines.iter().rposition(|l| l.starts_with("probe: ")).unwrap_or(0);
    lines[start..].iter().filter_map(|l| l.strip_prefix("cat: ")).map(str::to_owned).collect()
}

fn demo_lines() -> Vec<String> {
    DEMO_CONF.lines().map(str::to_owned).collect()
}

/// The path the reader was given, once both services reported.
fn wait_for_reader(server: &Server, runs: usize) -> String {
    server.wait_stdout(10, |l| {
        l.iter().filter(|l| l.starts_with("reader | cat-seals: ")).count() >= runs
            && l.iter().any(|l| l.starts_with("other  | other is up"))
    });
    let out = server.stdout.lock().unwrap().clone();
    let path = field(&out, "reader", "env").strip_prefix("CONF=").unwrap().to_owned();
    assert!(field(&out, "reader", "argv").contains(&format!("\"--cat\", \"{path}\"")), "{out:#?}");
    path
}

#[test]
fn a_service_reads_its_asset_from_a_sealed_memfd_open_in_it_alone() {
    let env = TestEnv::new();
    let server = env.server(MANIFEST, &[], &["--backend", "memfd"]);
    let path = wait_for_reader(&server, 1);
    let out = server.stdout.lock().unwrap().clone();
    assert_eq!(cat(&out), demo_lines());
    let fd = path.strip_prefix("/proc/self/fd/").unwrap_or_else(|| panic!("{path}"));
    // Open in the reader, and not in the service that does not name it.
    let fds =
        |name: &str| field(&out, name, "fds").split(',').map(str::to_owned).collect::<Vec<_>>();
    assert!(fds("reader").contains(&fd.to_owned()), "{:?}", fds("reader"));
    assert!(!fds("other").contains(&fd.to_owned()), "{:?}", fds("other"));
    // Sealed against writes, growing, shrinking and new seals.
    let seals = field(&out, "reader", "cat-seals");
    for seal in ["seal", "shrink", "grow", "write"] {
        assert!(seals.split([' ', ',']).any(|s| s == seal), "{seal} missing: {seals}");
    }
    // Not executable, not writable: its mode, seen from the reader's side.
    let pid = server.supervisor();
    let reader = children_of(pid)
        .into_iter()
        .map(|(pid, _)| pid)
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.contains("--cat"))
        })
        .expect("the reader runs");
    let memfd = PathBuf::from(format!("/proc/{reader}/fd/{fd}"));
    assert!(std::fs::read_link(&memfd).unwrap().to_string_lossy().starts_with("/memfd:demo.conf"));
    assert_eq!(std::fs::metadata(&memfd).unwrap().permissions().mode() & 0o7777, 0o444);
    // Restarted, the reader gets the same memfd at the same number.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(reader as i32), Signal::SIGKILL).unwrap();
    assert_eq!(wait_for_reader(&server, 2), path);
    assert_eq!(cat(&server.stdout.lock().unwrap()), demo_lines());
    server.signal(Signal::SIGTERM);
    let (status, _, err) = server.finish(20);
    assert!(status.success(), "{status}: {err:#?}");
    // The control socket's folder is all a server makes there.
    assert!(!env.home.join("bin").exists(), "nothing was written to the cache");
}

#[test]
fn from_the_cache_an_asset_is_a_read_only_entry_checked_before_each_start() {
    let env = TestEnv::new();
    let server = env.server(MANIFEST, &[], &["--backend", "cache"]);
    let path = PathBuf::from(wait_for_reader(&server, 1));
    assert!(path.starts_with(env.home.join("bin/v1")), "{path:?}");
    assert_eq!(path.file_name().unwrap(), "demo.conf");
    assert_eq!(cat(&server.stdout.lock().unwrap()), demo_lines());
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777, 0o400);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), DEMO_CONF);
    // Someone swaps the entry for bytes of the same size; the next start of
    // the reader (after it was killed) hashes it, finds it bad and refills
    // it before the reader runs.
    let evil = DEMO_CONF.replace("hello", "evil!");
    assert_eq!(evil.len(), DEMO_CONF.len());
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, evil).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
    let reader = server.stderr.lock().unwrap().iter().find_map(|l| {
        let rest = l.split("reader: started (pid ").nth(1)?;
        rest.split(',').next()?.parse::<i32>().ok()
    });
    let reader = reader.expect("the reader's pid on stderr");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(reader), Signal::SIGKILL).unwrap();
    assert_eq!(PathBuf::from(wait_for_reader(&server, 2)), path);
    assert_eq!(cat(&server.stdout.lock().unwrap()), demo_lines(), "never the swapped bytes");
    server.wait_stderr("demo.conf is corrupt (sha256 ", 5);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), DEMO_CONF);
    server.signal(Signal::SIGTERM);
    let (status, _, err) = server.finish(20);
    assert!(status.success(), "{status}: {err:#?}");
}

#[test]
fn an_unknown_asset_is_a_problem_that_lists_the_assets_carried() {
    let env = TestEnv::new();
    let manifest = "[services.reader]\npayload = \"probe\"\nargs = [\"--cat\", \"${asset:demo.cnf}\"]\n\
                    cwd = \"${asset:demo.conf}\"\n";
    let (status, out, err) = env.server(manifest, &[], &[]).finish(10);
    assert_eq!(status.code(), Some(2), "{err:#?}");
    assert!(out.is_empty(), "{out:#?}");
    let path = env.dir.path().join("services.toml");
    assert_eq!(
        err,
        [
            format!(
                "error: {path:?}: service reader: args[1] uses ${{asset:demo.cnf}}, but this build \
                 carries no such asset (it carries demo.conf): fix the name"
            ),
            format!(
                "error: {path:?}: service reader: cwd uses ${{asset:demo.conf}}, but an asset is a \
                 file, not a folder: give a folder, and the asset's path in args or env"
            ),
        ]
    );
}

#[test]
fn on_a_read_only_root_an_asset_comes_from_memory_and_nothing_is_written() {
    require!(have("bwrap"), "bubblewrap (bwrap) is not installed");
    let env = TestEnv::new();
    // Everything read-only: the root, /dev (no writable /dev/shm), no tmpfs.
    let wrapper = [
        "bwrap",
        "--ro-bind",
        "/",
        "/",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--remount-ro",
        "/dev",
        "--unshare-pid",
        "--die-with-parent",
        "--",
    ];
    let manifest =
        "[services.reader]\npayload = \"probe\"\nargs = [\"--cat\", \"${asset:demo.conf}\"]\n";
    let (status, out, err) = env.server(manifest, &wrapper, &[]).finish(20);
    require!(
        !err.first().is_some_and(|l| l.starts_with("bwrap:")),
        "bubblewrap cannot create a sandbox here: {err:?}"
    );
    // The reader ran once and exited, so the server stopped (restart "no").
    assert_eq!(status.code(), Some(1), "{err:#?}");
    assert!(err.iter().any(|l| l.contains("reader exited (exit status 0)")), "{err:#?}");
    assert_eq!(cat(&out), demo_lines(), "{out:#?}\n{err:#?}");
    assert!(field(&out, "reader", "argv").contains("/proc/self/fd/"), "{out:#?}");
    assert!(!err.iter().any(|l| l.contains("WARN")), "no fallback: {err:#?}");
    assert!(!env.home.exists(), "stigmer wrote its cache folder");
}
