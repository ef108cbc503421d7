//! Launch speed: stigmer's memfd launch against the alternatives, on
//! payloads of 5 MB and 60 MB that exit at once.
//!
//! Run: `cargo bench --bench launch`
//!
//! Setup (not timed) builds a release stigmer that embeds four payloads,
//! each the demo `probe` followed by padding: `rand-5m` and `rand-60m`
//! (incompressible noise) and `code-5m` and `code-60m` (bytes of real
//! executables from `/usr`, as compressible as a Go binary). Then, per
//! payload, with a warm page cache:
//!
//! 1. `direct`: exec of the same file from disk (the floor);
//! 2. `stigmer-memfd`: `stigmer --backend memfd run NAME --quiet`;
//!    `2b-stigmer-mapped`: the same with `--backend mapped` (segments mapped
//!    from stigmer's file); `2c-stigmer-auto`: `stigmer run NAME --quiet`,
//!    the default (mapped, and no command-line parsing);
//! 3. `naive-memfd`: what go-memexec and the memfd-exec crate do:
//!    `memfd_create`, `write()` from a heap buffer, no seals, exec;
//! 4. `extract`: write a temp file on disk, chmod, exec, unlink (PyInstaller
//!    one-file's way);
//! 5. `stigmer-cache-cold` / `stigmer-cache-warm`: `stigmer --backend cache
//!    run` with an empty cache, and with a filled one (sha256 check);
//! 6. `stigmer-memfd-zstd`: `stigmer run NAME --quiet` from a build with
//!    the `compress` feature (decompressed into the memfd);
//! 7. `bare-memfd`: `memfd_create` + `sendfile` from the file + seals +
//!    exec, written here: stigmer's own overhead is the difference;
//! 8. `sha256-only`: hashing the payload file (read once through a
//!    page-aligned 128 KiB buffer, sha2 with the CPU's SHA extensions), the
//!    floor for the warm cache;
//! 9. `second-spawn`: spawning a payload again from the memfd a library
//!    [`Launcher`](stigmer::Launcher) already filled (what `stigmer server`
//!    does on a restart): the cost of the exec alone, against `direct`.
//!
//! Setup also prints, per payload: the size of both stigmer binaries and of
//! the payloads; the peak RSS of a `stigmer run` process (launcher and
//! payload together, as the kernel's `ru_maxrss` keeps the larger across the
//! exec; the payload alone is printed beside it); and the Shmem a running
//! payload holds (`/proc/meminfo`, while it sleeps); and, launched directly,
//! from a memfd and mapped: the RSS and PSS of one running instance, and
//! for 20 instances at once the sum of their PSS and the Shmem they pin.
//!
//! Every variant includes one spawn and exec of the payload; the stigmer
//! variants also exec stigmer itself first.

use std::fs;
use std::io::Write as _;
use std::os::fd::{AsFd as _, AsRawFd as _, OwnedFd};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group};
use rustix::fs::{MemfdFlags, SealFlags};
use stigmer::{Backend, Choice, Launch as _, Launcher, Payload};

const MB: usize = 1 << 20;

/// `len` bytes no compressor can shrink (xorshift64).
fn noise(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    (0..len.div_ceil(8))
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .take(len)
        .collect()
}

/// `len` bytes of real executables, the largest files of `/usr/bin` and
/// `/usr/lib` in a fixed order, as padding that compresses like code.
fn code(len: usize) -> Vec<u8> {
    let mut files: Vec<(u64, PathBuf)> =
        ["/usr/bin", "/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu"]
            .iter()
            .flat_map(|d| fs::read_dir(d).into_iter().flatten().flatten())
            .filter_map(|e| Some((e.metadata().ok().filter(|m| m.is_file())?.len(), e.path())))
            .collect();
    files.sort_by(|a, b| b.cmp(a));
    let mut out = Vec::with_capacity(len);
    for (_, path) in files {
        if out.len() >= len {
            break;
        }
        if let Ok(bytes) = fs::read(&path) {
            if bytes.starts_with(b"\x7fELF") {
                out.extend_from_slice(&bytes);
            }
        }
    }
    out.resize(len, 0);
    out
}

struct Setup {
    dir: tempfile::TempDir,
    stigmer: PathBuf,
    stigmer_zstd: PathBuf,
    payloads: Vec<(String, PathBuf, Vec<u8>)>,
}

/// A release stigmer embedding `payload_dir`, copied to `to`.
fn build(payload_dir: &Path, features: &[&str], target: &str, to: &Path) {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join(target);
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["build", "--release", "--offline", "--bin", "stigmer"])
        .args(features)
        .arg("--manifest-path")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        .env("STIGMER_PAYLOAD_DIR", payload_dir)
        .status()
        .unwrap();
    assert!(status.success(), "building stigmer with the bench payloads failed");
    fs::copy(target.join("release/stigmer"), to).unwrap();
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let payload_dir = dir.path().join("payloads");
    fs::create_dir(&payload_dir).unwrap();
    let probe = probe_bytes(dir.path());
    let mut payloads = Vec::new();
    for (name, padding) in [
        ("rand-5m", noise(5 * MB)),
        ("code-5m", code(5 * MB)),
        ("rand-60m", noise(60 * MB)),
        ("code-60m", code(60 * MB)),
    ] {
        let mut bytes = probe.clone();
        bytes.extend_from_slice(&padding[..padding.len() - probe.len()]);
        let path = payload_dir.join(name);
        fs::write(&path, &bytes).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        payloads.push((name.to_owned(), path, bytes));
    }
    let stigmer = dir.path().join("stigmer");
    build(&payload_dir, &[], "bench-launch", &stigmer);
    let stigmer_zstd = dir.path().join("stigmer-zstd");
    build(&payload_dir, &["--features", "compress"], "bench-launch-zstd", &stigmer_zstd);
    let size = |p: &Path| fs::metadata(p).unwrap().len();
    let mut sum = 0;
    for (name, path, _) in &payloads {
        sum += size(path);
        eprintln!("payload {name}: {} bytes", size(path));
    }
    eprintln!("payloads, sum: {sum} bytes");
    for (what, bin) in [("stigmer", &stigmer), ("stigmer --features compress", &stigmer_zstd)] {
        let n = size(bin);
        eprintln!("{what}: {n} bytes ({:.1}% of the payload sum)", 100.0 * n as f64 / sum as f64);
    }
    let s = Setup { dir, stigmer, stigmer_zstd, payloads };
    memory(&s);
    ram(&s);
    s
}

/// Set to make this bench binary run the command after `--`, wait for it,
/// and print its peak RSS: a fresh parent, so `RUSAGE_CHILDREN` sees that
/// command alone.
const MAXRSS: &str = "STIGMER_BENCH_MAXRSS";

/// The peak RSS of `cmd` (and of what it execs), in KiB.
fn max_rss_kib(cmd: &Command) -> u64 {
    let out = Command::new(std::env::current_exe().unwrap())
        .env(MAXRSS, "1")
        .envs(cmd.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .arg("--")
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .arg("--quiet")
        .output()
        .unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().parse().unwrap()
}

/// `Shmem:` of `/proc/meminfo`, in KiB.
fn shmem_kib() -> u64 {
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap();
    let line = meminfo.lines().find_map(|l| l.strip_prefix("Shmem:")).unwrap();
    line.trim().trim_end_matches("kB").trim().parse().unwrap()
}

/// How much more Shmem the system holds while `cmd` runs (median of 5).
fn shmem_held_kib(cmd: &mut Command) -> i64 {
    let mut deltas: Vec<i64> = (0..5)
        .map(|_| {
            let before = shmem_kib() as i64;
            let mut child =
                cmd.args(["--quiet", "--sleep", "600"]).stdout(Stdio::null()).spawn().unwrap();
            std::thread::sleep(Duration::from_millis(400));
            let during = shmem_kib() as i64;
            assert!(child.wait().unwrap().success());
            during - before
        })
        .collect();
    deltas.sort();
    deltas[2]
}

/// Prints the peak RSS and the Shmem of each way to launch each payload.
fn memory(s: &Setup) {
    let home = s.dir.path().join("memory-home");
    let stigmer = |bin: &Path, backend: &str, name: &str| {
        let mut cmd = Command::new(bin);
        cmd.env("STIGMER_HOME", &home).args(["--backend", backend, "run", name]);
        cmd
    };
    for (name, path, _) in &s.payloads {
        // Fill the cache first, so the cache rows are warm launches.
        run(&mut stigmer(&s.stigmer, "cache", name));
        let rows = [
            ("direct exec of the payload", Command::new(path)),
            ("stigmer run (memfd)", stigmer(&s.stigmer, "memfd", name)),
            ("stigmer run (mapped)", stigmer(&s.stigmer, "mapped", name)),
            ("stigmer run (memfd, compressed build)", stigmer(&s.stigmer_zstd, "memfd", name)),
            ("stigmer run (cache, warm)", stigmer(&s.stigmer, "cache", name)),
        ];
        for (what, cmd) in rows {
            let rss = max_rss_kib(&cmd);
            let mut cmd = cmd;
            let shmem = shmem_held_kib(&mut cmd);
            eprintln!("{name}: {what}: peak RSS {rss} KiB, Shmem held while it runs {shmem} KiB");
        }
    }
}

/// `Rss:`, `Pss:` and `Shmem` (`Pss_Shmem:`) of a live process, in KiB,
/// from `/proc/PID/smaps_rollup`.
fn footprint_kib(pid: u32) -> (u64, u64, u64) {
    let rollup = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
    let field = |key: &str| -> u64 {
        rollup
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().trim_end_matches("kB").trim().parse().unwrap())
            .unwrap_or(0)
    };
    (field("Rss:"), field("Pss:"), field("Pss_Shmem:"))
}

/// Starts `n` copies of `cmd` that sleep, waits until each has become the
/// payload (its `comm` no longer stigmer's), and returns them.
fn sleepers(cmd: &dyn Fn() -> Command, n: usize) -> Vec<std::process::Child> {
    let children: Vec<_> = (0..n)
        .map(|_| cmd().args(["--quiet", "--sleep", "3000"]).stdout(Stdio::null()).spawn().unwrap())
        .collect();
    for child in &children {
        let deadline = Instant::now() + Duration::from_secs(10);
        while fs::read_to_string(format!("/proc/{}/comm", child.id()))
            .is_ok_and(|c| c.trim() == "stigmer")
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    // Let each get past its start.
    std::thread::sleep(Duration::from_millis(300));
    children
}

/// Makes the command of one way to launch a payload.
type Launch = dyn Fn() -> Command;

/// The RAM a payload costs running, launched each way: RSS and PSS of one
/// instance, and, for 20 at once, the sum of their PSS and how much more
/// Shmem the system holds (the memfd copies).
fn ram(s: &Setup) {
    let home = s.dir.path().join("ram-home");
    for (name, path, _) in &s.payloads {
        let stigmer = |backend: &'static str| {
            let (bin, home, name) = (s.stigmer.clone(), home.clone(), name.clone());
            move || {
                let mut cmd = Command::new(&bin);
                cmd.env("STIGMER_HOME", &home).args(["--backend", backend, "run", &name]);
                cmd
            }
        };
        let direct = {
            let path = path.clone();
            move || Command::new(&path)
        };
        let rows: [(&str, Box<Launch>); 3] = [
            ("direct", Box::new(direct)),
            ("memfd", Box::new(stigmer("memfd"))),
            ("mapped", Box::new(stigmer("mapped"))),
        ];
        for (what, cmd) in rows {
            let mut one = sleepers(&*cmd, 1);
            let (rss, pss, pss_shmem) = footprint_kib(one[0].id());
            for c in &mut one {
                c.wait().unwrap();
            }
            let before = shmem_kib() as i64;
            let mut many = sleepers(&*cmd, 20);
            let during = shmem_kib() as i64;
            let pss_sum: u64 = many.iter().map(|c| footprint_kib(c.id()).1).sum();
            for c in &mut many {
                assert!(c.wait().unwrap().success());
            }
            eprintln!(
                "{name}: {what}: one: RSS {rss} KiB, PSS {pss} KiB (of it shmem {pss_shmem} KiB); \
                 20 at once: PSS sum {pss_sum} KiB, Shmem +{} KiB",
                during - before
            );
        }
    }
}

/// The second and later spawns of a payload whose memfd a launcher filled.
fn second_spawn(c: &mut Criterion, s: &Setup) {
    let mut group = c.benchmark_group("launch");
    group.sample_size(30).warm_up_time(Duration::from_secs(1));
    let launcher = Launcher::new(Choice::Only(Backend::Memfd), Some(s.dir.path().join("lib")));
    for (name, _, bytes) in &s.payloads {
        let payload = Payload::from_bytes(name.clone(), bytes.clone());
        launcher.prepare(&payload).unwrap();
        group.bench_function(BenchmarkId::new("9-second-spawn", name), |b| {
            b.iter(|| run(&mut launcher.prepare(&payload).unwrap().command()))
        });
    }
    group.finish();
}

/// The demo probe, as the stigmer under bench embeds it.
fn probe_bytes(tmp: &Path) -> Vec<u8> {
    let home = tmp.join("probe-home");
    let status = Command::new(env!("CARGO_BIN_EXE_stigmer"))
        .args(["--backend", "cache", "run", "probe", "--quiet"])
        .env("STIGMER_HOME", &home)
        .status()
        .unwrap();
    assert!(status.success());
    let dir = fs::read_dir(home.join("bin/v1")).unwrap().flatten().next().unwrap().path();
    fs::read(dir.join("probe")).unwrap()
}

fn run(cmd: &mut Command) {
    let status = cmd.arg("--quiet").stdout(Stdio::null()).status().unwrap();
    assert!(status.success(), "{cmd:?}: {status}");
}

fn memfd(name: &str) -> OwnedFd {
    rustix::fs::memfd_create(
        name,
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING | MemfdFlags::EXEC,
    )
    .or_else(|_| rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING))
    .unwrap()
}

fn exec_fd(fd: &OwnedFd) {
    run(&mut Command::new(format!("/proc/self/fd/{}", fd.as_raw_fd())));
}

/// A page-aligned copy of `bytes` on the heap: the best case for a
/// baseline that writes from a buffer (the kernel copies from a buffer
/// aligned like its pages 4-5x faster than from malloc's usual page + 16
/// bytes, on this machine; see `src/launch/buf.rs`).
fn heap_copy(bytes: &[u8], raw: &mut Vec<u8>) -> std::ops::Range<usize> {
    let range = aligned(bytes.len(), raw);
    raw[range.clone()].copy_from_slice(bytes);
    range
}

/// Makes `raw` hold a page-aligned range of `len` zeroes, and returns it.
fn aligned(len: usize, raw: &mut Vec<u8>) -> std::ops::Range<usize> {
    raw.clear();
    raw.resize(len + 4096, 0);
    let start = (4096 - raw.as_ptr().addr() % 4096) % 4096;
    start..start + len
}

/// What go-memexec and the memfd-exec crate do.
fn naive_memfd(bytes: &[u8]) {
    let mut heap = Vec::new();
    let range = heap_copy(bytes, &mut heap);
    let fd = rustix::fs::memfd_create("naive", MemfdFlags::CLOEXEC).unwrap();
    let mut file = fs::File::from(fd);
    file.write_all(&heap[range]).unwrap();
    exec_fd(&OwnedFd::from(file));
}

/// memfd_create + sendfile + seals + exec, with nothing else.
fn bare_memfd(path: &Path, len: usize) {
    let fd = memfd("bare");
    let file = fs::File::open(path).unwrap();
    let mut offset = 0u64;
    while (offset as usize) < len {
        let left = len - offset as usize;
        rustix::fs::sendfile(fd.as_fd(), &file, Some(&mut offset), left).unwrap();
    }
    let _ = rustix::fs::fcntl_add_seals(&fd, SealFlags::EXEC);
    rustix::fs::fcntl_add_seals(
        &fd,
        SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE | SealFlags::SEAL,
    )
    .unwrap();
    exec_fd(&fd);
}

fn extract(dir: &Path, bytes: &[u8]) {
    let mut heap = Vec::new();
    let range = heap_copy(bytes, &mut heap);
    let path = dir.join("extracted");
    let mut file = fs::File::create(&path).unwrap();
    file.write_all(&heap[range]).unwrap();
    drop(file);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    run(&mut Command::new(&path));
    fs::remove_file(&path).unwrap();
}

fn launch(c: &mut Criterion) {
    let s = setup();
    second_spawn(c, &s);
    let mut group = c.benchmark_group("launch");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6));
    let with = |bin: &Path, home: &Path| {
        let mut cmd = Command::new(bin);
        cmd.env("STIGMER_HOME", home).env_remove("STIGMER_BACKEND");
        cmd
    };
    let stigmer = |home: &Path| with(&s.stigmer, home);
    for (name, path, bytes) in &s.payloads {
        let id = |what: &str| BenchmarkId::new(what, name);
        group.bench_function(id("1-direct"), |b| b.iter(|| run(&mut Command::new(path))));
        let home = s.dir.path().join("home");
        group.bench_function(id("2-stigmer-memfd"), |b| {
            b.iter(|| run(stigmer(&home).args(["--backend", "memfd", "run", name])))
        });
        group.bench_function(id("2b-stigmer-mapped"), |b| {
            b.iter(|| run(stigmer(&home).args(["--backend", "mapped", "run", name])))
        });
        // What a user gets: no option, so no command-line parser either.
        group.bench_function(id("2c-stigmer-auto"), |b| {
            b.iter(|| run(stigmer(&home).args(["run", name])))
        });
        group.bench_function(id("3-naive-memfd"), |b| b.iter(|| naive_memfd(bytes)));
        group.bench_function(id("4-extract"), |b| b.iter(|| extract(s.dir.path(), bytes)));
        group.bench_function(id("5a-stigmer-cache-cold"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let cold = s.dir.path().join("cold");
                    let _ = fs::remove_dir_all(&cold);
                    let t = Instant::now();
                    run(stigmer(&cold).args(["--backend", "cache", "run", name]));
                    total += t.elapsed();
                }
                total
            })
        });
        let warm = s.dir.path().join("warm");
        run(stigmer(&warm).args(["--backend", "cache", "run", name]));
        group.bench_function(id("5b-stigmer-cache-warm"), |b| {
            b.iter(|| run(stigmer(&warm).args(["--backend", "cache", "run", name])))
        });
        group.bench_function(id("6-stigmer-memfd-zstd"), |b| {
            b.iter(|| run(with(&s.stigmer_zstd, &home).args(["--backend", "memfd", "run", name])))
        });
        group.bench_function(id("7-bare-memfd"), |b| b.iter(|| bare_memfd(path, bytes.len())));
        group.bench_function(id("8-sha256-only"), |b| {
            b.iter(|| {
                use sha2::Digest as _;
                use std::io::Read as _;
                let mut file = fs::File::open(path).unwrap();
                let mut hasher = sha2::Sha256::new();
                let mut raw = Vec::new();
                let range = aligned(128 * 1024, &mut raw);
                let buf = &mut raw[range];
                loop {
                    match file.read(buf).unwrap() {
                        0 => break hasher.finalize(),
                        n => hasher.update(&buf[..n]),
                    }
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, launch);

pub(crate) fn main() {
    if std::env::var_os(MAXRSS).is_some() {
        let args: Vec<String> = std::env::args().skip_while(|a| a != "--").skip(1).collect();
        let status =
            Command::new(&args[0]).args(&args[1..]).stdout(Stdio::null()).status().unwrap();
        assert!(status.success(), "{args:?}: {status}");
        let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN);
        println!("{}", usage.unwrap().max_rss());
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
