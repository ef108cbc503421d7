//! Read leases on cache entries (Linux): the bytes checked through a
//! descriptor are the bytes exec'd from it. What they guarantee, and why,
//! is in [`crate::launch::lock`]'s module doc.
//!
//! # References
//! - fcntl(2) "Leases" (`F_SETLEASE`, `F_GETLEASE`, `SIGIO`),
//!   `/proc/sys/fs/lease-break-time`

#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd as _, RawFd};

/// Takes a read lease on `file` (opened read-only, ours): an error means
/// someone has it open for writing. Returns whether it holds one: where
/// leases are not available, `Ok(false)`.
pub(crate) fn hold_bytes(file: &File) -> io::Result<bool> {
    quiet_sigio();
    // SAFETY: fcntl(2) F_SETLEASE on a descriptor `file` keeps open.
    let r =
        unsafe { nix::libc::fcntl(file.as_raw_fd(), nix::libc::F_SETLEASE, nix::libc::F_RDLCK) };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        // Open for writing somewhere (EAGAIN), or being broken.
        Some(nix::libc::EAGAIN) | Some(nix::libc::EBUSY) => Err(e),
        // No leases here (EINVAL: fs.leases-enable=0 or a file system
        // without them; ENOLCK): the check stands alone.
        _ => {
            tracing::debug!("no read lease on a cache entry ({e}): checked without one");
            Ok(false)
        }
    }
}

/// Installs, once, a handler for `SIGIO` that does nothing, so a lease
/// break (someone opens a leased entry for writing) cannot end stigmer.
/// Leaves a handler someone else installed alone.
fn quiet_sigio() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        extern "C" fn ignore(_: nix::libc::c_int) {}
        use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal};
        let action =
            SigAction::new(SigHandler::Handler(ignore), SaFlags::SA_RESTART, SigSet::empty());
        // SAFETY: the handler does nothing, so it is async-signal-safe; it
        // replaces only the default action (which would end the process),
        // and exec resets it to the default for a payload.
        unsafe {
            if let Ok(old) = nix::sys::signal::sigaction(Signal::SIGIO, &action) {
                if !matches!(old.handler(), SigHandler::SigDfl) {
                    let _ = nix::sys::signal::sigaction(Signal::SIGIO, &old);
                }
            }
        }
    });
}

/// Whether `fd` still holds the read lease the check took: a lease that
/// was broken (or is being broken) means someone opened the file for
/// writing since. Async-signal-safe: one fcntl(2).
pub(super) fn lease_held(fd: RawFd) -> bool {
    // SAFETY: fcntl(2) F_GETLEASE reads the lease state of an open fd.
    unsafe { nix::libc::fcntl(fd, nix::libc::F_GETLEASE) == nix::libc::F_RDLCK }
}

/// The error of an exec refused because the checked file may have changed.
pub(super) fn changed() -> io::Error {
    io::Error::from_raw_os_error(nix::libc::ETXTBSY)
}
