//! `stigmer server` start-up against starting the same binaries by hand.
//!
//! Run: `cargo bench --bench server`
//!
//! Both sides start the demo system (stigmer-server, then its two runners
//! once its `/healthz` answers 200) and stop when the last one is running:
//!
//! - `stigmer server`: from exec of stigmer to its "all services running"
//!   line (payloads prepared from memory, readiness polled every 50 ms);
//! - by hand: the same three binaries from files on disk, the same health
//!   check polled every 50 ms, the runners started when it passes.
//!
//! Stopping is not timed. Setup also prints how much Shmem the demo system
//! pins while it runs, from memfds and mapped.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs, clippy::print_stderr)]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};

const STIGMER: &str = env!("CARGO_BIN_EXE_stigmer");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn manifest(port: u16) -> String {
    format!(
        r#"
[services.stigmer-server]
args = ["--port", "{port}"]
ready = {{ http = "http://127.0.0.1:{port}/healthz", timeout = "10s" }}
[services.workflow-runner]
depends_on = ["stigmer-server"]
args = ["--server", "127.0.0.1:{port}"]
[services.activity-runner]
payload = "workflow-runner"
depends_on = ["stigmer-server"]
args = ["--server", "127.0.0.1:{port}", "--queue", "activities"]
"#
    )
}

/// `stigmer [--backend B] server --config CONFIG`, once it said "all
/// services running"; the rest of its stderr.
fn started(
    config: &Path,
    home: &Path,
    backend: Option<&str>,
) -> (Child, std::io::Lines<BufReader<std::process::ChildStderr>>) {
    let mut cmd = Command::new(STIGMER);
    if let Some(backend) = backend {
        cmd.args(["--backend", backend]);
    }
    let mut child = cmd
        .args(["server", "--config"])
        .arg(config)
        .env("STIGMER_HOME", home)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    while !lines.next().expect("server ended early").unwrap().contains("all services running") {}
    (child, lines)
}

/// One start of `stigmer server`, timed to its "all services running".
fn stigmer_once(config: &Path, home: &Path) -> Duration {
    let start = Instant::now();
    let (mut child, lines) = started(config, home, None);
    let took = start.elapsed();
    stop(&mut child, Some(lines));
    took
}

fn stop(child: &mut Child, drain: Option<std::io::Lines<BufReader<std::process::ChildStderr>>>) {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    if let Some(lines) = drain {
        for _ in lines {}
    }
    child.wait().unwrap();
}

fn healthy(port: u16) -> bool {
    let Ok(mut conn) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = write!(conn, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut head = [0; 12];
    conn.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 2")
}

/// One start of the same binaries from files, timed the same way.
fn by_hand_once(bin: &Path, port: u16) -> Duration {
    let start = Instant::now();
    let spawn = |name: &str, args: &[&str]| {
        Command::new(bin.join(name))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let p = port.to_string();
    let addr = format!("127.0.0.1:{port}");
    let mut server = spawn("stigmer-server", &["--port", &p]);
    while !healthy(port) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut a = spawn("workflow-runner", &["--server", &addr]);
    let mut b = spawn("workflow-runner", &["--server", &addr, "--queue", "activities"]);
    let took = start.elapsed();
    for c in [&mut a, &mut b, &mut server] {
        c.kill().unwrap();
        c.wait().unwrap();
    }
    took
}

/// The demo payloads as files, taken from a cache filled by stigmer itself.
fn payload_files(home: &Path) -> PathBuf {
    let bin = home.join("plain");
    std::fs::create_dir_all(&bin).unwrap();
    for name in ["stigmer-server", "workflow-runner"] {
        let status = Command::new(STIGMER)
            .args(["--backend", "cache", "run", name, "--help"])
            .env("STIGMER_HOME", home)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        let entry = std::fs::read_dir(home.join("bin/v1"))
            .unwrap()
            .flatten()
            .map(|d| d.path().join(name))
            .find(|p| p.exists())
            .unwrap();
        std::fs::copy(entry, bin.join(name)).unwrap();
    }
    bin
}

/// `Shmem:` of `/proc/meminfo`, in KiB.
fn shmem_kib() -> i64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let line = meminfo.lines().find_map(|l| l.strip_prefix("Shmem:")).unwrap();
    line.trim().trim_end_matches("kB").trim().parse().unwrap()
}

/// How much more Shmem the system holds while the demo system runs under
/// `stigmer --backend BACKEND server` (median of 5), printed on stderr.
fn server_shmem(dir: &Path, home: &Path) {
    for backend in ["memfd", "mapped"] {
        let mut deltas: Vec<i64> = (0..5)
            .map(|_| {
                let config = dir.join("services.toml");
                std::fs::write(&config, manifest(free_port())).unwrap();
                let before = shmem_kib();
                let (mut child, lines) = started(&config, home, Some(backend));
                std::thread::sleep(Duration::from_millis(300));
                let during = shmem_kib();
                stop(&mut child, Some(lines));
                during - before
            })
            .collect();
        deltas.sort_unstable();
        eprintln!("demo system under stigmer --backend {backend} server: Shmem +{} KiB", deltas[2]);
    }
}

fn server_start(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let bin = payload_files(&home);
    server_shmem(dir.path(), &home);
    let mut group = c.benchmark_group("demo system start");
    group.sample_size(30).measurement_time(Duration::from_secs(10));
    group.bench_function("stigmer server", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let config = dir.path().join("services.toml");
                    std::fs::write(&config, manifest(free_port())).unwrap();
                    stigmer_once(&config, &home)
                })
                .sum()
        })
    });
    group.bench_function("by hand from files", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| by_hand_once(&bin, free_port())).sum())
    });
    group.finish();
}

criterion_group!(benches, server_start);
criterion_main!(benches);
