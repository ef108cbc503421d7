//! Running a payload as a child when it cannot replace stigmer: stigmer
//! waits, forwards signals, cleans up after it and reports its status.
//!
//! `stigmer run` normally execs the payload in place. A payload that needs a
//! private `TMPDIR` removed after it exits (PyInstaller one-file) runs as a
//! child instead, and this loop stands in for it: the signals a caller sends
//! to stigmer reach the payload, and its exit status comes back unchanged.
//!
//! The loop blocks the signals it handles and takes them with `sigwait`, so
//! no handler runs and nothing async-signal-unsafe can happen. A child
//! inherits its parent's signal mask (std does not reset it), so the child
//! restores the mask stigmer had before, between fork and exec.

use std::io;
use std::os::fd::AsFd as _;
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, ExitStatus};

use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill};
use nix::unistd::Pid;

/// Signals passed on to the payload. SIGINT and SIGQUIT are passed on only
/// when they cannot have come from the terminal (see [`from_terminal`]),
/// since a terminal sends them to the payload itself already.
const FORWARDED: [Signal; 8] = [
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
    Signal::SIGCONT,
];

/// The signals [`run`] handles, blocked from before the payload is
/// prepared (so that a signal sent meanwhile waits for the payload instead
/// of killing stigmer before it cleans up), restored when dropped.
pub(crate) struct Blocked {
    set: SigSet,
    old: SigSet,
}

impl Blocked {
    /// Blocks them in the calling thread (stigmer run is single-threaded).
    pub(crate) fn new() -> crate::Result<Blocked> {
        let mut set = SigSet::empty();
        for sig in FORWARDED {
            set.add(sig);
        }
        set.add(Signal::SIGCHLD);
        let old = set.thread_swap_mask(SigmaskHow::SIG_BLOCK).map_err(io_err)?;
        Ok(Blocked { set, old })
    }

    /// Whether a signal that would end stigmer arrived while they were
    /// blocked: then there is no payload to pass it to yet.
    pub(crate) fn stop_pending(&self) -> bool {
        let mut raw = std::mem::MaybeUninit::<nix::libc::sigset_t>::uninit();
        // SAFETY: sigemptyset(3) initialises the set that sigpending(2) then
        // fills; both only write to it.
        #[allow(unsafe_code)]
        let raw = unsafe {
            nix::libc::sigemptyset(raw.as_mut_ptr());
            if nix::libc::sigpending(raw.as_mut_ptr()) != 0 {
                return false;
            }
            raw.assume_init()
        };
        // Those whose default action ends the process.
        let stops = FORWARDED.iter().filter(|s| !matches!(s, Signal::SIGWINCH | Signal::SIGCONT));
        // SAFETY: sigismember(3) reads an initialised set.
        #[allow(unsafe_code)]
        stops.into_iter().any(|&sig| unsafe { nix::libc::sigismember(&raw, sig as i32) } == 1)
    }
}

impl Drop for Blocked {
    fn drop(&mut self) {
        // Whatever arrived meanwhile is delivered now, as if never blocked.
        let _ = self.old.thread_set_mask();
    }
}

/// Spawns `cmd` with `spawn`, forwards signals to it until it exits, and
/// returns its status. `blocked` holds the signals it waits for, from
/// before the payload was prepared.
pub(crate) fn run(
    cmd: &mut Command,
    spawn: impl FnOnce(&mut Command) -> crate::Result<Child>,
    blocked: &Blocked,
) -> crate::Result<ExitStatus> {
    let old = blocked.old;
    // SAFETY: runs in the child between fork and exec; pthread_sigmask(3) is
    // async-signal-safe, and `old` is a plain value copied into the closure,
    // so nothing is allocated or locked.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || old.thread_set_mask().map_err(io::Error::from));
    }
    spawn(cmd).and_then(|child| wait_forwarding(child, &blocked.set).map_err(io_err))
}

fn io_err(e: impl Into<io::Error>) -> crate::Error {
    crate::Error::Exec { name: "stigmer run".into(), source: e.into() }
}

fn wait_forwarding(mut child: Child, set: &SigSet) -> io::Result<ExitStatus> {
    let pid = Pid::from_raw(child.id() as i32);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        // A SIGCHLD that arrives between try_wait and here stays pending, so
        // this never sleeps through the child's exit.
        let sig = set.wait()?;
        let interactive = matches!(sig, Signal::SIGINT | Signal::SIGQUIT) && from_terminal();
        if sig != Signal::SIGCHLD && !interactive {
            // ESRCH only means the child just exited; try_wait sees it next.
            let _ = kill(pid, sig);
        }
    }
}

/// Whether stigmer is in the foreground of its terminal, in which case a
/// Ctrl-C or Ctrl-\ reached the payload (in the same process group) directly.
fn from_terminal() -> bool {
    let stdin = io::stdin();
    nix::unistd::tcgetpgrp(stdin.as_fd()).is_ok_and(|fg| fg == nix::unistd::getpgrp())
}

/// The exit status to give so that stigmer's parent sees what the payload
/// did: its exit code, or death by the same signal. For a signal this resets
/// the signal's action to the default and raises it; if stigmer survives
/// that (a signal whose default is to continue), it exits 128 + the number.
pub fn exit_code(status: ExitStatus) -> std::process::ExitCode {
    use std::os::unix::process::ExitStatusExt as _;
    if let Some(code) = status.code() {
        return std::process::ExitCode::from(code as u8);
    }
    let number = status.signal().unwrap_or(0);
    if let Ok(sig) = Signal::try_from(number) {
        // SAFETY: SIG_DFL installs no handler, so no code of ours can run in
        // signal context; std ignores SIGPIPE at start, which this undoes.
        #[allow(unsafe_code)]
        let _ = unsafe { nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigDfl) };
        let mut set = SigSet::empty();
        set.add(sig);
        let _ = set.thread_unblock();
        let _ = nix::sys::signal::raise(sig);
    }
    std::process::ExitCode::from(128u8.wrapping_add(number as u8))
}
