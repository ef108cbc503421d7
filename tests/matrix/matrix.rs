//! One program of the compatibility matrix (tests/mapped_matrix.rs), built by
//! build.sh with `rustc` alone (no cargo, no crates: the default target, a
//! PIE linked dynamically against glibc). `MATRIX_ROW` names the row at
//! compile time.
//!
//! It prints `matrix: row=ROW pid=PID argv=[ARGV...]`, then runs its
//! arguments as commands, left to right, as matrix.c does (`threads`,
//! `maps`, `exit N`, `wait`, `wait-raw`; any other word is only part of
//! argv). The threads start from a `thread_local!` with a const initialiser,
//! so their start value is the PT_TLS image.

use std::cell::Cell;
use std::io::Write as _;

const ROW: &str = env!("MATRIX_ROW");
const THREADS: u64 = 4;
const TLS_START: u64 = 42;

thread_local! {
    static TLS: Cell<u64> = const { Cell::new(TLS_START) };
}

// libc, which std links already; declared here since no crate is used.
extern "C" {
    fn signal(sig: i32, handler: usize) -> usize;
    fn pause() -> i32;
    fn write(fd: i32, buf: *const u8, len: usize) -> isize;
    fn _exit(status: i32) -> !;
}

const SIGTERM: i32 = 15;

extern "C" fn on_term(_: i32) {
    let msg = b"got TERM\n";
    // SAFETY: write(2) and _exit(2) are async-signal-safe.
    unsafe {
        write(1, msg.as_ptr(), msg.len());
        _exit(0);
    }
}

fn threads() {
    let handles: Vec<_> = (1..=THREADS)
        .map(|i| {
            std::thread::spawn(move || {
                if TLS.get() != TLS_START {
                    return u64::MAX; // the TLS image was not copied
                }
                for k in 1..=1000 {
                    TLS.set(TLS.get() + i * k);
                }
                TLS.get()
            })
        })
        .collect();
    let sum: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    println!("threads: n={THREADS} sum={sum} main_tls={}", TLS.get());
}

fn maps() {
    println!("text: {:#x}", main as fn() as usize);
    let exe = std::fs::read_link("/proc/self/exe").unwrap_or_default();
    println!("exe: {}", exe.display());
    for line in std::fs::read_to_string("/proc/self/maps").unwrap_or_default().lines() {
        println!("maps: {line}");
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    for line in status.lines() {
        if let Some(v) = line.strip_prefix("RssShmem:") {
            let kb: u64 = v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
            println!("status: RssShmem: {kb} kB");
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    println!("matrix: row={ROW} pid={} argv=[{}]", std::process::id(), args.join(" "));
    let mut rest = args.iter().skip(1);
    while let Some(cmd) = rest.next() {
        match cmd.as_str() {
            "threads" => threads(),
            "maps" => maps(),
            "exit" => {
                let code = rest.next().and_then(|c| c.parse().ok()).unwrap_or(0);
                std::io::stdout().flush().unwrap();
                std::process::exit(code);
            }
            "wait" | "wait-raw" => {
                if cmd == "wait" {
                    // SAFETY: the handler only calls async-signal-safe functions.
                    unsafe { signal(SIGTERM, on_term as extern "C" fn(i32) as usize) };
                }
                println!("ready");
                loop {
                    // SAFETY: pause(2) only waits.
                    unsafe { pause() };
                }
            }
            _ => {}
        }
    }
}
