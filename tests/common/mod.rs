//! Shared helpers for the integration tests: a fresh `STIGMER_HOME` per
//! test, the real `stigmer` binary, and skips that say why.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

/// Skips the test with a reason, unless `STIGMER_TEST_NO_SKIP=1` (set by
/// `.ci/run`), in which case a missing capability fails the test.
#[macro_export]
macro_rules! require {
    ($cond:expr, $($why:tt)+) => {
        if !$cond {
            let why = format!($($why)+);
            if std::env::var_os("STIGMER_TEST_NO_SKIP").is_some_and(|v| v == "1") {
                panic!("cannot run this test: {why} (STIGMER_TEST_NO_SKIP=1 forbids skipping)");
            }
            eprintln!("skipped: {why}");
            return;
        }
    };
}

/// A test's own world: a private, empty `STIGMER_HOME` in a temp folder.
pub struct TestEnv {
    pub dir: TempDir,
    pub home: PathBuf,
}

impl TestEnv {
    pub fn new() -> TestEnv {
        let dir = tempfile::Builder::new().prefix("stigmer-test-").tempdir().unwrap();
        let home = dir.path().join("home");
        TestEnv { dir, home }
    }

    /// `stigmer` with this env's home and a clean slate of stigmer variables
    /// (but `STIGMER_BACKEND` is kept, so a CI job can force the cache).
    pub fn stigmer(&self) -> Command {
        let mut cmd = Command::new(stigmer_bin());
        cmd.env("STIGMER_HOME", &self.home).env_remove("RUST_LOG");
        cmd
    }

    /// `stigmer [--backend B] run NAME ARGS...`.
    pub fn run(&self, backend: Option<&str>, name: &str, args: &[&str]) -> Output {
        let mut cmd = self.stigmer();
        if let Some(b) = backend {
            cmd.args(["--backend", b]);
        }
        cmd.arg("run").arg(name).args(args).output().unwrap()
    }

    /// The cache entries under this env's home.
    pub fn entries(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let bin = self.home.join("bin/v1");
        for dir in std::fs::read_dir(&bin).into_iter().flatten().flatten() {
            for f in std::fs::read_dir(dir.path()).unwrap().flatten() {
                out.push(f.path());
            }
        }
        out.sort();
        out
    }
}

pub fn stigmer_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_stigmer"))
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The value of the probe's `key: value` line.
pub fn probe_field(o: &Output, key: &str) -> String {
    let out = stdout(o);
    let prefix = format!("{key}: ");
    out.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| {
            panic!("no {key:?} line in probe output:\n{out}\nstderr:\n{}", stderr(o))
        })
        .to_owned()
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Whether `tool` is on PATH.
pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Asserts success and returns stdout, printing everything on failure.
#[track_caller]
pub fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        stdout(o),
        stderr(o)
    );
    stdout(o)
}

/// The backends this platform has: memfd and the cache on Linux, the cache
/// elsewhere.
pub const BACKENDS: &[&str] =
    if cfg!(target_os = "linux") { &["memfd", "cache"] } else { &["cache"] };

/// The backend `auto` picks for an ordinary payload here.
pub const NATIVE_BACKEND: &str = if cfg!(target_os = "linux") { "memfd" } else { "cache" };

/// The backend `auto` picks for an ELF payload of this platform: mapped on
/// Linux when it is stored as it is (compressed, its bytes are not in the
/// file to map), the platform's backend otherwise.
pub const AUTO_ELF_BACKEND: &str = match (cfg!(target_os = "linux"), cfg!(feature = "compress")) {
    (true, false) => "mapped",
    _ => NATIVE_BACKEND,
};

/// What `/proc/self/exe` names in an ELF payload called `name` that `auto`
/// ran from memory on Linux: stigmer's own file (mapped), or its memfd.
pub fn auto_elf_exe(name: &str) -> String {
    match AUTO_ELF_BACKEND {
        "mapped" => stigmer_bin().display().to_string(),
        _ => format!("/memfd:{name} (deleted)"),
    }
}

/// The kind of the demo payloads compiled for this platform.
pub const NATIVE_KIND: &str = if cfg!(target_os = "macos") { "mach-o" } else { "elf" };

/// A free TCP port on loopback (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A child process that is killed, with every descendant it has, when
/// this is dropped before it was waited for: a test that fails (panics)
/// leaves nothing running.
pub struct ChildGuard(pub std::process::Child);

impl ChildGuard {
    pub fn id(&self) -> u32 {
        self.0.id()
    }
}

impl std::ops::Deref for ChildGuard {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for ChildGuard {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            kill_tree(self.0.id());
            let _ = self.0.wait();
        }
    }
}

/// SIGKILLs `root` and all its descendants, found through `/proc`, again
/// until none is left (each round is collected before anything is killed,
/// so nothing escapes by being reparented).
pub fn kill_tree(root: u32) {
    for _ in 0..100 {
        let tree = descendants(root);
        let alive: Vec<u32> = std::iter::once(root)
            .chain(tree)
            .filter(|p| state_of(*p).is_some_and(|s| s != 'Z'))
            .collect();
        if alive.is_empty() {
            return;
        }
        for pid in alive {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Every descendant of `root`, from the parent links in `/proc`.
pub fn descendants(root: u32) -> Vec<u32> {
    let all = all_processes();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(all.iter().filter(|p| p.1 == parent).map(|p| p.0));
        i += 1;
    }
    found.remove(0);
    found
}

/// `(pid, ppid, state)` of every process.
pub fn all_processes() -> Vec<(u32, u32, char)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // "pid (comm) S ppid ...": comm may hold spaces, so split after ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { continue };
        let mut fields = rest.split_whitespace();
        let state = fields.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let Some(ppid) = fields.next().and_then(|p| p.parse::<u32>().ok()) else { continue };
        found.push((pid, ppid, state));
    }
    found
}

/// The state letter of `pid`, if it exists.
pub fn state_of(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().next()?.chars().next()
}

/// The parent of `pid`, if it exists.
pub fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

/// Live processes whose environment holds `STIGMER_HOME=home`: everything
/// a test's stigmer started, wherever it was reparented.
pub fn processes_of_home(home: &Path) -> Vec<u32> {
    let needle = format!("STIGMER_HOME={}", home.display());
    let me = std::process::id();
    all_processes()
        .into_iter()
        .filter(|p| p.0 != me && p.2 != 'Z')
        .filter(|p| {
            std::fs::read(format!("/proc/{}/environ", p.0))
                .is_ok_and(|e| e.split(|b| *b == 0).any(|v| v == needle.as_bytes()))
        })
        .map(|p| p.0)
        .collect()
}

impl Drop for TestEnv {
    /// Whatever a test started and left running (it failed, or leaked),
    /// found by its `STIGMER_HOME`, is killed, so no test leaves a process
    /// behind. Tests check for leaks themselves before this runs.
    fn drop(&mut self) {
        for _ in 0..50 {
            let left = processes_of_home(&self.home);
            if left.is_empty() {
                return;
            }
            for pid in left {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

/// Waits until `pred` holds, polling; panics with `what` after `secs`.
#[track_caller]
pub fn wait_until(secs: u64, what: impl Fn() -> String, mut pred: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !pred() {
        if std::time::Instant::now() > deadline {
            panic!("not within {secs}s: {}", what());
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Waits until exactly `n` live processes have `marker` in their command
/// line (a process just spawned shows its new command line only once its
/// exec is complete), and returns them.
#[track_caller]
pub fn wait_processes(marker: &str, n: usize, secs: u64) -> Vec<(u32, String)> {
    let live = || -> Vec<(u32, String)> {
        processes_with(marker).into_iter().filter(|p| state_of(p.0) != Some('Z')).collect()
    };
    wait_until(
        secs,
        || format!("{n} processes with {marker:?}: {:#?}", live()),
        || live().len() == n,
    );
    live()
}

/// A running `stigmer server` whose output is collected line by line. The
/// pid is the guard's, the process the user starts; its one child is the
/// supervisor, parent of the services.
pub struct Server {
    pub child: ChildGuard,
    pub stdout: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    pub stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl TestEnv {
    /// Writes `manifest` and starts `stigmer server --config` on it, through
    /// `wrapper` (e.g. `unshare ...`) if one is given.
    pub fn server(&self, manifest: &str, wrapper: &[&str], extra: &[&str]) -> Server {
        let path = self.dir.path().join("services.toml");
        std::fs::write(&path, manifest).unwrap();
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(stigmer_bin());
                c
            }
            None => Command::new(stigmer_bin()),
        };
        cmd.arg("server").arg("--config").arg(&path).args(extra);
        cmd.env("STIGMER_HOME", &self.home).env_remove("RUST_LOG").env_remove("NO_COLOR");
        Server::spawn(&mut cmd)
    }
}

impl Server {
    /// Starts `cmd` (a `stigmer server` command line, maybe wrapped),
    /// collecting its stdout and stderr line by line. The child is killed
    /// with all its descendants if the `Server` is dropped while it runs.
    pub fn spawn(cmd: &mut Command) -> Server {
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = ChildGuard(cmd.spawn().unwrap());
        let collect = |pipe: Box<dyn std::io::Read + Send>| {
            let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let sink = std::sync::Arc::clone(&lines);
            let handle = std::thread::spawn(move || {
                use std::io::BufRead as _;
                for line in std::io::BufReader::new(pipe).split(b'\n') {
                    let Ok(line) = line else { break };
                    sink.lock().unwrap().push(String::from_utf8_lossy(&line).into_owned());
                }
            });
            (lines, handle)
        };
        let (stdout, a) = collect(Box::new(child.stdout.take().unwrap()));
        let (stderr, b) = collect(Box::new(child.stderr.take().unwrap()));
        Server { child, stdout, stderr, readers: vec![a, b] }
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.id() as i32)
    }

    /// The pid of the service `name` once the server said it started it.
    pub fn service_pid(&self, name: &str, secs: u64) -> u32 {
        let said = format!("{name}: started (pid ");
        self.wait_stderr(&said, secs);
        let lines = self.stderr.lock().unwrap();
        let line = lines.iter().find(|l| l.contains(&said)).unwrap();
        let after = line.split(&said).nth(1).unwrap();
        after.split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
    }

    /// Waits until a stderr line contains `text`; panics with everything
    /// seen after `secs` seconds.
    #[track_caller]
    pub fn wait_stderr(&self, text: &str, secs: u64) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        while !self.stderr.lock().unwrap().iter().any(|l| l.contains(text)) {
            if std::time::Instant::now() > deadline {
                panic!(
                    "no {text:?} on stderr within {secs}s:\n{}",
                    self.stderr.lock().unwrap().join("\n")
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Waits until `pred` holds for the stdout lines.
    #[track_caller]
    pub fn wait_stdout(&self, secs: u64, pred: impl Fn(&[String]) -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        while !pred(&self.stdout.lock().unwrap()) {
            if std::time::Instant::now() > deadline {
                panic!(
                    "stdout never matched within {secs}s; stderr:\n{}",
                    self.stderr.lock().unwrap().join("\n")
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(self.pid(), sig).unwrap();
    }

    /// The supervisor: the guard's one child.
    #[track_caller]
    pub fn supervisor(&self) -> u32 {
        let guard = self.child.id();
        let what = || format!("the guard {guard} has one child: {:?}", children_of(guard));
        wait_until(5, what, || children_of(guard).len() == 1);
        children_of(guard)[0].0
    }

    /// Waits for the server to exit (at most `secs`), returning its status;
    /// its output stays readable.
    #[track_caller]
    pub fn wait_exit(&mut self, secs: u64) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if std::time::Instant::now() > deadline {
                panic!(
                    "server still running after {secs}s:\n{}",
                    self.stderr.lock().unwrap().join("\n")
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Waits for the server to exit (at most `secs`), returning its status
    /// and its stdout and stderr lines.
    #[track_caller]
    pub fn finish(mut self, secs: u64) -> (std::process::ExitStatus, Vec<String>, Vec<String>) {
        let status = self.wait_exit(secs);
        // The output ends when the last process holding it (the supervisor,
        // a service) is gone: bounded too, so a leak fails the test instead
        // of hanging it.
        let readers = std::mem::take(&mut self.readers);
        let what = || "stdout or stderr still open after the server exited".to_owned();
        wait_until(secs, what, || readers.iter().all(|r| r.is_finished()));
        for r in readers {
            r.join().unwrap();
        }
        let out = std::mem::take(&mut *self.stdout.lock().unwrap());
        let err = std::mem::take(&mut *self.stderr.lock().unwrap());
        (status, out, err)
    }
}

/// The pids of live processes whose command line contains `marker`.
pub fn processes_with(marker: &str) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { continue };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(marker) {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            found.push((pid, format!("{cmdline} [{state}]")));
        }
    }
    found
}

/// `(pid, state)` of every child of `ppid`.
pub fn children_of(ppid: u32) -> Vec<(u32, char)> {
    all_processes().into_iter().filter(|p| p.1 == ppid).map(|p| (p.0, p.2)).collect()
}

/// Runs stigmer with `args` in a new PID namespace whose `vm.memfd_noexec`
/// is `value` (a child namespace can tighten it, never loosen it), and
/// checks that the host's value was left alone.
pub fn with_memfd_noexec(env: &TestEnv, value: u8, args: &[&str]) -> std::process::Output {
    let script = format!("echo {value} > /proc/sys/vm/memfd_noexec && exec \"$0\" \"$@\"");
    let out = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "sh", "-c", &script])
        .arg(stigmer_bin())
        .args(args)
        .env("STIGMER_HOME", &env.home)
        .env_remove("STIGMER_BACKEND")
        .output()
        .unwrap();
    assert_eq!(
        std::fs::read_to_string("/proc/sys/vm/memfd_noexec").unwrap().trim(),
        "0",
        "host sysctl changed"
    );
    out
}

/// Whether [`with_memfd_noexec`] can run here.
pub fn can_set_memfd_noexec() -> bool {
    is_root()
        && have("unshare")
        && std::fs::read_to_string("/proc/sys/vm/memfd_noexec").is_ok_and(|v| v.trim() == "0")
}

/// A marker to find one test's processes in the process table: put it in
/// a service's arguments.
pub fn test_marker(test: &str) -> String {
    format!("marker-{test}-{}", std::process::id())
}

/// Asserts that no process has `marker` in its command line (the kernel
/// may take a moment to tear down a killed group).
#[track_caller]
pub fn assert_no_process_with(marker: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let left = processes_with(marker);
        if left.is_empty() {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "processes left behind: {left:#?}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The index of the first of `lines` that contains `text`; panics with
/// all of them if none does.
#[track_caller]
pub fn line_index(lines: &[String], text: &str) -> usize {
    lines
        .iter()
        .position(|l| l.contains(text))
        .unwrap_or_else(|| panic!("no {text:?} in:\n{}", lines.join("\n")))
}

/// The folder of the tests that build stigmer again with other payloads
/// (`target/payload-tests`): the second build's target folder is here, so it
/// never replaces the binary the other tests run.
pub fn payload_tests_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/payload-tests");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `cargo build` of the stigmer binary with `STIGMER_PAYLOAD_DIR=dir`; the
/// binary is copied beside `dir`, so another test's build cannot replace it.
pub fn build_with(dir: &Path) -> (Output, PathBuf) {
    // Tests in one file share one target folder: one build at a time (cargo
    // itself locks it between test files).
    static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target = payload_tests_dir().join("target");
    // The custom build stores payloads the way this test build does.
    let features: &[&str] =
        if cfg!(feature = "compress") { &["--features", "compress"] } else { &[] };
    // For the target this test was built for (a musl test run builds musl).
    let triple = stigmer_payloads::TARGET;
    let o = Command::new(cargo)
        .args(["build", "--offline", "--bin", "stigmer", "--target", triple])
        .args(features)
        .arg("--manifest-path")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        .env("STIGMER_PAYLOAD_DIR", dir)
        .output()
        .unwrap();
    let copy = dir.with_file_name("stigmer");
    if o.status.success() {
        std::fs::copy(target.join(triple).join("debug/stigmer"), &copy).unwrap();
    }
    (o, copy)
}
