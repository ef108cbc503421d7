//! Builds stigmer again with `STIGMER_PAYLOAD_DIR` pointing at a folder of
//! other payloads (a real PyInstaller one-file binary and a shell script),
//! then runs them; and checks the build errors for bad payload folders.
//!
//! The second build uses its own target folder (`target/payload-tests`) so
//! it never replaces the binary the other tests run.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

const APP: &str = r#"
import os, sys, time
print("pyapp: argv", sys.argv[1:])
print("pyapp: executable", sys.executable)
print("pyapp: tmpdir", os.environ.get("TMPDIR"))
print("pyapp: meipass", getattr(sys, "_MEIPASS", ""), flush=True)
if sys.argv[1:] == ["sleep"]:
    time.sleep(60)
sys.exit(int(sys.argv[1]) if sys.argv[1:] and sys.argv[1].isdigit() else 0)
"#;

/// A PyInstaller one-file build of [`APP`], rebuilt only when APP changes.
fn pyinstaller_app(work: &Path) -> PathBuf {
    let src = work.join("app.py");
    let exe = work.join("dist/app");
    if exe.exists() && fs::read_to_string(&src).is_ok_and(|s| s == APP) {
        return exe;
    }
    fs::write(&src, APP).unwrap();
    let o = Command::new("pyinstaller")
        .args(["--onefile", "--noconfirm", "--log-level=WARN", "--name=app"])
        .arg("--distpath")
        .arg(work.join("dist"))
        .arg("--workpath")
        .arg(work.join("build"))
        .arg("--specpath")
        .arg(work)
        .arg(&src)
        .output()
        .unwrap();
    ok(&o);
    exe
}

/// The bytes of one of the demo payloads, as this build embeds them.
fn demo_payload(name: &str) -> Vec<u8> {
    let env = TestEnv::new();
    ok(&env.run(Some("cache"), name, &["--quiet"]));
    let entry = env.entries().into_iter().find(|p| p.ends_with(name)).unwrap();
    fs::read(entry).unwrap()
}

/// `len` bytes no compressor can shrink (xorshift64).
fn noise(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    (0..len / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect()
}

#[test]
fn a_60_mb_payload_never_passes_through_the_launchers_memory() {
    let env = TestEnv::new();
    let payloads = env.dir.path().join("payloads");
    fs::create_dir(&payloads).unwrap();
    // A real program with 60 MB of data after it (the kernel loads only its
    // segments, so it runs as the probe).
    let mut big = demo_payload("probe");
    big.extend_from_slice(&noise(60 << 20));
    executable(&payloads.join("big"), &big);
    let (o, stigmer) = build_with(&payloads);
    ok(&o);

    let config = env.dir.path().join("services.toml");
    fs::write(&config, "[services.big]\nargs = [\"--quiet\", \"--sleep\", \"60000\"]\n").unwrap();
    let mut cmd = Command::new(&stigmer);
    cmd.args(["--backend", "memfd", "server", "--config"])
        .arg(&config)
        .env("STIGMER_HOME", &env.home);
    let server = Server::spawn(&mut cmd);
    let pid = server.service_pid("big", 60);
    server.wait_stderr("all services running", 60);

    // What runs is exactly the payload: the memfd holds the built bytes.
    let running = fs::read(format!("/proc/{pid}/exe")).unwrap();
    assert!(
        running == big,
        "the memfd differs from the payload ({} bytes vs {})",
        running.len(),
        big.len()
    );

    // And stigmer never held it: its peak resident memory stays far below
    // the payload's size (sendfile copies inside the kernel; decompression
    // reads the executable with pread and writes one 1 MiB frame at a time).
    // The supervisor prepared it: the guard (`server`) forked it before.
    let supervisor = children_of(server.child.id());
    assert_eq!(supervisor.len(), 1, "the guard has one child, the supervisor: {supervisor:?}");
    let status = fs::read_to_string(format!("/proc/{}/status", supervisor[0].0)).unwrap();
    let hwm_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    let detail: Vec<&str> =
        status.lines().filter(|l| l.starts_with("Rss") || l.starts_with("Vm")).collect();
    // A copy of the payload would add 60 MB. The bound leaves room for a
    // debug build's own pages (9.4 MB measured) and, with the compress
    // feature, up to four decoding threads' buffers of 2 MiB each (13.2 MB
    // measured with two); benches/README.md has release numbers.
    assert!(
        hwm_kb < 20 * 1024,
        "stigmer's peak RSS is {hwm_kb} kB with a 60 MB payload: {detail:?}"
    );

    server.signal(nix::sys::signal::Signal::SIGTERM);
    let (status, _, err) = server.finish(30);
    assert!(status.success(), "{status}: {err:?}");

    // On a terminal (a pty from script(1)) stigmer shows a progress bar
    // while it fills the cache (here from the first byte: how long 60 MB
    // takes depends on the build), and clears it before the payload runs;
    // on a pipe it prints nothing.
    require!(have("script"), "script (util-linux) is not installed");
    let fresh = env.dir.path().join("fresh-home");
    let command = format!("{} --backend cache run big --quiet", stigmer.display());
    let o = Command::new("script")
        .args(["--quiet", "--return", "--command", &command, "/dev/null"])
        .env("STIGMER_HOME", &fresh)
        .env("STIGMER_TEST_PROGRESS_AT_ONCE", "1")
        .output()
        .unwrap();
    let terminal = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{terminal}");
    assert!(terminal.contains("filling the cache: big"), "no progress bar: {terminal:?}");
    fs::remove_dir_all(&fresh).unwrap();
    let o = Command::new(&stigmer)
        .args(["--backend", "cache", "run", "big", "--quiet"])
        .env("STIGMER_HOME", &fresh)
        .env("STIGMER_TEST_PROGRESS_AT_ONCE", "1")
        .output()
        .unwrap();
    ok(&o);
    assert_eq!(stderr(&o), "", "nothing but the payload's output on a pipe");
}

fn executable(path: &Path, bytes: &[u8]) {
    fs::write(path, bytes).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn pyinstaller_and_script_payloads_from_a_custom_folder() {
    require!(have("pyinstaller"), "pyinstaller is not on PATH (pip install pyinstaller)");
    let work = payload_tests_dir();
    let app = pyinstaller_app(&work);
    let env = TestEnv::new();
    let payloads = env.dir.path().join("payloads");
    fs::create_dir(&payloads).unwrap();

    // Build errors first: each names the file and the fix.
    let (o, _) = build_with(&payloads.join("missing"));
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("cannot read the payload folder")
            && stderr(&o).contains("STIGMER_PAYLOAD_DIR"),
        "{}",
        stderr(&o)
    );
    let (o, _) = build_with(&payloads);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("holds no executable files"), "{}", stderr(&o));
    executable(&payloads.join("bad name"), b"#!/bin/sh\n");
    let (o, _) = build_with(&payloads);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("\"bad name\" contains ' '") && stderr(&o).contains("rename it"),
        "{}",
        stderr(&o)
    );
    fs::remove_file(payloads.join("bad name")).unwrap();

    fs::copy(&app, payloads.join("pyapp")).unwrap();
    executable(&payloads.join("greet"), b"#!/bin/sh\necho \"greet: $1\"\nexit 4\n");
    // Not executable: an asset; empty, it cannot be one, and is skipped.
    fs::write(payloads.join("notes.txt"), "not a payload").unwrap();
    fs::write(payloads.join("empty.txt"), "").unwrap();
    let (o, stigmer) = build_with(&payloads);
    ok(&o);
    assert!(
        stderr(&o).contains("skipping") && stderr(&o).contains("empty.txt"),
        "warning: {}",
        stderr(&o)
    );

    let run = |args: &[&str]| {
        Command::new(&stigmer)
            .args(args)
            .env("STIGMER_HOME", &env.home)
            .env_remove("STIGMER_BACKEND")
            .output()
            .unwrap()
    };
    let list = ok(&run(&["list"]));
    let row = list.lines().find(|l| l.starts_with("pyapp ")).expect(&list);
    assert!(row.contains("pyinstaller") && row.contains("cache: PyInstaller"), "{row}");
    let row = list.lines().find(|l| l.starts_with("notes.txt ")).expect(&list);
    assert!(row.contains(" asset "), "{row}");
    assert!(!list.contains("empty.txt"), "{list}");

    // Even when memfd is forced, a PyInstaller payload goes through the cache.
    for backend in ["auto", "memfd", "cache"] {
        let o = run(&["--backend", backend, "run", "pyapp", "3"]);
        assert_eq!(o.status.code(), Some(3), "{backend}: {}", stderr(&o));
        let out = stdout(&o);
        let field = |k: &str| {
            out.lines().find_map(|l| l.strip_prefix(&format!("pyapp: {k} "))).unwrap().to_owned()
        };
        assert_eq!(field("argv"), "['3']");
        // It ran the verified copy in the cache, not some file named by argv[0].
        assert!(
            field("executable").starts_with(env.home.join("bin/v1").to_str().unwrap()),
            "{out}"
        );
        let tmpdir = field("tmpdir");
        assert!(tmpdir.starts_with(env.home.join("tmp").to_str().unwrap()), "{out}");
        assert!(field("meipass").starts_with(&tmpdir), "unpacked into the private TMPDIR: {out}");
        assert!(!Path::new(&tmpdir).exists(), "the private TMPDIR is removed after exit");
    }

    // The script runs from memory.
    let o = run(&["run", "greet", "world"]);
    assert_eq!(o.status.code(), Some(4));
    assert_eq!(stdout(&o), "greet: world\n");

    // stigmer waits for a PyInstaller payload: SIGTERM to stigmer reaches
    // it, stigmer reports the same death, and cleans up.
    let mut child = Command::new(&stigmer)
        .args(["run", "pyapp", "sleep"])
        .env("STIGMER_HOME", &env.home)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while fs::read_dir(env.home.join("tmp")).map(|d| d.count()).unwrap_or(0) == 0 {
        assert!(std::time::Instant::now() < deadline, "pyapp never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The app itself runs once it has said where it unpacked to (before,
    // its bootloader may still be unpacking).
    let out = std::io::BufReader::new(child.stdout.take().unwrap());
    let said =
        std::io::BufRead::lines(out).map_while(Result::ok).any(|l| l.starts_with("pyapp: meipass"));
    assert!(said, "pyapp never said where it unpacked to");
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.signal(), Some(15), "{o:?}");
    let left: Vec<_> = fs::read_dir(env.home.join("tmp"))
        .unwrap()
        .flatten()
        .map(|e| {
            let inside: Vec<_> = fs::read_dir(e.path())
                .map(|d| d.flatten().map(|f| f.file_name()).collect())
                .unwrap_or_default();
            (e.file_name(), inside)
        })
        .collect();
    assert!(left.is_empty(), "private TMPDIR left behind: {left:?}\n{}", stderr(&o));

    // A private TMPDIR is never removed while its payload runs: not after
    // its stigmer was killed, not by a stigmer in another pid namespace
    // (pids do not cross namespaces: the payload holds a lock on it).
    let child = {
        use std::os::unix::process::CommandExt as _;
        Command::new(&stigmer)
            .args(["run", "pyapp", "sleep"])
            .env("STIGMER_HOME", &env.home)
            .stdout(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap()
    };
    let group = KillGroup(nix::unistd::Pid::from_raw(child.id() as i32), child);
    let tmpdir = loop {
        let unpacked = fs::read_dir(env.home.join("tmp"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .find(|p| fs::read_dir(p).is_ok_and(|mut d| d.next().is_some()));
        if let Some(dir) = unpacked {
            break dir;
        }
        assert!(std::time::Instant::now() < deadline, "pyapp never unpacked");
        std::thread::sleep(Duration::from_millis(50));
    };
    nix::sys::signal::kill(group.0, nix::sys::signal::Signal::SIGKILL).unwrap();
    let prune = |wrapper: &[&str]| {
        let mut cmd = Command::new(wrapper.first().copied().unwrap_or(stigmer.to_str().unwrap()));
        if !wrapper.is_empty() {
            cmd.args(&wrapper[1..]).arg(&stigmer);
        }
        ok(&cmd.args(["cache", "prune"]).env("STIGMER_HOME", &env.home).output().unwrap())
    };
    // Old enough that only the lock can keep it.
    fs::File::open(&tmpdir)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(600))
        .unwrap();
    prune(&[]);
    assert!(tmpdir.exists(), "removed while its payload runs, after its stigmer was killed");
    if is_root() && have("unshare") {
        prune(&["unshare", "--pid", "--fork", "--mount-proc"]);
        assert!(tmpdir.exists(), "removed by a stigmer in another pid namespace");
    }
    // Once the payload is gone too, the next prune removes it.
    drop(group);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while tmpdir.exists() {
        assert!(std::time::Instant::now() < deadline, "never removed once unused");
        prune(&[]);
        std::thread::sleep(Duration::from_millis(100));
    }

    // A read-only root, as in a locked-down container (bubblewrap): with a
    // tmpfs for STIGMER_HOME the PyInstaller payload runs; with no writable
    // place at all, the error names the payload and the volume to mount.
    require!(have("bwrap"), "bubblewrap (bwrap) is not installed");
    let volume = env.dir.path().join("volume");
    fs::create_dir(&volume).unwrap();
    let locked = |home: &Path, args: &[&str]| {
        Command::new("bwrap")
            .args(["--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev"])
            .arg("--tmpfs")
            .arg(&volume)
            .args(["--unshare-pid", "--die-with-parent", "--"])
            .arg(&stigmer)
            .args(args)
            .env("STIGMER_HOME", home)
            .env_remove("STIGMER_BACKEND")
            .output()
            .unwrap()
    };
    let o = locked(&volume.join("home"), &["run", "pyapp", "3"]);
    assert!(!stderr(&o).starts_with("bwrap:"), "bwrap was refused: {}", stderr(&o));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let ran_from = format!("pyapp: executable {}", volume.join("home/bin/v1/").display());
    assert!(stdout(&o).contains(&ran_from), "{}", stdout(&o));
    let o = locked(&volume.join("home"), &["run", "greet", "ro"]);
    assert_eq!(stdout(&o), "greet: ro\n", "{}", stderr(&o));

    let o = locked(&env.dir.path().join("read-only-home"), &["run", "pyapp", "3"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("pyapp") && err.contains("mount a writable volume"), "{err}");
}

#[test]
fn killing_stigmer_while_it_fills_the_cache_never_leaves_a_bad_entry() {
    let env = TestEnv::new();
    let payloads = env.dir.path().join("payloads");
    fs::create_dir(&payloads).unwrap();
    // Big enough that the fill (hash, write, fsync, rename) is a good part
    // of a run: with 16 MB, 24 of 50 kills landed mid-write and 26 after
    // the rename; 4 MB keeps the test short.
    let mut big = demo_payload("probe");
    big.extend_from_slice(&noise(4 << 20));
    executable(&payloads.join("big"), &big);
    let (o, stigmer) = build_with(&payloads);
    ok(&o);
    let run = || {
        let mut cmd = Command::new(&stigmer);
        cmd.args(["--backend", "cache", "run", "big", "--quiet"])
            .env("STIGMER_HOME", &env.home)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        cmd
    };
    // Kills are spread over the time a whole cold run takes.
    let start = std::time::Instant::now();
    assert!(run().status().unwrap().success());
    let full = start.elapsed();
    let entry = env.entries().pop().unwrap();
    let folder = entry.parent().unwrap().to_owned();
    let temps = || {
        fs::read_dir(&folder)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
            .count()
    };

    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    let (mut before, mut midway, mut after) = (0, 0, 0);
    for _ in 0..50 {
        fs::remove_file(&entry).unwrap_or_default();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let delay = full.mul_f64((x % 1000) as f64 / 1000.0);
        let mut child = run().spawn().unwrap();
        std::thread::sleep(delay);
        let _ = child.kill();
        let status = child.wait().unwrap();
        // Whatever the moment: an entry is there complete, or not at all.
        match fs::read(&entry) {
            Ok(bytes) => {
                assert!(bytes == big, "a kill after {delay:?} left a bad entry ({status})");
                after += 1;
            }
            Err(_) if temps() > 0 => midway += 1,
            Err(_) => before += 1,
        }
    }
    // 50 kills over the whole run: some land while the file is written.
    assert!(midway > 0, "no kill landed mid-write: {before} before, {after} after");

    // The next run cleans up what the killed ones left, once it is older
    // than the minute a writer may take to lock its file, and runs the
    // payload.
    for temp in fs::read_dir(&folder).unwrap().flatten() {
        if temp.file_name().to_string_lossy().starts_with(".tmp-") {
            let then = std::time::SystemTime::now() - Duration::from_secs(120);
            fs::File::open(temp.path()).unwrap().set_modified(then).unwrap();
        }
    }
    fs::remove_file(&entry).unwrap_or_default();
    let o = Command::new(&stigmer)
        .args(["--backend", "cache", "run", "big"])
        .env("STIGMER_HOME", &env.home)
        .output()
        .unwrap();
    assert_eq!(probe_field(&o, "argv"), r#"["big"]"#, "{}", stderr(&o));
    assert_eq!(fs::read(&entry).unwrap(), big);
    assert_eq!(temps(), 0, "temporary files of killed runs are removed");
    let o =
        Command::new(&stigmer).args(["cache", "verify"]).env("STIGMER_HOME", &env.home).output();
    assert!(stdout(&o.unwrap()).ends_with("verified 1 entry, 0 bad\n"));
}

/// Kills a process group when dropped, and reaps its leader: nothing a test
/// starts outlives it, even when it fails.
struct KillGroup(nix::unistd::Pid, std::process::Child);

impl Drop for KillGroup {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(self.0, nix::sys::signal::Signal::SIGKILL);
        let _ = self.1.wait();
    }
}

/// A stand-in for a PyInstaller one-file build, for hosts without
/// pyinstaller: `/bin/sh` with a PyInstaller cookie after it (the ELF
/// loader ignores trailing bytes; stigmer sees a one-file build, so it runs
/// it from the cache with a private TMPDIR and the inherited locks).
fn fake_pyinstaller() -> Vec<u8> {
    let mut bytes = fs::read("/bin/sh").unwrap();
    let cookie_len: u32 = 8 + 4 * 4 + 64;
    bytes.extend_from_slice(b"MEI\x0c\x0b\x0a\x0b\x0e");
    for field in [cookie_len, 0, 0, 312] {
        bytes.extend_from_slice(&field.to_be_bytes());
    }
    bytes.extend_from_slice(&[0; 64]);
    bytes
}

/// A PyInstaller payload's private TMPDIR and the entry folder it runs from
/// are locked by the payload through inherited descriptors, "never removed
/// while the payload runs". But when the payload's first process exits
/// while a process it started still runs (a worker started with
/// `sys.executable`, a Python child whose bootloader parent was killed),
/// `stigmer run` drops the entry: `PrivateTmp` removes the TMPDIR outright
/// (its `TempDir` goes first), and nix's `Flock` drop calls `flock(LOCK_UN)`
/// on the descriptor the worker shares with stigmer (one open file
/// description), which releases the worker's locks too, so `cache prune`
/// may also take the entry folder.
#[test]
fn a_private_tmpdir_and_its_locks_outlive_what_the_payload_left_running() {
    require!(Path::new("/bin/sh").exists(), "needs /bin/sh");
    let dir = payload_tests_dir().join("fake-pyinstaller");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    executable(&dir.join("fakepy"), &fake_pyinstaller());
    let (o, stigmer) = build_with(&dir);
    ok(&o);
    let env = TestEnv::new();
    let marker = format!("{}.123", 30 + std::process::id() % 1000);
    // The payload unpacks a file, leaves a worker behind and exits.
    let script = format!(
        "echo unpacked > \"$TMPDIR/lib.so\"; echo \"tmpdir: $TMPDIR\"; \
         sleep {marker} >/dev/null 2>&1 &"
    );
    let o = Command::new(&stigmer)
        .args(["run", "fakepy", "-c", &script])
        .env("STIGMER_HOME", &env.home)
        .output()
        .unwrap();
    struct KillWorkers(String);
    impl Drop for KillWorkers {
        fn drop(&mut self) {
            for (pid, _) in processes_with(&format!("sleep {}", self.0)) {
                let pid = nix::unistd::Pid::from_raw(pid as i32);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
    let _workers = KillWorkers(marker.clone());
    let tmpdir = PathBuf::from(probe_field(&o, "tmpdir"));
    // The worker was forked before stigmer returned; wait for its exec.
    wait_processes(&format!("sleep {marker}"), 1, 10);
    let entry_dir = fs::read_dir(env.home.join("bin/v1")).unwrap().next().unwrap().unwrap().path();
    let free = |path: &Path| {
        let file = fs::File::open(path).unwrap();
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).is_ok()
    };
    let mut broken = Vec::new();
    if !tmpdir.join("lib.so").exists() {
        broken.push(format!("{} was removed while the worker runs", tmpdir.display()));
    } else if free(&tmpdir) {
        broken.push(format!("nothing holds {} while the worker runs", tmpdir.display()));
    }
    if free(&entry_dir) {
        broken.push(format!("nothing holds {} while the worker runs", entry_dir.display()));
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}
