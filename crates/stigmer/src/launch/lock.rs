//! File locks and leases: how stigmer knows who still uses a cache folder,
//! and keeps a checked entry's bytes from changing until they run.
//!
//! - [`flock`] (flock(2)): on the open file description, so it crosses pid
//!   and user namespaces (where pids mean nothing) and is inherited by a
//!   payload that keeps the descriptor; released when the last descriptor
//!   of that description closes.
//! - [`hold_bytes`] (Linux: `fcntl(F_SETLEASE, F_RDLCK)`, fcntl(2) "Leases"):
//!   granted only if nobody has the file open for writing, and while it is
//!   held, whoever opens the file for writing (or truncates it) waits until
//!   stigmer closes its descriptor (at most `/proc/sys/fs/lease-break-time`,
//!   45 s by default); by then the payload runs, and the kernel refuses
//!   writes to a running executable (`ETXTBSY`). So bytes checked through
//!   that descriptor are the bytes exec'd. The kernel tells the holder of a
//!   lease that someone waits with `SIGIO`, whose default action would end
//!   stigmer: a handler that does nothing is installed first (exec resets it
//!   to the default for the payload). Where leases are not available
//!   (`fs.leases-enable = 0`, a file system without them, macOS), nothing is
//!   held and the check stands alone.

#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd as _;

use super::cache::LockOp;

/// Takes a `flock` on `file` as `op` says.
pub(crate) fn flock(file: &File, op: LockOp) -> io::Result<()> {
    let op = match op {
        LockOp::Shared => nix::libc::LOCK_SH,
        LockOp::TryExclusive => nix::libc::LOCK_EX | nix::libc::LOCK_NB,
    };
    loop {
        // SAFETY: flock(2) on a descriptor `file` keeps open; it touches no
        // memory of ours.
        if unsafe { nix::libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

cfg_if::cfg_if! {
    if #[cfg(target_os = "linux")] {
        /// Takes a read lease on `file` (opened read-only, ours): an error
        /// means someone has it open for writing. Returns whether it holds
        /// one: where leases are not available, `Ok(false)`.
        pub(crate) fn hold_bytes(file: &File) -> io::Result<bool> {
            quiet_sigio();
            // SAFETY: fcntl(2) F_SETLEASE on a descriptor `file` keeps open.
            let r = unsafe {
                nix::libc::fcntl(file.as_raw_fd(), nix::libc::F_SETLEASE, nix::libc::F_RDLCK)
            };
            if r == 0 {
                return Ok(true);
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                // Open for writing somewhere (EAGAIN), or being broken.
                Some(nix::libc::EAGAIN) | Some(nix::libc::EBUSY) => Err(e),
                // No leases here (EINVAL: fs.leases-enable=0 or a file
                // system without them; ENOLCK): the check stands alone.
                _ => {
                    tracing::debug!("no read lease on a cache entry ({e}): checked without one");
                    Ok(false)
                }
            }
        }

        /// Installs, once, a handler for `SIGIO` that does nothing, so a
        /// lease break (someone opens a leased entry for writing) cannot end
        /// stigmer. Leaves a handler someone else installed alone.
        fn quiet_sigio() {
            static ONCE: std::sync::Once = std::sync::Once::new();
            ONCE.call_once(|| {
                extern "C" fn ignore(_: nix::libc::c_int) {}
                use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal};
                let action =
                    SigAction::new(SigHandler::Handler(ignore), SaFlags::SA_RESTART, SigSet::empty());
                // SAFETY: the handler does nothing, so it is async-signal-safe;
                // it replaces only the default action (which would end the
                // process), and exec resets it to the default for a payload.
                unsafe {
                    if let Ok(old) = nix::sys::signal::sigaction(Signal::SIGIO, &action) {
                        if !matches!(old.handler(), SigHandler::SigDfl) {
                            let _ = nix::sys::signal::sigaction(Signal::SIGIO, &old);
                        }
                    }
                }
            });
        }
    } else {
        /// No leases here: the check stands alone (see the module doc).
        pub(crate) fn hold_bytes(_file: &File) -> io::Result<bool> {
            Ok(false)
        }
    }
}
