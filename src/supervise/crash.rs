//! A panic anywhere in the supervisor stops every service before the
//! process ends, in debug builds (where a panic in a tokio task would only
//! end that task) as in release builds (`panic = "abort"`).
//!
//! The supervisor records each running service's process group in
//! [`GROUPS`], a fixed array of atomics: the panic hook reads it without a
//! lock, so it can never block, whatever the panicking thread held. The
//! hook SIGKILLs every group, lets the previous hook print the message, and
//! aborts. The guard then sees the supervisor die and kills whatever is
//! left (escaped daemons).

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
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            kill_all();
            previous(info);
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
