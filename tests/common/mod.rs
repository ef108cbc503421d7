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

/// The kind of the demo payloads compiled for this platform.
pub const NATIVE_KIND: &str = if cfg!(target_os = "macos") { "mach-o" } else { "elf" };
