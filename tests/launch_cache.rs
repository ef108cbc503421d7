//! The cache backend, forced on Linux as it is the default on macOS:
//! concurrent fills, verification before every launch, refusal of folders
//! that others could write, and `stigmer cache prune|verify`.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use common::*;
use stigmer::Digest;

fn probe_entry(env: &TestEnv) -> std::path::PathBuf {
    let entries = env.entries();
    entries.into_iter().find(|p| p.ends_with("probe")).expect("a cache entry for probe")
}

fn sha256_of(path: &Path) -> Digest {
    Digest::of(&fs::read(path).unwrap())
}

/// Overwrites the entry in place (as an attacker or a disk might), keeping
/// its mode.
fn tamper(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = fs::read(path).unwrap();
    f(&mut bytes);
    fs::set_permissions(path, fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(path, &bytes).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o500)).unwrap();
}

#[test]
fn entry_is_content_addressed_private_and_read_only() {
    let env = TestEnv::new();
    ok(&env.run(Some("cache"), "probe", &["--quiet"]));
    let entry = probe_entry(&env);
    let sha = entry.parent().unwrap().file_name().unwrap().to_str().unwrap().to_owned();
    assert_eq!(sha256_of(&entry).to_string(), sha, "the folder is named by the content's sha256");
    assert_eq!(entry.parent().unwrap().parent().unwrap(), env.home.join("bin/v1"));
    assert_eq!(fs::metadata(&entry).unwrap().permissions().mode() & 0o7777, 0o500);
    for dir in [&env.home, &env.home.join("bin"), &env.home.join("bin/v1")] {
        assert_eq!(fs::metadata(dir).unwrap().permissions().mode() & 0o777, 0o700, "{dir:?}");
    }
}

#[test]
fn thirty_concurrent_first_runs_all_succeed_and_leave_one_entry() {
    let env = TestEnv::new();
    let children: Vec<_> = (0..30)
        .map(|_| {
            env.stigmer()
                .args(["--backend", "cache", "run", "probe", "--quiet", "--exit", "5"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
        assert_eq!(stderr(&o), "", "no warning on a clean race");
    }
    let entries = env.entries();
    assert_eq!(entries.len(), 1, "one entry, no temporary files left: {entries:?}");
}

#[test]
fn a_changed_byte_is_never_executed_and_is_repaired() {
    let env = TestEnv::new();
    ok(&env.run(Some("cache"), "probe", &["--quiet"]));
    let entry = probe_entry(&env);
    let good = sha256_of(&entry);
    tamper(&entry, |b| {
        let i = b.len() / 2;
        b[i] ^= 0x01;
    });
    let o = env.run(Some("cache"), "probe", &[]);
    ok(&o);
    assert!(
        stderr(&o).contains("is corrupt") && stderr(&o).contains("replacing it"),
        "{}",
        stderr(&o)
    );
    assert_eq!(sha256_of(&entry), good, "the entry was replaced with the real payload");
}

#[test]
fn a_different_program_of_the_same_size_is_never_executed() {
    let env = TestEnv::new();
    ok(&env.run(Some("cache"), "probe", &["--quiet"]));
    let entry = probe_entry(&env);
    tamper(&entry, |b| {
        let evil = b"#!/bin/sh\necho PWNED; exit 0\n";
        b.fill(b'\n');
        b[..evil.len()].copy_from_slice(evil);
    });
    let o = env.run(Some("cache"), "probe", &[]);
    assert!(!stdout(&o).contains("PWNED"), "the tampered entry ran");
    assert_eq!(probe_field(&o, "argv"), r#"["probe"]"#);
}

#[test]
fn a_symlinked_entry_is_replaced_not_followed() {
    let env = TestEnv::new();
    ok(&env.run(Some("cache"), "probe", &["--quiet"]));
    let entry = probe_entry(&env);
    let evil = env.dir.path().join("evil");
    fs::write(&evil, "#!/bin/sh\necho PWNED\n").unwrap();
    fs::set_permissions(&evil, fs::Permissions::from_mode(0o500)).unwrap();
    fs::remove_file(&entry).unwrap();
    std::os::unix::fs::symlink(&evil, &entry).unwrap();
    let o = env.run(Some("cache"), "probe", &[]);
    assert!(!stdout(&o).contains("PWNED"));
    assert!(stderr(&o).contains("is a symlink"), "{}", stderr(&o));
    assert!(!fs::symlink_metadata(&entry).unwrap().file_type().is_symlink());
}

#[test]
fn a_hard_linked_entry_is_replaced() {
    let env = TestEnv::new();
    ok(&env.run(Some("cache"), "probe", &["--quiet"]));
    let entry = probe_entry(&env);
    fs::hard_link(&entry, env.dir.path().join("other-name")).unwrap();
    let o = env.run(Some("cache"), "probe", &["--quiet"]);
    ok(&o);
    assert!(stderr(&o).contains("2 hard links"), "{}", stderr(&o));
    use std::os::unix::fs::MetadataExt as _;
    assert_eq!(fs::metadata(&entry).unwrap().nlink(), 1);
}

#[test]
fn an_entry_of_another_user_is_replaced_not_run() {
    require!(is_root(), "needs root to give a file to another user");
    let env = TestEnv::new();
    ok(&env.run(Some("cache"), "probe", &["--quiet"]));
    let entry = probe_entry(&env);
    // Same bytes, right size and hash: only the owner is wrong.
    nix::unistd::chown(&entry, Some(65534.into()), Some(65534.into())).unwrap();
    let o = env.run(Some("cache"), "probe", &[]);
    ok(&o);
    assert!(stderr(&o).contains("belongs to uid 65534"), "{}", stderr(&o));
    use std::os::unix::fs::MetadataExt as _;
    assert_eq!(fs::metadata(&entry).unwrap().uid(), nix::unistd::geteuid().as_raw());
}

#[test]
fn a_symlinked_cache_root_is_refused() {
    let env = TestEnv::new();
    let real = env.dir.path().join("real");
    fs::create_dir(&real).unwrap();
    std::os::unix::fs::symlink(&real, &env.home).unwrap();
    let o = env.run(Some("cache"), "probe", &[]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("it is a symlink") && err.contains("STIGMER_HOME"), "{err}");
    assert_eq!(fs::read_dir(&real).unwrap().count(), 0, "nothing written through the link");
}

#[test]
fn group_or_world_writable_folders_are_refused() {
    for (mode, dir) in [(0o770, ""), (0o707, ""), (0o777, "bin"), (0o720, "bin/v1")] {
        let env = TestEnv::new();
        ok(&env.run(Some("cache"), "probe", &["--quiet"]));
        let dir = if dir.is_empty() { env.home.clone() } else { env.home.join(dir) };
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).unwrap();
        let o = env.run(Some("cache"), "probe", &[]);
        assert_eq!(o.status.code(), Some(1), "{mode:o} {dir:?}");
        let err = stderr(&o);
        assert!(err.contains("writable by group or others"), "{err}");
        assert!(err.contains(&format!("chmod go-w {}", dir.display())), "{err}");
        assert!(stdout(&o).is_empty(), "nothing ran");
    }
}

#[test]
fn a_folder_of_another_user_is_refused() {
    require!(is_root(), "needs root to give a folder to another user");
    let env = TestEnv::new();
    fs::create_dir(&env.home).unwrap();
    fs::set_permissions(&env.home, fs::Permissions::from_mode(0o700)).unwrap();
    nix::unistd::chown(&env.home, Some(65534.into()), None).unwrap();
    let o = env.run(Some("cache"), "probe", &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("belongs to uid 65534"), "{}", stderr(&o));
}

/// Sets a folder's (or file's) last-modified time `age` in the past.
fn age(path: &Path, age: Duration) {
    fs::File::open(path).unwrap().set_modified(SystemTime::now() - age).unwrap();
}

/// Holds a lock on `path` in another process, as a running stigmer (of any
/// build) or an unfinished write does: `flock -s|-x PATH sleep`, killed with
/// its group on drop.
struct Holder(std::process::Child, std::path::PathBuf);

impl Holder {
    fn new(path: &Path, shared: bool, wrapper: &[&str]) -> Holder {
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = std::process::Command::new(first);
                c.args(rest).arg("flock");
                c
            }
            None => std::process::Command::new("flock"),
        };
        let mode = if shared { "-s" } else { "-x" };
        let ready = std::env::temp_dir().join(format!(
            "stigmer-held-{}-{}",
            std::process::id(),
            path.file_name().unwrap().to_string_lossy()
        ));
        let _ = fs::remove_file(&ready);
        let script = format!("touch {}; exec sleep 60", ready.display());
        cmd.args([mode, "-n"]).arg(path).args(["sh", "-c", &script]);
        use std::os::unix::process::CommandExt as _;
        cmd.process_group(0);
        let child = cmd.spawn().unwrap();
        let holder = Holder(child, ready.clone());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !ready.exists() {
            assert!(std::time::Instant::now() < deadline, "flock never took {path:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
        holder
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let pgid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.0.wait();
        let _ = fs::remove_file(&self.1);
    }
}

#[test]
fn prune_removes_only_what_no_stigmer_uses_and_nobody_used_for_a_week() {
    require!(have("flock"), "needs flock(1) to hold a lock as another stigmer would");
    let env = TestEnv::new();
    ok(&env.run(Some("cache"), "probe", &["--quiet"]));
    let v1 = env.home.join("bin/v1");
    let entry = probe_entry(&env);
    // Three entries of other builds: one used a minute ago, one unused for
    // eight days, one unused for eight days but held by a running stigmer.
    let foreign = |name: &str| {
        let dir = v1.join(name.repeat(64));
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("old-service"), "x").unwrap();
        dir
    };
    let recent = foreign("1");
    let old = foreign("2");
    let held = foreign("3");
    for dir in [&old, &held] {
        age(dir, Duration::from_secs(8 * 24 * 3600));
    }
    let _running = Holder::new(&held, true, &[]);
    // Temporary files of fills: two whose writer is gone (nobody holds
    // them), one whose writer still writes (holds it).
    let dir = entry.parent().unwrap();
    let stale = dir.join(".tmp-stale");
    let orphan = dir.join(format!(".tmp-{}-orphan", dead_pid()));
    let writing = dir.join(".tmp-1-writing");
    for f in [&stale, &orphan, &writing] {
        fs::write(f, "partial").unwrap();
        // Cleaners leave files younger than a minute alone (their writer may
        // not have locked them yet).
        age(f, Duration::from_secs(120));
    }
    let _writer = Holder::new(&writing, false, &[]);

    let out = ok(&env.stigmer().args(["cache", "prune"]).output().unwrap());
    assert!(out.contains(&format!("removed {} (entry of a payload", old.display())), "{out}");
    assert!(out.contains(".tmp-stale") && out.contains("-orphan"), "{out}");
    assert!(out.ends_with("pruned 3 item(s)\n"), "{out}");
    assert!(!old.exists() && !stale.exists() && !orphan.exists());
    assert!(out.contains("kept: a running stigmer uses it"), "{out}");
    assert!(out.contains("kept: last used"), "{out}");
    assert!(recent.join("old-service").exists(), "used recently: it ages out later");
    assert!(held.join("old-service").exists(), "a running stigmer may exec it");
    assert!(writing.exists(), "a write still going on is left alone");
    assert!(entry.exists(), "this build's entry is kept");
}

/// Locks cross namespaces where pids do not: an entry held by a stigmer in
/// another user and pid namespace is never pruned, however old.
#[test]
fn prune_respects_a_stigmer_in_another_namespace() {
    require!(
        is_root() && have("unshare") && have("flock"),
        "needs root, unshare and flock(1) to hold a lock from another namespace"
    );
    let env = TestEnv::new();
    ok(&env.run(Some("cache"), "probe", &["--quiet"]));
    let held = env.home.join("bin/v1").join("4".repeat(64));
    fs::create_dir(&held).unwrap();
    fs::write(held.join("old-service"), "x").unwrap();
    age(&held, Duration::from_secs(30 * 24 * 3600));
    let _other = Holder::new(
        &held,
        true,
        &["unshare", "--user", "--map-root-user", "--pid", "--fork", "--mount-proc"],
    );
    let out = ok(&env.stigmer().args(["cache", "prune"]).output().unwrap());
    assert!(out.contains("kept: a running stigmer uses it"), "{out}");
    assert!(held.join("old-service").exists());
}

/// The pid of a process that has exited.
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

#[test]
fn the_next_fill_removes_what_a_killed_fill_left() {
    let env = TestEnv::new();
    ok(&env.run(Some("cache"), "probe", &["--quiet"]));
    let entry = probe_entry(&env);
    let orphan = entry.parent().unwrap().join(format!(".tmp-{}-orphan", dead_pid()));
    fs::write(&orphan, "partial").unwrap();
    // Older than the minute a writer has to lock its file.
    age(&orphan, Duration::from_secs(120));
    let young = entry.parent().unwrap().join(".tmp-1-young");
    fs::write(&young, "partial").unwrap();
    fs::remove_file(&entry).unwrap();
    ok(&env.run(Some("cache"), "probe", &["--quiet"]));
    assert!(entry.exists() && !orphan.exists());
    assert!(young.exists(), "a file made a moment ago may be a write about to lock it");
}

#[test]
fn verify_rehashes_every_entry() {
    let env = TestEnv::new();
    ok(&env.run(Some("cache"), "probe", &["--quiet"]));
    ok(&env.run(Some("cache"), "hello", &[]));
    let out = ok(&env.stigmer().args(["cache", "verify"]).output().unwrap());
    assert!(out.ends_with("verified 2 entries, 0 bad\n"), "{out}");

    let entry = probe_entry(&env);
    tamper(&entry, |b| b[100] ^= 0xff);
    let o = env.stigmer().args(["cache", "verify"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("is corrupt"), "{}", stdout(&o));
    assert!(stdout(&o).ends_with("verified 2 entries, 1 bad\n"), "{}", stdout(&o));
    assert!(!entry.exists(), "the bad entry is removed");
    ok(&env.run(Some("cache"), "probe", &["--quiet"]));
}

#[test]
fn cache_commands_on_a_missing_home_do_nothing() {
    let env = TestEnv::new();
    assert!(ok(&env.stigmer().args(["cache", "verify"]).output().unwrap()).contains("verified 0"));
    assert!(ok(&env.stigmer().args(["cache", "prune"]).output().unwrap()).contains("pruned 0"));
    assert!(!env.home.exists());
}

#[test]
fn a_cache_that_fills_up_mid_write_leaves_nothing_and_the_next_run_succeeds() {
    require!(is_root() && have("unshare"), "needs root and unshare to mount a small tmpfs");
    let env = TestEnv::new();
    let mount = env.dir.path().join("small");
    fs::create_dir(&mount).unwrap();
    // 256 KiB: less than the probe payload, so its write fails partway. Then
    // the same tmpfs grows to 8 MiB and the same command runs again.
    let script = r#"
        mount -t tmpfs -o size=256k,mode=700 tmpfs "$1" || exit 99
        export STIGMER_HOME="$1/home"
        "$2" --backend cache run probe --quiet; echo "first exit: $?"
        echo "left: $(ls -A "$1"/home/bin/v1/*/)"
        mount -o remount,size=8m "$1"
        "$2" --backend cache run probe --quiet; echo "second exit: $?"
        echo "then: $(ls -A "$1"/home/bin/v1/*/)"
    "#;
    let o = std::process::Command::new("unshare")
        .args(["--mount", "sh", "-c", script, "sh"])
        .arg(&mount)
        .arg(stigmer_bin())
        .env_remove("STIGMER_BACKEND")
        .output()
        .unwrap();
    let (out, err) = (stdout(&o), stderr(&o));
    assert!(out.contains("first exit: 1"), "{out}{err}");
    let error: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(error.len(), 1, "{err}");
    assert!(
        error[0].contains("No space left on device") && error[0].contains("/home/bin/v1/"),
        "{err}"
    );
    assert!(error[0].contains("free some space"), "the fix fits the cause: {err}");
    assert!(out.contains("left: \n"), "no partial entry or temporary file is left: {out}");
    assert!(out.contains("second exit: 0"), "{out}{err}");
    assert!(out.contains("then: probe\n"), "{out}");
}

/// What stops another user from swapping a cache entry between its check
/// and its exec: every folder on the way is private, so the swap itself is
/// refused by the kernel. (The same user is out of scope: see SECURITY.md.)
#[test]
fn another_user_cannot_swap_an_entry_between_check_and_exec() {
    require!(is_root() && have("setpriv"), "needs root and setpriv to act as two users");
    let env = TestEnv::new();
    // The victim is uid 65534, the attacker uid 65533; both may reach the
    // test folder, only the victim its cache.
    fs::set_permissions(env.dir.path(), fs::Permissions::from_mode(0o711)).unwrap();
    fs::create_dir(&env.home).unwrap();
    fs::set_permissions(&env.home, fs::Permissions::from_mode(0o700)).unwrap();
    nix::unistd::chown(&env.home, Some(65534.into()), Some(65534.into())).unwrap();
    let as_user = |uid: u32, program: &str| {
        let mut cmd = std::process::Command::new("setpriv");
        cmd.args([&format!("--reuid={uid}"), &format!("--regid={uid}"), "--clear-groups"])
            .arg(program)
            .env("STIGMER_HOME", &env.home)
            .env_remove("STIGMER_BACKEND");
        cmd
    };
    let victim = || {
        let mut cmd = as_user(65534, stigmer_bin().to_str().unwrap());
        cmd.args(["--backend", "cache", "run", "probe"]);
        cmd.output().unwrap()
    };
    let first = victim();
    ok(&first);
    let exe = probe_field(&first, "exe");
    let entry = Path::new(&exe).to_owned();
    assert!(entry.starts_with(&env.home), "{exe}");

    // The attacker's ways to swap it: rename over it, write it, remove it,
    // add a file beside it. Every one is refused.
    let evil = env.dir.path().join("evil");
    fs::write(&evil, "#!/bin/sh\necho swapped\n").unwrap();
    fs::set_permissions(&evil, fs::Permissions::from_mode(0o755)).unwrap();
    let attempts = [
        format!("mv -f {} {}", evil.display(), entry.display()),
        format!("cp {} {}", evil.display(), entry.display()),
        format!("rm -f {}", entry.display()),
        format!("cp {} {}.new", evil.display(), entry.display()),
    ];
    for attempt in &attempts {
        let o = as_user(65533, "sh").args(["-c", attempt]).output().unwrap();
        assert!(!o.status.success(), "{attempt} succeeded");
        assert!(stderr(&o).contains("Permission denied"), "{attempt}: {}", stderr(&o));
    }
    // So the victim still runs the verified payload, from the same entry.
    let o = victim();
    assert_eq!(probe_field(&o, "exe"), exe);
    assert!(!stdout(&o).contains("swapped"));
}

/// Concurrent fills clean each other's temporary files: each fill first
/// removes the temporary files nobody holds a lock on, and a writer creates
/// its file *before* it locks it (`write_entry`: `tempfile_in`, then
/// `reopen`, then a non-blocking `flock`). A cleaner that comes in between
/// either takes the lock for a moment (the writer's non-blocking lock then
/// fails: "lock a file in") or removes the file (the writer's `reopen`
/// fails: "cannot create a file in ...: No such file or directory").
/// Either way a first run fails, with a fix ("make it writable") that does
/// not apply. About 2% of first runs failed this way here, with no prune
/// running; ten rounds of thirty, with `cache prune` running in a loop,
/// make a failure near certain while the race exists.
#[test]
fn concurrent_first_runs_never_fail_on_each_others_temporary_files() {
    let mut failures = Vec::new();
    for _ in 0..10 {
        let env = TestEnv::new();
        // `stigmer cache prune` cleans the same way, concurrently too.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let pruner = {
            let (stop, mut prune) = (std::sync::Arc::clone(&stop), env.stigmer());
            prune.args(["cache", "prune"]).stdout(Stdio::null()).stderr(Stdio::null());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = prune.status();
                }
            })
        };
        let children: Vec<_> = (0..30)
            .map(|_| {
                env.stigmer()
                    .args(["--backend", "cache", "run", "probe", "--quiet"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let o = child.wait_with_output().unwrap();
            if !o.status.success() {
                failures.push(stderr(&o));
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        pruner.join().unwrap();
    }
    assert!(
        failures.is_empty(),
        "{} of 300 first runs failed:\n{}",
        failures.len(),
        failures.join("")
    );
}

/// `$STIGMER_HOME/tmp` is a plain name: a home set to a folder that already
/// has a `tmp/` (`STIGMER_HOME=$HOME`, `/srv/app`, `.` in a project) holds
/// the user's own folders there. The cleaner of private TMPDIRs removes
/// *every* folder in it that is unlocked and a minute old, whatever its
/// name (before this change only `{pid}-...` names of dead pids were
/// removed; stigmer's own are `run-...`), so `stigmer cache prune`, or any
/// launch of a PyInstaller payload, deletes the user's data.
#[test]
fn prune_removes_only_the_private_tmpdirs_stigmer_made() {
    let env = TestEnv::new();
    let theirs = env.home.join("tmp/my-project");
    fs::create_dir_all(&theirs).unwrap();
    for d in [&env.home, &env.home.join("tmp")] {
        fs::set_permissions(d, fs::Permissions::from_mode(0o700)).unwrap();
    }
    fs::write(theirs.join("notes.txt"), "mine").unwrap();
    fs::File::open(&theirs)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(600))
        .unwrap();
    let o = env.stigmer().args(["cache", "prune"]).output().unwrap();
    ok(&o);
    assert!(
        theirs.join("notes.txt").exists(),
        "a folder stigmer never made was removed: {}",
        stdout(&o)
    );
}
