//! Reaping: the one place in stigmer that waits for child processes.
//!
//! Only one part of a program may reap children, or statuses get stolen (a
//! `waitpid(-1)` for orphans would take the status tokio's `Child::wait`
//! expects, and tokio would get `ECHILD`). stigmer's choice: the supervisor
//! owns all reaping. Services are spawned with std's `Command` and never
//! waited for through std or `tokio::process`; on every SIGCHLD the
//! supervisor calls `waitpid(-1, WNOHANG)` until nothing is left and hands
//! each status to the service with that pid. A pid it does not know is an
//! orphan that was reparented to stigmer, because stigmer is PID 1 in a
//! container or (on Linux) a child subreaper. While services run, reaping it
//! is all there is to do: no zombie is left behind, as tini and dumb-init
//! do. On the way out, those still running are stopped (see the module
//! docs of `supervise`).

use std::fmt;

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this status.
    Code(i32),
    /// A signal killed it.
    Signal(Signal),
}

impl Exit {
    /// A non-zero status or a signal.
    pub fn failed(self) -> bool {
        self != Exit::Code(0)
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit status {c}"),
            Exit::Signal(s) => write!(f, "killed by {s}"),
        }
    }
}

/// Reaps every child that has ended, without blocking.
pub(crate) fn reap() -> Vec<(Pid, Exit)> {
    reap_all().0
}

/// Reaps every child that has ended, without blocking, and tells whether
/// no child at all is left (`waitpid` said `ECHILD`).
pub(crate) fn reap_all() -> (Vec<(Pid, Exit)>, bool) {
    let mut ended = Vec::new();
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => ended.push((pid, Exit::Code(code))),
            Ok(WaitStatus::Signaled(pid, sig, _)) => ended.push((pid, Exit::Signal(sig))),
            Ok(WaitStatus::StillAlive) => return (ended, false),
            Err(Errno::ECHILD) => return (ended, true),
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => {
                tracing::warn!("waitpid failed: {e}");
                return (ended, false);
            }
        }
    }
}
