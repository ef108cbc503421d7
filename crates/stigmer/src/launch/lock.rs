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
//!   held and the check stands alone. The lease itself is platform code
//!   (`imp/linux/lease.rs`; none elsewhere).

#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd as _;

use super::cache::LockOp;
pub(crate) use super::imp::hold_bytes;

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
