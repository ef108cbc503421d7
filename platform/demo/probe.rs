//! `probe`: a demo payload that reports how it sees the world, so a user (and
//! stigmer's tests) can check how a payload is launched.
//!
//! It prints one `key: value` line per fact: argv, its own executable, its
//! working folder, the seals on it, whether it can write to it, its open
//! fds and a few variables. Flags, applied in this order: `--delay MS`
//! waits first, `--quiet` prints no report, `--env NAME` prints a
//! variable, `--ignore N` ignores signal N, `--say TEXT` prints a line,
//! `--cat PATH` prints each line of a file as `cat: LINE` and the seals on
//! it as `cat-seals: ...`,
//! `--listen PORT` accepts TCP connections on 127.0.0.1:PORT, `--orphan MS` leaves behind a grandchild that lives MS
//! milliseconds, `--daemon MS` leaves behind a grandchild that calls
//! `setsid` (a daemon that escaped the process group) and lives MS
//! milliseconds, `--spam N` writes N long lines to stdout and stderr,
//! `--sleep MS` sleeps, `--signal N` kills itself with signal N, `--exit N`
//! exits with N. std-only, so `build.rs` compiles it with rustc.

use std::env;
use std::fs;
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let args: Vec<String> = env::args().collect();
    let mut exit = 0u8;
    let mut signal = None;
    let mut quiet = false;
    let mut envs = Vec::new();
    let (mut ignore, mut say, mut listen, mut orphan, mut detach) = (vec![], vec![], None, None, None);
    let mut cat = Vec::new();
    let (mut daemon, mut setsid) = (None, false);
    let (mut spam, mut sleep, mut delay) = (0u64, 0u64, 0u64);
    let mut rest = args.iter().skip(1);
    while let Some(arg) = rest.next() {
        let mut value = || rest.next().cloned().unwrap_or_default();
        match arg.as_str() {
            "--exit" => exit = value().parse().unwrap_or(1),
            "--signal" => signal = value().parse::<i32>().ok(),
            "--env" => envs.push(value()),
            "--sleep" => sleep = value().parse().unwrap_or(0),
            "--quiet" => quiet = true,
            "--ignore" => ignore.extend(value().parse::<i32>().ok()),
            "--say" => say.push(value()),
            "--cat" => cat.push(value()),
            "--listen" => listen = value().parse::<u16>().ok(),
            "--orphan" => orphan = value().parse::<u64>().ok(),
            "--detach" => detach = value().parse::<u64>().ok(),
            "--daemon" => daemon = value().parse::<u64>().ok(),
            "--setsid" => setsid = true,
            "--spam" => spam = value().parse().unwrap_or(0),
            "--delay" => delay = value().parse().unwrap_or(0),
            _ => {}
        }
    }
    std::thread::sleep(Duration::from_millis(delay));
    if setsid {
        // The grandchild of --daemon: a session and process group of its own.
        sys::setsid();
    }
    if let Some(ms) = detach {
        // The middle of --orphan and --daemon: start the grandchild and
        // leave it behind.
        let mut grandchild = self_command();
        if args.iter().any(|a| a == "--daemon-middle") {
            grandchild.arg("--setsid");
        }
        let _ = grandchild.args(["--quiet", "--sleep", &ms.to_string()]).spawn();
        return ExitCode::SUCCESS;
    }
    if !quiet {
        report(&args, &envs);
    }
    for sig in ignore {
        sys::ignore(sig);
    }
    for line in say {
        println!("{line}");
    }
    for path in cat {
        match fs::read_to_string(&path) {
            Ok(text) => text.lines().for_each(|l| println!("cat: {l}")),
            Err(e) => println!("cat: cannot read {path}: {e}"),
        }
        println!("cat-seals: {}", sys::seals(&path));
    }
    if let Some(port) = listen {
        match std::net::TcpListener::bind(("127.0.0.1", port)) {
            Ok(l) => {
                println!("listening on 127.0.0.1:{port}");
                std::thread::spawn(move || for _ in l.incoming() {});
            }
            Err(e) => {
                eprintln!("cannot listen on 127.0.0.1:{port}: {e}");
                return ExitCode::from(1);
            }
        }
    }
    if let Some(ms) = orphan {
        let status = self_command().args(["--detach", &ms.to_string()]).status();
        println!("orphaned a grandchild for {ms}ms ({status:?})");
    }
    if let Some(ms) = daemon {
        let status =
            self_command().args(["--daemon-middle", "--detach", &ms.to_string()]).status();
        println!("left a daemon for {ms}ms ({status:?})");
    }
    if spam > 0 {
        let line = "x".repeat(2000);
        let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
        for i in 0..spam {
            let _ = writeln!(out, "spam out {i} {line} end");
            let _ = writeln!(err, "spam err {i} {line} end");
        }
    }
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    std::thread::sleep(Duration::from_millis(sleep));
    if let Some(signal) = signal {
        sys::raise_signal(signal);
    }
    ExitCode::from(exit)
}

/// A command that runs this very program again: through `/proc/self/exe`,
/// which works from a memfd too, where there is one.
fn self_command() -> std::process::Command {
    if std::path::Path::new("/proc/self/exe").exists() {
        std::process::Command::new("/proc/self/exe")
    } else {
        std::process::Command::new(env::current_exe().unwrap())
    }
}

fn report(args: &[String], envs: &[String]) {
    println!("probe: hello from the embedded probe");
    println!("argv: {args:?}");
    let exe = fs::read_link("/proc/self/exe")
        .or_else(|_| env::current_exe())
        .map(|p| p.display().to_string());
    println!("exe: {}", exe.unwrap_or_else(|e| format!("unknown ({e})")));
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let id = fs::metadata("/proc/self/exe").or_else(|_| fs::metadata(env::current_exe().unwrap_or_default()));
        println!("exe-id: {}", id.map(|m| format!("{}:{}", m.dev(), m.ino())).unwrap_or_else(|e| format!("unknown ({e})")));
    }
    let cwd = env::current_dir().map(|p| p.display().to_string());
    println!("cwd: {}", cwd.unwrap_or_else(|e| format!("unknown ({e})")));
    let comm = fs::read_to_string("/proc/self/comm").map(|c| c.trim_end().to_owned());
    println!("comm: {}", comm.unwrap_or_else(|e| format!("unknown ({e})")));
    println!("seals: {}", sys::seals("/proc/self/exe"));
    let write = fs::OpenOptions::new().write(true).open("/proc/self/exe");
    println!(
        "write-self: {}",
        match write {
            Ok(_) => "allowed".to_owned(),
            Err(e) => format!("denied ({e})"),
        }
    );
    println!("fds: {}", open_fds());
    for name in envs {
        match env::var(name) {
            Ok(v) => println!("env: {name}={v}"),
            Err(_) => println!("env: {name} unset"),
        }
    }
}

/// The open file descriptors, without the one used to list them.
fn open_fds() -> String {
    let Ok(dir) = fs::read_dir("/proc/self/fd").or_else(|_| fs::read_dir("/dev/fd")) else {
        return "unknown".to_owned();
    };
    let mut fds: Vec<u32> = dir
        .flatten()
        .filter_map(|e| {
            let fd = e.file_name().to_str()?.parse().ok()?;
            // The directory being read shows up as a link to itself.
            let target = fs::read_link(e.path()).ok()?;
            (!target.ends_with("fd")).then_some(fd)
        })
        .collect();
    fds.sort();
    fds.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

#[cfg(unix)]
mod sys {
    unsafe extern "C" {
        fn raise(sig: i32) -> i32;
        #[link_name = "setsid"]
        fn c_setsid() -> i32;
        fn signal(sig: i32, handler: usize) -> usize;
        #[cfg(target_os = "linux")]
        fn fcntl(fd: i32, cmd: i32, ...) -> i32;
    }

    pub fn ignore(sig: i32) {
        const SIG_IGN: usize = 1;
        // SAFETY: SIG_IGN installs no handler code; signal(3) is safe to call.
        unsafe { signal(sig, SIG_IGN) };
    }

    pub fn setsid() {
        // SAFETY: setsid(2) has no memory-safety preconditions.
        unsafe { c_setsid() };
    }

    pub fn raise_signal(signal: i32) {
        // SAFETY: raise(3) has no memory-safety preconditions.
        unsafe { raise(signal) };
    }

    /// The seals on the file at `path`.
    #[cfg(target_os = "linux")]
    pub fn seals(path: &str) -> String {
        use std::os::fd::AsRawFd;
        const F_GET_SEALS: i32 = 1034;
        const NAMES: [(i32, &str); 6] = [
            (0x1, "seal"),
            (0x2, "shrink"),
            (0x4, "grow"),
            (0x8, "write"),
            (0x10, "future-write"),
            (0x20, "exec"),
        ];
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) => return format!("unknown ({e})"),
        };
        // SAFETY: F_GET_SEALS takes no argument and only reads the open fd.
        let seals = unsafe { fcntl(file.as_raw_fd(), F_GET_SEALS) };
        if seals < 0 {
            return format!("none ({})", std::io::Error::last_os_error());
        }
        let names: Vec<&str> =
            NAMES.iter().filter(|(bit, _)| seals & bit != 0).map(|(_, n)| *n).collect();
        format!("{seals:#x} {}", names.join(","))
    }

    #[cfg(not(target_os = "linux"))]
    pub fn seals(_path: &str) -> String {
        "none (not Linux)".to_owned()
    }
}
