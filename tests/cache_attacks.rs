//! The cache under attack: what runs is what was hashed, whoever renames,
//! rewrites or removes what, and folders someone else controls are refused
//! before anything runs.
#![cfg(target_os = "linux")]

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use nix::sys::signal::Signal;

/// The sha256 of a payload this build carries.
fn sha_of(env: &TestEnv, name: &str) -> String {
    let o = env.stigmer().args(["list", "--json"]).output().unwrap();
    let list: serde_json::Value = serde_json::from_str(&ok(&o)).unwrap();
    let p = list.as_array().unwrap().iter().find(|p| p["name"] == name).unwrap();
    p["sha256"].as_str().unwrap().to_owned()
}

/// Puts an impostor where the cache entry of `probe` would be under `home`:
/// a script that says "swapped".
fn plant(home: &Path, sha: &str) {
    let dir = home.join("bin/v1").join(sha);
    fs::create_dir_all(&dir).unwrap();
    for d in [home.to_owned(), home.join("bin"), home.join("bin/v1"), dir.clone()] {
        fs::set_permissions(&d, fs::Permissions::from_mode(0o700)).unwrap();
    }
    let path = dir.join("probe");
    let _ = fs::remove_file(&path);
    fs::write(&path, "#!/bin/sh\necho swapped\n").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o500)).unwrap();
}

/// The attack of the report, by the same user (who may rename anything of
/// theirs): STIGMER_HOME is swapped with an impostor home, with
/// `renameat2(RENAME_EXCHANGE)`, over and over while stigmer checks and
/// execs. stigmer execs the descriptor it hashed, so the impostor never runs.
#[test]
fn a_home_swapped_between_check_and_exec_never_runs_other_bytes() {
    let env = TestEnv::new();
    let sha = sha_of(&env, "probe");
    ok(&env.run(Some("cache"), "probe", &["--quiet"]));
    let other = env.dir.path().join("other");
    plant(&other, &sha);
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (stop, home, other, sha) =
            (Arc::clone(&stop), env.home.clone(), other.clone(), sha.clone());
        std::thread::spawn(move || {
            let mut swaps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                rustix::fs::renameat_with(
                    rustix::fs::CWD,
                    &home,
                    rustix::fs::CWD,
                    &other,
                    rustix::fs::RenameFlags::EXCHANGE,
                )
                .unwrap();
                swaps += 1;
                // stigmer repairs what it finds bad: plant again in the
                // folder that is not the home right now.
                if swaps % 2 == 0 {
                    plant(&other, &sha);
                }
            }
            swaps
        })
    };
    let (mut ran, mut refused) = (0, 0);
    for _ in 0..150 {
        let o = env.run(Some("cache"), "probe", &[]);
        assert!(!stdout(&o).contains("swapped"), "the impostor ran:\n{}", stdout(&o));
        if o.status.success() {
            assert!(stdout(&o).contains("probe: hello from the embedded probe"));
            ran += 1;
        } else {
            refused += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    assert!(swaps > 150, "the swapper barely ran ({swaps} swaps)");
    assert!(ran > 0, "never ran ({refused} refused)");
}

/// A relative STIGMER_HOME is made absolute when stigmer starts: a
/// service's `cwd` holding a look-alike cache does not change what runs.
#[test]
fn a_relative_home_and_a_service_cwd_never_change_what_runs() {
    let env = TestEnv::new();
    let sha = sha_of(&env, "probe");
    let start = env.dir.path().join("start");
    let elsewhere = env.dir.path().join("elsewhere");
    fs::create_dir_all(&start).unwrap();
    fs::create_dir_all(&elsewhere).unwrap();
    plant(&elsewhere.join("rel"), &sha);
    let config = env.dir.path().join("services.toml");
    fs::write(
        &config,
        format!(
            "[services.api]\npayload = \"probe\"\ncwd = {:?}\nargs = [\"--sleep\", \"60000\"]\n",
            elsewhere.to_str().unwrap()
        ),
    )
    .unwrap();
    let mut cmd = std::process::Command::new(stigmer_bin());
    cmd.args(["--backend", "cache", "server", "--config"])
        .arg(&config)
        .current_dir(&start)
        .env("STIGMER_HOME", "rel")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let server = Server::spawn(&mut cmd);
    server.wait_stdout(20, |l| l.iter().any(|l| l.contains("exe: ")));
    server.signal(Signal::SIGTERM);
    let (_, out, err) = server.finish(20);
    let exe = out.iter().find_map(|l| l.strip_prefix("api | exe: ")).unwrap().to_owned();
    assert_eq!(
        PathBuf::from(&exe),
        start.join("rel/bin/v1").join(&sha).join("probe"),
        "{out:?}\n{err:?}"
    );
    assert!(!out.iter().any(|l| l.contains("swapped")), "{out:?}");
}

/// The same user rewrites a cache entry in place while `stigmer server`
/// runs it, then removes it, then removes the whole cache: every restart
/// runs the verified bytes (refilled from the binary), never the
/// replacement, and the server keeps running.
#[test]
fn an_entry_changed_or_removed_during_a_server_run_is_refilled_never_run() {
    let env = TestEnv::new();
    let manifest = "[services.api]\npayload = \"probe\"\nargs = [\"--sleep\", \"200\"]\n\
                    restart = \"always\"\nmax_restarts = 100\nrestart_window = \"1s\"\n";
    let server = env.server(manifest, &[], &["--backend", "cache"]);
    let hellos = |lines: &[String]| lines.iter().filter(|l| l.contains("hello from")).count();
    server.wait_stdout(20, |l| hellos(l) >= 1);
    let entry = env.entries().into_iter().find(|p| p.ends_with("probe")).unwrap();

    // Rewritten in place, same inode.
    fs::set_permissions(&entry, fs::Permissions::from_mode(0o700)).unwrap();
    let mut bytes = fs::read(&entry).unwrap();
    let evil = b"#!/bin/sh\necho swapped\n";
    bytes[..evil.len()].copy_from_slice(evil);
    // Only between two runs: the kernel refuses writes while it runs.
    loop {
        match fs::write(&entry, &bytes) {
            Ok(()) => break,
            Err(e) if e.raw_os_error() == Some(nix::libc::ETXTBSY) => {
                std::thread::sleep(std::time::Duration::from_millis(5))
            }
            Err(e) => panic!("{e}"),
        }
    }
    fs::set_permissions(&entry, fs::Permissions::from_mode(0o500)).unwrap();
    let seen = hellos(&server.stdout.lock().unwrap());
    server.wait_stdout(20, |l| hellos(l) >= seen + 2);
    server.wait_stderr("is corrupt", 5);

    // Removed, then the whole cache removed.
    fs::remove_file(&entry).unwrap();
    let seen = hellos(&server.stdout.lock().unwrap());
    server.wait_stdout(20, |l| hellos(l) >= seen + 2);
    fs::remove_dir_all(&env.home).unwrap();
    let seen = hellos(&server.stdout.lock().unwrap());
    server.wait_stdout(20, |l| hellos(l) >= seen + 2);

    server.signal(Signal::SIGTERM);
    let (status, out, err) = server.finish(20);
    assert!(!out.iter().any(|l| l.contains("swapped")), "{out:?}");
    assert!(status.success(), "the server kept running: {err:?}");
    assert!(entry.exists(), "refilled");
}

/// Layouts of folders above the cache that someone else could use to swap
/// it, each refused before anything runs with one line naming the folder
/// and the fix, and reported the same by `stigmer doctor`.
#[test]
fn folders_above_the_cache_that_others_control_are_refused() {
    require!(is_root(), "needs root to give folders to another user");
    let env = TestEnv::new();
    let nobody = 65534;
    // (folder above the home, its owner, its mode, refused because)
    let cases: [(&str, u32, u32, Option<&str>); 5] = [
        // The report's layout: /tmp/shared is another user's, mode 0777.
        ("shared", nobody, 0o777, Some("belongs to uid 65534")),
        ("theirs", nobody, 0o755, Some("belongs to uid 65534")),
        ("root-open", 0, 0o777, Some("writable by group or others")),
        ("group-open", 0, 0o775, Some("writable by group or others")),
        // A sticky folder of root's, like /tmp, is fine.
        ("root-sticky", 0, 0o1777, None),
    ];
    for (name, owner, mode, refused) in cases {
        let above = env.dir.path().join(name);
        let home = above.join("me/home");
        fs::create_dir_all(above.join("me")).unwrap();
        fs::set_permissions(above.join("me"), fs::Permissions::from_mode(0o700)).unwrap();
        nix::unistd::chown(&above, Some(owner.into()), None).unwrap();
        fs::set_permissions(&above, fs::Permissions::from_mode(mode)).unwrap();
        let run = |args: &[&str]| {
            env.stigmer()
                .env("STIGMER_HOME", &home)
                .args(["--backend", "cache"])
                .args(args)
                .output()
                .unwrap()
        };
        let o = run(&["run", "probe"]);
        match refused {
            None => {
                ok(&o);
            }
            Some(why) => {
                assert_eq!(o.status.code(), Some(1), "{name}: {}", stdout(&o));
                assert!(stdout(&o).is_empty(), "{name}: nothing ran");
                let err = stderr(&o);
                assert_eq!(err.lines().count(), 1, "{name}: {err}");
                assert!(err.contains(&above.display().to_string()), "{name}: {err}");
                assert!(err.contains(why) && err.contains("STIGMER_HOME"), "{name}: {err}");
                assert!(!home.exists(), "{name}: nothing created");
                let o = run(&["doctor", "--json"]);
                let report: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
                let usable = &report["cache"]["usable"];
                assert_eq!(usable["ok"], false, "{name}: {report}");
                assert!(usable["detail"].as_str().unwrap().contains(why), "{name}: {report}");
            }
        }
    }
}

/// Kills and reaps a process when dropped, so that nothing a test starts
/// outlives it, even when it fails.
struct KillOnDrop(Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Bytes read so far by process `pid` (`rchar` in `/proc/PID/io`, which the
/// same user may read, Yama or not); `None` once it is gone.
fn rchar(pid: u32) -> Option<u64> {
    let io = fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    io.lines().find_map(|l| l.strip_prefix("rchar: "))?.parse().ok()
}

/// Writes `bytes` over the file at `path` in place: the same inode.
fn rewrite_in_place(path: &Path, bytes: &[u8]) {
    loop {
        match fs::OpenOptions::new().write(true).truncate(true).open(path) {
            Ok(mut f) => {
                use std::io::Write as _;
                f.write_all(bytes).unwrap();
                return;
            }
            // Something still runs it: the kernel refuses writes until it exits.
            Err(e) if e.raw_os_error() == Some(nix::libc::ETXTBSY) => {
                std::thread::sleep(std::time::Duration::from_millis(2))
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// The same user (here root, whom file modes do not stop) rewrites the
/// entry's *inode* in place after stigmer's check and before its exec.
/// Exec by descriptor defeats renames and swaps, but the descriptor names
/// the inode. stigmer holds a read lease from before the hash to the exec,
/// so the writer waits; the attacker stops stigmer (SIGSTOP) after the hash
/// and waits until the kernel breaks the lease (fs.lease-break-time), then
/// writes and lets stigmer go on: stigmer sees the broken lease and refuses
/// to exec. No privilege is needed to time it: inotify says when stigmer
/// opened the entry, `/proc/PID/io` when it has read all of it.
#[test]
fn an_entry_rewritten_in_place_after_its_check_never_runs() {
    let impostor = Path::new("/bin/echo");
    require!(impostor.exists(), "needs /bin/echo as the impostor");
    // 1 s instead of 45 s, so the test does not take minutes (root: the
    // setting is the host's, put back after).
    require!(is_root(), "needs root to shorten fs.lease-break-time");
    let _break_time = Sysctl::set("/proc/sys/fs/lease-break-time", "1");
    let env = TestEnv::new();
    ok(&env.run(Some("cache"), "probe", &["--quiet"]));
    let entry = env.entries().into_iter().find(|p| p.ends_with("probe")).unwrap();
    let good = fs::read(&entry).unwrap();
    let evil = fs::read(impostor).unwrap();
    let (mut impostor_ran, mut real_ran, mut stopped_in_time) = (0, 0, 0);
    for _ in 0..10 {
        rewrite_in_place(&entry, &good);
        let mut watch = OpenWatch::new(&entry);
        // The probe prints "real"; echo prints its arguments.
        let child = env
            .stigmer()
            .args(["--backend", "cache", "run", "probe", "--quiet", "--say", "real"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut guard = KillOnDrop(Some(child));
        let stigmer = nix::unistd::Pid::from_raw(pid as i32);
        if watch.wait(20) {
            let base = rchar(pid).unwrap_or(0);
            // Until it has read the whole entry (or has gone on past it).
            let until = std::time::Instant::now() + std::time::Duration::from_secs(2);
            while rchar(pid).is_some_and(|now| now < base + good.len() as u64)
                && std::time::Instant::now() < until
            {}
            if nix::sys::signal::kill(stigmer, Signal::SIGSTOP).is_ok() {
                // Still stigmer (not yet the payload)?
                let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                if comm.trim() == "stigmer" {
                    stopped_in_time += 1;
                }
                // Blocks until the lease is broken (1 s), then writes.
                let _ = fs::OpenOptions::new()
                    .write(true)
                    .truncate(true)
                    .open(&entry)
                    .and_then(|mut f| std::io::Write::write_all(&mut f, &evil));
                let _ = nix::sys::signal::kill(stigmer, Signal::SIGCONT);
            }
        }
        let o = guard.0.take().unwrap().wait_with_output().unwrap();
        if stdout(&o).contains("--say") {
            impostor_ran += 1;
        } else if stdout(&o).contains("real") {
            real_ran += 1;
        }
    }
    rewrite_in_place(&entry, &good);
    assert_eq!(
        impostor_ran, 0,
        "bytes written after the check ran {impostor_ran} times out of 10 (the real probe {real_ran})"
    );
    assert!(stopped_in_time > 0, "the attack never caught stigmer between check and exec");
}

/// An inotify descriptor watching one file for `IN_OPEN`.
struct OpenWatch(std::fs::File);

impl OpenWatch {
    #[allow(unsafe_code)]
    fn new(path: &Path) -> OpenWatch {
        use std::os::fd::FromRawFd as _;
        use std::os::unix::ffi::OsStrExt as _;
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: plain system calls on a descriptor we own from here on.
        unsafe {
            let fd = nix::libc::inotify_init1(nix::libc::IN_CLOEXEC | nix::libc::IN_NONBLOCK);
            assert!(fd >= 0);
            assert!(nix::libc::inotify_add_watch(fd, c.as_ptr(), nix::libc::IN_OPEN) >= 0);
            OpenWatch(std::fs::File::from_raw_fd(fd))
        }
    }

    /// Waits (spinning: the window that follows is short) for an open.
    fn wait(&mut self, secs: u64) -> bool {
        use std::io::Read as _;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        let mut buf = [0u8; 4096];
        while std::time::Instant::now() < deadline {
            if self.0.read(&mut buf).is_ok_and(|n| n > 0) {
                return true;
            }
        }
        false
    }
}

/// Sets a sysctl for the life of the value, and puts the old value back.
struct Sysctl(&'static str, String);

impl Sysctl {
    fn set(path: &'static str, value: &str) -> Sysctl {
        let old = fs::read_to_string(path).unwrap();
        fs::write(path, value).unwrap();
        Sysctl(path, old)
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        let _ = fs::write(self.0, self.1.trim());
    }
}
