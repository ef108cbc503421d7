//! A panic anywhere in the supervisor stops every service before the
//! process ends, in debug builds (where a panic in a tokio task would only
//! end that task) as in release builds (`panic = "abort"`).
//!
//! The supervisor records each running service's process group in
//! [`GROUPS`], a fixed array of atomics: the panic hook reads it without a
//! lock, so it can never block, whatever the panicking thread held. The
//! hook SIGKILLs every group, prints one line (the message and where; no
//! backtrace, which can take seconds while the other threads go on, and
//! only if stderr takes it at once), and aborts. The guard then sees the
//! supervisor die and kills whatever is left (escaped daemons).

use std::sync::Once;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// How many services the registry tracks; more than any manifest has.
/// Services past it are still stopped by the guard.
const SLOTS: usize = 1024;

/// The process group of service `i` while it runs, 0 otherwise.
static GROUPS: [AtomicI32; SLOTS] = [const { AtomicI32::new(0) }; SLOTS];

/// Records that service `i` runs as the leader of group `pid` (or, with
/// `None`, that it no longer runs).
pub(crate) fn record(i: usize, pid: Option<Pid>) {
    if let Some(slot) = GROUPS.get(i) {
        slot.store(pid.map_or(0, Pid::as_raw), Ordering::SeqCst);
    }
}

/// Installs the hook, once per process.
pub(crate) fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            kill_all();
            let what = info
                .payload()
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
                .unwrap_or("a panic");
            let place = info.location().map(|l| format!(" at {l}")).unwrap_or_default();
            say(&format!("stigmer: the supervisor panicked{place}: {what}; all services killed\n"));
            std::process::abort();
        }));
    });
}

/// SIGKILLs every recorded group. Lock-free, allocation-free.
fn kill_all() {
    for slot in &GROUPS {
        let pgid = slot.load(Ordering::SeqCst);
        if pgid > 1 {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
    }
}

/// Writes `line` to stderr only if it can be written at once: a pipe that
/// polls writable has room for `PIPE_BUF` bytes, so a write of at most that
/// many does not block.
fn say(line: &str) {
    use nix::poll::{PollFd, PollFlags, poll};
    use std::os::fd::AsFd as _;
    let stderr = std::io::stderr();
    let mut fds = [PollFd::new(stderr.as_fd(), PollFlags::POLLOUT)];
    if poll(&mut fds, 0u8).is_ok_and(|n| n == 1) {
        let bytes = &line.as_bytes()[..line.len().min(512)];
        let _ = nix::unistd::write(stderr.as_fd(), bytes);
    }
}
