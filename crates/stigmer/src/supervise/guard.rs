//! The guard: the process the user started, which outlives the supervisor
//! so that nothing outlives stigmer, even when the supervisor is killed
//! with SIGKILL, aborts, or is chosen by the OOM killer.
//!
//! [`split`] forks before any thread exists. The child, the supervisor,
//! returns and goes on as the normal program (tokio and all). The parent,
//! the guard, stays tiny: one thread, no tokio, no allocation in its loop.
//! It blocks the signals it handles and takes them with `sigwait`
//! (the pattern of `launch::child`):
//!
//! - SIGINT, SIGTERM, SIGHUP, SIGQUIT and SIGUSR1 are passed on to the
//!   supervisor, once per delivery. The supervisor has a process group of
//!   its own, so a terminal's Ctrl-C reaches the guard only, and the
//!   supervisor does not get it twice.
//! - Every child that ends is reaped: as PID 1 in a container, orphans are
//!   the guard's too. On Linux the guard is a child subreaper.
//! - Once the supervisor has ended, by any means, the guard kills every
//!   process still its child (on Linux found through `/proc/*/stat`: the
//!   supervisor's services and their escaped daemons, reparented to the
//!   guard), with SIGKILL, again and again until `waitpid` says `ECHILD`,
//!   and exits with the supervisor's status (128 + N for a signal N).
//!
//! The supervisor sees the guard die through a pipe: the guard holds the
//! write end, the supervisor the read end (both close-on-exec), and the
//! supervisor's end-of-file means the guard is gone. That needs nothing of
//! the platform.

use std::io;
use std::os::fd::OwnedFd;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid};

use super::sys;

/// Signals the guard passes on to the supervisor.
pub const FORWARDED: [Signal; 5] =
    [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGQUIT, Signal::SIGUSR1];

/// Which side of [`split`] this process is.
#[derive(Debug)]
pub enum Side {
    /// The guard, after the supervisor and everything left of it ended:
    /// exit with this status.
    Guard(u8),
    /// The supervisor: go on, and hand this to [`super::serve`].
    Supervisor(Guard),
}

/// The supervisor's end of the pipe from the guard: end-of-file on it
/// means the guard is gone.
#[derive(Debug)]
pub struct Guard {
    pub(crate) gone: OwnedFd,
    /// The signal mask to restore once the supervisor handles signals:
    /// until then they stay pending rather than end it.
    mask: SigSet,
}

impl Guard {
    /// Unblocks the signals [`split`] blocked, in the calling thread (the
    /// supervisor's, once its handlers are installed).
    pub(crate) fn unblock_signals(&self) -> io::Result<()> {
        Ok(self.mask.thread_set_mask()?)
    }
}

/// Splits this process into the guard and the supervisor (see the module
/// docs). Returns in both; the guard's return comes only after everything
/// it watched has ended.
///
/// Call it before any thread exists (before a tokio runtime, before
/// logging starts a writer thread): the supervisor is forked, and only
/// the thread calling fork exists in the child.
pub fn split() -> io::Result<Side> {
    debug_assert!(sys::single_threaded(), "the guard must fork before any thread exists");
    sys::become_subreaper();
    let (gone, alive) = sys::cloexec_pipe()?;
    let mut set = SigSet::empty();
    for sig in FORWARDED {
        set.add(sig);
    }
    set.add(Signal::SIGCHLD);
    // Blocked before the fork: the guard takes them with sigwait, and the
    // supervisor keeps them pending until its handlers are in place (see
    // `Guard::unblock_signals`), so that a signal sent while it starts is
    // acted on, not fatal.
    let old = set.thread_swap_mask(SigmaskHow::SIG_BLOCK)?;
    // SAFETY: this process has one thread (asserted above, and documented
    // as the caller's duty), so the child is a complete copy of it and may
    // go on running any code, allocation and locks included.
    #[allow(unsafe_code)]
    let forked = unsafe { nix::unistd::fork() }?;
    match forked {
        ForkResult::Child => {
            drop(alive);
            // Its own process group: the terminal's signals go to the guard.
            let _ = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0));
            Ok(Side::Supervisor(Guard { gone, mask: old }))
        }
        ForkResult::Parent { child } => {
            drop(gone);
            // Both sides set it, so neither can act before it holds.
            let _ = nix::unistd::setpgid(child, child);
            let status = watch(child, &set);
            drop(alive);
            kill_children();
            Ok(Side::Guard(status))
        }
    }
}

/// Passes signals on to `supervisor` and reaps children until it ends;
/// returns its exit status.
fn watch(supervisor: Pid, set: &SigSet) -> u8 {
    loop {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == supervisor => return code as u8,
                Ok(WaitStatus::Signaled(pid, sig, _)) if pid == supervisor => {
                    return 128u8.wrapping_add(sig as i32 as u8);
                }
                Ok(WaitStatus::StillAlive) => break,
                // Cannot happen while the supervisor is our child.
                Err(Errno::ECHILD) => return 1,
                Ok(_) | Err(Errno::EINTR) => {}
                Err(_) => break,
            }
        }
        // A SIGCHLD that comes after the waitpid above stays pending, so
        // this never sleeps through the supervisor's end.
        match set.wait() {
            Ok(Signal::SIGCHLD) | Err(_) => {}
            // ESRCH only means it just ended; the next waitpid sees it.
            Ok(sig) => {
                let _ = kill(supervisor, sig);
            }
        }
    }
}

/// Kills every child left, and the children they leave in turn, until
/// there is none.
fn kill_children() {
    let me = nix::unistd::getpid();
    loop {
        for pid in sys::children(me) {
            let _ = kill(pid, Signal::SIGKILL);
        }
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Err(Errno::ECHILD) => return,
            Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(2)),
            Ok(_) | Err(_) => {}
        }
    }
}
