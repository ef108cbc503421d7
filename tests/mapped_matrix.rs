//! The compatibility matrix of the launch backends: one real program per
//! class of executable, each run under every backend of [`BACKENDS`] and
//! checked for what it printed, its exit status, a signal, its mappings and
//! its shared memory.
//!
//! `tests/matrix/build.sh` builds the rows from the sources beside it (and
//! copies in a Debian-built Go service) into `target/matrix-tests/payloads`,
//! with a `services.toml`; stigmer is built again with that folder as its
//! payloads ([`build_with`]). Each row test prints nothing but writes what
//! it saw (what the text is mapped from, `RssShmem`, the re-exec'd child's
//! executable) to `target/matrix-tests/record/ROW.txt`.
//!
//! | row | what it is |
//! |---|---|
//! | `go-static` | Go, `CGO_ENABLED=0`: static, no PT_INTERP |
//! | `go-debian` | nats-server from Debian: Go linked against glibc (PT_INTERP) |
//! | `c-threads` | C, glibc, the compiler's default (PIE), pthreads and `__thread` |
//! | `musl-static` | the same C, `musl-gcc -static` |
//! | `rust` | `rustc` alone: PIE, dynamic glibc, `thread_local!` |
//! | `c-pie`, `c-nopie` | the C with `-fPIE -pie` and `-fno-PIE -no-pie` |
//! | `c-static`, `c-static-pie` | the C with glibc's `-static` and `-static-pie` |
//! | `go-reexec` | Go, re-execs itself through `/proc/self/exe` |
//! | `c-loader-xo` | the C, its loader a copy of the system's that only root may read (mode 0111) |
//!
//! A backend joins the matrix by its name in [`BACKENDS`]; what it should
//! show is its row of [`EXPECT`] (`mapped` has one already).
#![cfg(target_os = "linux")]

mod common;

use std::fs;
use std::io::{BufRead as _, Write as _};
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::OnceLock;

use common::*;
use nix::sys::signal::Signal;

/// The backends every row runs under.
const BACKENDS: &[&str] = &["memfd", "cache", "mapped"];

/// What a backend shows a payload, one row per backend.
const EXPECT: &[Expect] = &[
    Expect { backend: "memfd", exe: Exe::Memfd, shmem: Shmem::AboveZero, reexec: Reexec::SameFile },
    Expect {
        backend: "cache",
        exe: Exe::CacheEntry,
        shmem: Shmem::AsTheHome,
        reexec: Reexec::SameFile,
    },
    // Its segments are private mappings of stigmer's own file, so no page
    // is shared memory.
    Expect {
        backend: "mapped",
        exe: Exe::Stigmer,
        shmem: Shmem::Zero,
        reexec: Reexec::ThroughStigmer,
    },
];

struct Expect {
    backend: &'static str,
    /// What `/proc/self/exe` names, and so the file the program's text
    /// (the mapping holding its `main`) is mapped from.
    exe: Exe,
    /// The process's `RssShmem` in `/proc/PID/status`.
    shmem: Shmem,
    /// What a child the payload starts through `/proc/self/exe` is.
    reexec: Reexec,
}

#[derive(Debug)]
enum Exe {
    /// `/memfd:NAME (deleted)`: the sealed memfd the kernel exec'd.
    Memfd,
    /// The verified entry `$STIGMER_HOME/bin/v1/<sha256>/NAME`.
    CacheEntry,
    /// stigmer's own executable: a userland loader maps the payload's
    /// segments from it, and the kernel's link names what it exec'd.
    Stigmer,
}

#[derive(Debug)]
enum Shmem {
    /// A memfd's pages are shared memory (shmem), counted in `RssShmem`.
    AboveZero,
    Zero,
    /// Like `Zero`, unless `STIGMER_HOME` is on a tmpfs, whose files are
    /// shmem too.
    AsTheHome,
}

#[derive(Debug, PartialEq, Eq)]
enum Reexec {
    /// The kernel runs the file it exec'd again (the sealed memfd, the
    /// cache entry): the child's argv is as given (`/proc/self/exe child`)
    /// and its `/proc/self/exe` is the parent's.
    SameFile,
    /// `/proc/self/exe` is stigmer, which sees the `STIGMER_MAPPED` it put
    /// in the payload's environment and runs that payload again as `stigmer
    /// run` would, with the argv it was given (`/proc/self/exe child`, as
    /// execve keeps it); the backend is `STIGMER_BACKEND`'s (auto here), so
    /// the child's executable is recorded, not compared.
    ThroughStigmer,
}

#[track_caller]
fn expect(backend: &str) -> &'static Expect {
    EXPECT
        .iter()
        .find(|e| e.backend == backend)
        .unwrap_or_else(|| panic!("backend {backend} has no row in EXPECT"))
}

/// The built rows and the stigmer that carries them.
struct Matrix {
    payloads: PathBuf,
    stigmer: PathBuf,
    record: PathBuf,
}

fn build_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/matrix/build.sh")
}

/// Whether build.sh finds its tools: the reason if not.
fn tools() -> Result<(), String> {
    static TOOLS: OnceLock<Result<(), String>> = OnceLock::new();
    TOOLS
        .get_or_init(|| {
            let o = Command::new("bash").arg(build_script()).arg("--check").output().unwrap();
            match o.status.success() {
                true => Ok(()),
                false => Err(stderr(&o).trim().to_owned()),
            }
        })
        .clone()
}

/// The rows and their stigmer, built once for all the tests of this file.
fn matrix() -> &'static Matrix {
    static MATRIX: OnceLock<Result<Matrix, String>> = OnceLock::new();
    MATRIX.get_or_init(build).as_ref().unwrap_or_else(|e| panic!("{e}"))
}

fn build() -> Result<Matrix, String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/matrix-tests");
    let payloads = dir.join("payloads");
    let record = dir.join("record");
    for d in [&payloads, &record] {
        if d.exists() {
            fs::remove_dir_all(d).unwrap();
        }
    }
    fs::create_dir_all(&record).unwrap();
    let o = Command::new("bash").arg(build_script()).arg(&payloads).output().unwrap();
    if !o.status.success() {
        return Err(format!("tests/matrix/build.sh failed ({}):\n{}", o.status, stderr(&o)));
    }
    let (o, stigmer) = build_with(&payloads);
    if !o.status.success() {
        return Err(format!("building stigmer with the matrix failed:\n{}", stderr(&o)));
    }
    Ok(Matrix { payloads, stigmer, record })
}

impl Matrix {
    /// `stigmer --backend B ARGS...` with `env`'s home.
    fn stigmer(&self, env: &TestEnv, backend: &str) -> Command {
        let mut cmd = Command::new(&self.stigmer);
        cmd.args(["--backend", backend])
            .env("STIGMER_HOME", &env.home)
            .env_remove("STIGMER_BACKEND")
            .env_remove("RUST_LOG")
            .env_remove("NO_COLOR");
        cmd
    }

    /// `stigmer run ROW ARGS...`, its output collected line by line; the
    /// guard kills it if the test fails first.
    fn start(&self, env: &TestEnv, backend: &str, row: &str, args: &[&str]) -> Server {
        Server::spawn(self.stigmer(env, backend).arg("run").arg(row).args(args))
    }

    /// `stigmer run ROW ARGS...` to its end: its pid (stigmer's, which it
    /// replaced), status, stdout and stderr lines.
    fn run(&self, env: &TestEnv, backend: &str, row: &str, args: &[&str]) -> Ran {
        let run = self.start(env, backend, row, args);
        let pid = run.child.id();
        let (status, out, err) = run.finish(60);
        Ran { pid, status, out, err }
    }

    /// Appends `line` to this row's record.
    fn record(&self, row: &str, line: &str) {
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.record.join(format!("{row}.txt")))
            .unwrap();
        writeln!(f, "{line}").unwrap();
    }
}

struct Ran {
    pid: u32,
    status: ExitStatus,
    out: Vec<String>,
    err: Vec<String>,
}

impl std::fmt::Display for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {}, {}\nstdout:\n{}\nstderr:\n{}",
            self.pid,
            self.status,
            self.out.join("\n"),
            self.err.join("\n")
        )
    }
}

/// Whether `status` says the process died of `sig`. `stigmer run` execs in
/// place, so the status is the kernel's own; a stigmer that waited for the
/// payload instead would exit 128+N, which is the same answer.
fn died_of(status: ExitStatus, sig: Signal) -> bool {
    status.signal() == Some(sig as i32) || status.code() == Some(128 + sig as i32)
}

/// One line of `/proc/PID/maps`.
#[derive(Debug)]
struct Mapping {
    start: u64,
    end: u64,
    perms: String,
    offset: u64,
    path: String,
}

fn parse_maps<'a>(lines: impl IntoIterator<Item = &'a str>) -> Vec<Mapping> {
    let hex = |s: &str| u64::from_str_radix(s, 16).unwrap();
    lines
        .into_iter()
        .map(|line| {
            // The first five fields are one space apart; the path, which may
            // hold spaces ("/memfd:NAME (deleted)"), comes after padding.
            let mut f = line.splitn(6, ' ');
            let (range, perms, offset) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
            let path = f.nth(2).unwrap_or("").trim().to_owned();
            let (start, end) = range.split_once('-').unwrap();
            Mapping {
                start: hex(start),
                end: hex(end),
                perms: perms.to_owned(),
                offset: hex(offset),
                path,
            }
        })
        .collect()
}

/// What a process shows of itself: printed by the row (`maps`) or read
/// from `/proc/PID` by the test.
#[derive(Debug)]
struct Inside {
    /// An address in the program's text (its `main`, or its ELF entry).
    text: u64,
    exe: String,
    maps: Vec<Mapping>,
    shmem_kb: u64,
}

impl Inside {
    /// From the lines of a row's `maps` command.
    fn printed(out: &[String]) -> Inside {
        let field = |key: &str| {
            out.iter()
                .find_map(|l| l.strip_prefix(key))
                .unwrap_or_else(|| panic!("no {key:?} line in:\n{}", out.join("\n")))
        };
        Inside {
            text: u64::from_str_radix(field("text: ").trim_start_matches("0x"), 16).unwrap(),
            exe: field("exe: ").to_owned(),
            maps: parse_maps(out.iter().filter_map(|l| l.strip_prefix("maps: "))),
            shmem_kb: kb(field("status: RssShmem:")),
        }
    }

    /// From `/proc/PID`, with `text` an address of the program's text.
    fn read(pid: u32, text: u64) -> Inside {
        let maps = fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let shmem = status.lines().find_map(|l| l.strip_prefix("RssShmem:")).unwrap();
        Inside {
            text,
            exe: fs::read_link(format!("/proc/{pid}/exe")).unwrap().display().to_string(),
            maps: parse_maps(maps.lines()),
            shmem_kb: kb(shmem),
        }
    }

    /// Checks it against the backend's row of [`EXPECT`] and returns what
    /// to record.
    #[track_caller]
    fn check(&self, m: &Matrix, env: &TestEnv, backend: &str, row: &str) -> String {
        let e = expect(backend);
        let exe_ok = match e.exe {
            Exe::Memfd => self.exe == format!("/memfd:{row} (deleted)"),
            Exe::CacheEntry => {
                env.entries().iter().any(|p| p.ends_with(row) && Path::new(&self.exe) == p)
            }
            Exe::Stigmer => Path::new(&self.exe) == fs::canonicalize(&m.stigmer).unwrap(),
        };
        assert!(exe_ok, "{row} under {backend}: /proc/self/exe is {:?}, not {:?}", self.exe, e.exe);

        let text = self.maps.iter().find(|m| (m.start..m.end).contains(&self.text));
        let text = text.unwrap_or_else(|| {
            panic!("{row} under {backend}: no mapping holds {:#x}: {:#?}", self.text, self.maps)
        });
        assert!(
            text.perms.contains('x') && text.path == self.exe,
            "{row} under {backend}: its text is not an executable mapping of {:?}: {text:?}",
            self.exe
        );

        let on_tmpfs = || {
            let fs = rustix::fs::statfs(&env.home).unwrap();
            fs.f_type as i64 == 0x0102_1994 // TMPFS_MAGIC
        };
        let shmem_ok = match e.shmem {
            Shmem::AboveZero => self.shmem_kb > 0,
            Shmem::Zero => self.shmem_kb == 0,
            Shmem::AsTheHome => (self.shmem_kb > 0) == on_tmpfs(),
        };
        assert!(
            shmem_ok,
            "{row} under {backend}: RssShmem is {} kB, expected {:?}",
            self.shmem_kb, e.shmem
        );
        let from_exe = self.maps.iter().filter(|m| m.path == self.exe).count();
        format!(
            "{backend}: text {:#x} in {} {:x}-{:x} at offset {:#x} of {:?} ({from_exe} mappings \
             of it); RssShmem {} kB",
            self.text, text.perms, text.start, text.end, text.offset, text.path, self.shmem_kb
        )
    }
}

/// The number of kB of a `/proc/PID/status` value ("   123 kB").
fn kb(value: &str) -> u64 {
    value.trim().trim_end_matches("kB").trim().parse().unwrap()
}

/// A row built from tests/matrix/: C, Go or Rust, all taking the same
/// commands (see matrix.c).
fn program(m: &Matrix, row: &str, backend: &str) {
    let env = TestEnv::new();
    let first = |pid: u32, argv: &str| format!("matrix: row={row} pid={pid} argv=[{row} {argv}]");

    // Its argv, as given; threads and TLS; its text, executable, mapped
    // from what the backend exec'd. The pid it prints is the one stigmer
    // was started as: stigmer replaced itself.
    let args = ["-x", "--flag=1", "é", "threads", "maps"];
    let ran = m.run(&env, backend, row, &args);
    assert!(ran.status.success(), "{row} under {backend}: {ran}");
    let want = first(ran.pid, &args.join(" "));
    assert_eq!(ran.out.first(), Some(&want), "{row} under {backend}: {ran}");
    assert!(
        ran.out.iter().any(|l| l == "threads: n=4 sum=5005168 main_tls=42"),
        "{row} under {backend}: {ran}"
    );
    let record = Inside::printed(&ran.out).check(m, &env, backend, row);
    m.record(row, &record);

    // It starts with no handler of stigmer's, and SIGPIPE at its default
    // (std ignores it in stigmer): as started from a shell.
    if row.starts_with("c-") || row == "musl-static" {
        let ran = m.run(&env, backend, row, &["signals"]);
        let line = ran.out.iter().find_map(|l| l.strip_prefix("signals: ")).unwrap_or_default();
        let hex = |key: &str| {
            let v = line.split(' ').find_map(|f| f.strip_prefix(key)).unwrap_or("?");
            u64::from_str_radix(v, 16).unwrap_or_else(|_| panic!("{row} under {backend}: {ran}"))
        };
        assert_eq!(hex("caught="), 0, "{row} under {backend}: {ran}");
        let sigpipe = 1 << (Signal::SIGPIPE as i32 - 1);
        assert_eq!(hex("ignored=") & sigpipe, 0, "{row} under {backend}, SIGPIPE: {ran}");
    }

    // Its exit status is stigmer's.
    let ran = m.run(&env, backend, row, &["exit", "7"]);
    assert_eq!(ran.status.code(), Some(7), "{row} under {backend}: {ran}");
    assert_eq!(ran.out, [first(ran.pid, "exit 7")], "{row} under {backend}: {ran}");

    // A signal sent to the process stigmer started reaches the payload:
    // handled (it says so and exits 0) and not (it dies of it).
    for (cmd, handled) in [("wait", true), ("wait-raw", false)] {
        let run = m.start(&env, backend, row, &[cmd]);
        run.wait_stdout(30, |l| l.iter().any(|l| l == "ready"));
        run.signal(Signal::SIGTERM);
        let pid = run.child.id();
        let (status, out, err) = run.finish(30);
        let ran = Ran { pid, status, out, err };
        assert_eq!(ran.out.first(), Some(&first(pid, cmd)), "{row} under {backend}: {ran}");
        if handled {
            assert!(status.success(), "{row} under {backend}, SIGTERM handled: {ran}");
            assert_eq!(ran.out.last().unwrap(), "got TERM", "{row} under {backend}: {ran}");
        } else {
            assert!(died_of(status, Signal::SIGTERM), "{row} under {backend}, SIGTERM: {ran}");
            assert_eq!(ran.out.last().unwrap(), "ready", "{row} under {backend}: {ran}");
        }
    }
    assert!(processes_of_home(&env.home).is_empty(), "{row} under {backend} left processes");
}

/// go-reexec: what [`program`] checks, and a child started through
/// `/proc/self/exe` with another argv, which must run and print. What that
/// link names is the backend's [`Reexec`]: the memfd under memfd, the cache
/// entry under cache, stigmer itself under mapped. The child's argv[0] is
/// `/proc/self/exe`, a name of the program's own (Docker's reexec idiom) or
/// the name of another payload: each time it is the same row that runs,
/// with the argv[0] it was given, as execve(2) would.
fn reexec(m: &Matrix, row: &str, backend: &str) {
    program(m, row, backend);
    for argv0 in ["/proc/self/exe", "docker-init", "go-static"] {
        let env = TestEnv::new();
        let how: &[&str] = match argv0 {
            "/proc/self/exe" => &["maps", "reexec"],
            _ => &["maps", "reexec-as", argv0],
        };
        let ran = m.run(&env, backend, row, how);
        let ran_as = format!("{row} under {backend}, argv[0] {argv0}");
        assert!(ran.status.success(), "{ran_as}: {ran}");
        let parent = Inside::printed(&ran.out);
        let child = ran.out.iter().find_map(|l| l.strip_prefix("reexec: matrix: "));
        let child = child.unwrap_or_else(|| panic!("{ran_as}: no child ran: {ran}"));
        let want = format!("pid={} ", ran.pid);
        assert!(
            child.starts_with(&format!("row={row} pid=")) && !child.contains(&want),
            "{ran_as}: not a new process of the row: {ran}"
        );
        assert!(ran.out.iter().any(|l| l == "reexec: status=0"), "{ran_as}: {ran}");
        let child_exe = ran.out.iter().find_map(|l| l.strip_prefix("reexec: child: exe="));
        let child_exe = child_exe.unwrap_or_else(|| panic!("{ran_as}: {ran}"));
        if expect(backend).reexec == Reexec::SameFile {
            assert_eq!(child_exe, parent.exe, "{ran_as}: {ran}");
        }
        assert!(child.ends_with(&format!(" argv=[{argv0} child]")), "{ran_as}: {ran}");
        m.record(
            row,
            &format!(
                "{backend}: the re-exec'd child ran as argv=[{argv0} child] from {child_exe:?}"
            ),
        );
    }
}

/// The ELF type and entry point of `path`.
fn elf_entry(path: &Path) -> (u16, u64) {
    let bytes = fs::read(path).unwrap();
    assert_eq!(&bytes[..4], b"\x7fELF", "{path:?}");
    let e_type = u16::from_le_bytes(bytes[16..18].try_into().unwrap());
    (e_type, u64::from_le_bytes(bytes[24..32].try_into().unwrap()))
}

/// go-debian, nats-server as Debian built it: Go linked against glibc, a
/// non-PIE executable with a PT_INTERP. It cannot print its own maps, so
/// the test reads them while it serves.
fn debian_go(m: &Matrix, row: &str, backend: &str) {
    let env = TestEnv::new();
    let ran = m.run(&env, backend, row, &["--version"]);
    assert!(ran.status.success(), "{row} under {backend}: {ran}");
    let version = ran.out.first().is_some_and(|l| l.starts_with("nats-server: v"));
    assert!(version, "{row} under {backend}: {ran}");

    // Its argv reaches it, and its exit status comes back.
    let conf = env.dir.path().join("no-such.conf");
    let ran = m.run(&env, backend, row, &["-c", conf.to_str().unwrap()]);
    assert_eq!(ran.status.code(), Some(1), "{row} under {backend}: {ran}");
    let said = format!("nats-server: open {}: no such file or directory", conf.display());
    assert!(ran.err.contains(&said), "{row} under {backend}: {ran}");

    // Serving on loopback; its log lines carry the pid stigmer was started as.
    let (e_type, entry) = elf_entry(&m.payloads.join(row));
    assert_eq!(e_type, 2, "{row} is no longer ET_EXEC: its entry is not an address");
    for (sig, handled) in [(Signal::SIGTERM, true), (Signal::SIGKILL, false)] {
        let run = m.start(&env, backend, row, &["-a", "127.0.0.1", "-p", "-1"]);
        run.wait_stderr("Server is ready", 30);
        let pid = run.child.id();
        let err = run.stderr.lock().unwrap().clone();
        let listening = line_index(&err, "Listening for client connections on 127.0.0.1:");
        assert!(err[listening].starts_with(&format!("[{pid}] ")), "{}", err.join("\n"));
        let port = err[listening].rsplit(':').next().unwrap();
        let stream = std::net::TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
        let mut info = String::new();
        std::io::BufReader::new(stream).read_line(&mut info).unwrap();
        assert!(info.starts_with("INFO {"), "{row} under {backend} said {info:?}");
        if handled {
            let record = Inside::read(pid, entry).check(m, &env, backend, row);
            m.record(row, &record);
        }

        // nats-server handles SIGTERM (it shuts down and exits 1); nothing
        // handles SIGKILL.
        run.signal(sig);
        let (status, out, err) = run.finish(30);
        let ran = Ran { pid, status, out, err };
        if handled {
            assert_eq!(status.code(), Some(1), "{row} under {backend}, SIGTERM: {ran}");
            assert!(ran.err.iter().any(|l| l.ends_with("Server Exiting..")), "{ran}");
        } else {
            assert!(died_of(status, sig), "{row} under {backend}, {sig}: {ran}");
        }
    }
    assert!(processes_of_home(&env.home).is_empty(), "{row} under {backend} left processes");
}

macro_rules! rows {
    ($($test:ident: $row:literal => $check:ident;)*) => {$(
        #[test]
        fn $test() {
            require!(tools().is_ok(), "{}", tools().unwrap_err());
            let m = matrix();
            for backend in BACKENDS {
                $check(m, $row, backend);
            }
        }
    )*};
}

rows! {
    go_static: "go-static" => program;
    go_debian: "go-debian" => debian_go;
    c_threads: "c-threads" => program;
    musl_static: "musl-static" => program;
    rust: "rust" => program;
    c_pie: "c-pie" => program;
    c_nopie: "c-nopie" => program;
    c_static: "c-static" => program;
    c_static_pie: "c-static-pie" => program;
    go_reexec: "go-reexec" => reexec;
}

/// c-loader-xo: its loader (PT_INTERP) has mode 0111, so the kernel runs
/// it as any user, but the mapped loader, which must read the loader to
/// map it, cannot but as root. As another user, `auto` says so and runs it
/// from a memfd, in `stigmer run` and as a service; `stigmer doctor` says
/// the same; forced, `mapped` refuses it. Root maps it.
#[test]
fn a_payload_whose_loader_only_root_may_read_runs_from_a_memfd_as_another_user() {
    require!(tools().is_ok(), "{}", tools().unwrap_err());
    require!(is_root() && have("setpriv"), "needs root and setpriv to act as another user");
    let m = matrix();
    let row = "c-loader-xo";
    let env = TestEnv::new();
    fs::set_permissions(env.dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .unwrap();
    fs::create_dir(&env.home).unwrap();
    nix::unistd::chown(&env.home, Some(65534.into()), Some(65534.into())).unwrap();
    let as_nobody = |backend: &str| {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(&m.stigmer)
            .args(["--backend", backend])
            .env("STIGMER_HOME", &env.home)
            .env_remove("STIGMER_BACKEND")
            .env_remove("RUST_LOG");
        cmd
    };

    let o = as_nobody("auto").args(["doctor", "--json"]).output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let payload = report["payloads"].as_array().unwrap().iter().find(|p| p["name"] == row);
    let payload = payload.unwrap_or_else(|| panic!("{row} not in {report}"));
    assert_eq!(payload["backend"], "memfd", "{payload}");
    assert!(payload["why"].as_str().unwrap().contains("cannot be read by this user"), "{payload}");

    let o = as_nobody("auto").args(["run", row, "exit", "7"]).output().unwrap();
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    assert!(stdout(&o).starts_with(&format!("matrix: row={row} pid=")), "{}", stdout(&o));

    let o = as_nobody("mapped").args(["run", row]).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("cannot be read by this user"), "{}", stderr(&o));

    let config = env.dir.path().join("services.toml");
    fs::write(&config, format!("[services.xo]\npayload = \"{row}\"\nargs = [\"wait\"]\n")).unwrap();
    let server = Server::spawn(as_nobody("auto").args(["server", "--config"]).arg(&config));
    let pid = server.service_pid("xo", 30);
    server.wait_stdout(30, |l| l.iter().any(|l| l.ends_with("| ready")));
    let exe = fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert_eq!(exe.to_string_lossy(), format!("/memfd:{row} (deleted)"));
    server.signal(Signal::SIGTERM);
    let (status, _, err) = server.finish(30);
    assert!(status.success(), "{err:?}");

    // Root may read it: mapped.
    let ran = m.run(&env, "auto", row, &["maps"]);
    assert!(ran.status.success(), "{ran}");
    assert_eq!(Inside::printed(&ran.out).exe, m.stigmer.to_string_lossy(), "{ran}");
}

/// What `service` printed in a line of `stigmer server`'s stdout
/// ("NAME | LINE", the names padded to one width), if that line is its.
fn said<'a>(line: &'a str, service: &str) -> Option<&'a str> {
    line.strip_prefix(service)?.trim_start_matches(' ').strip_prefix("| ")
}

/// The pids a service's lines name, in order, without repeats: a row's
/// first line ("matrix: row=R pid=P ...") or nats-server's "[P] ...".
fn service_pids(lines: &[String], service: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for line in lines.iter().filter_map(|l| said(l, service)) {
        let pid = match line.strip_prefix(&format!("matrix: row={service} pid=")) {
            Some(rest) => rest.split(' ').next(),
            None => line.strip_prefix('[').and_then(|r| r.split(']').next()),
        };
        if let Some(pid) = pid.and_then(|p| p.parse().ok()) {
            if !pids.contains(&pid) {
                pids.push(pid);
            }
        }
    }
    pids
}

/// Rows as services of `stigmer server` (the `services.toml` embedded with
/// them): a service killed with SIGKILL is restarted (`on-failure`), as a
/// new process that prints its line again; a stop reaches them all.
#[test]
fn rows_as_services_are_restarted_after_sigkill() {
    require!(tools().is_ok(), "{}", tools().unwrap_err());
    let m = matrix();
    let waiting = ["c-threads", "go-static", "rust"];
    for backend in BACKENDS {
        let env = TestEnv::new();
        let server = Server::spawn(m.stigmer(&env, backend).arg("server"));
        server.wait_stderr("all services running", 60);
        let ready = |l: &[String], service: &str, n: usize| {
            let line = match service {
                "go-debian" => "Server is ready",
                _ => "ready",
            };
            let ready = l.iter().filter(|l| said(l, service).is_some_and(|l| l.ends_with(line)));
            ready.count() >= n && service_pids(l, service).len() >= n
        };
        let all = |l: &[String], n: usize| {
            waiting.iter().chain(["go-debian"].iter()).all(|s| ready(l, s, n))
        };
        server.wait_stdout(30, |l| all(l, 1));
        let lines = server.stdout.lock().unwrap().clone();
        let killed = ["c-threads", "go-debian"];
        let old: Vec<u32> = killed.iter().map(|s| service_pids(&lines, s)[0]).collect();
        for pid in &old {
            let pid = nix::unistd::Pid::from_raw(*pid as i32);
            nix::sys::signal::kill(pid, Signal::SIGKILL).unwrap();
        }
        server.wait_stdout(30, |l| killed.iter().all(|s| ready(l, s, 2)));
        let lines = server.stdout.lock().unwrap().clone();
        for (service, old) in killed.iter().zip(&old) {
            let new = service_pids(&lines, service)[1];
            assert_ne!(new, *old);
            assert!(state_of(new).is_some_and(|s| s != 'Z'), "{service}'s new pid {new} is gone");
            m.record(
                "server",
                &format!("{backend}: {service} pid {old} killed, restarted as {new}"),
            );
        }

        server.signal(Signal::SIGTERM);
        let (status, out, err) = server.finish(30);
        let log = || format!("stdout:\n{}\nstderr:\n{}", out.join("\n"), err.join("\n"));
        assert!(status.success(), "server under {backend}: {status}\n{}", log());
        for service in waiting {
            let term = out.iter().any(|l| said(l, service) == Some("got TERM"));
            assert!(term, "{service} under {backend} never got TERM:\n{}", log());
        }
        let left = processes_of_home(&env.home);
        assert!(left.is_empty(), "server under {backend} left {left:?}");
    }
}
