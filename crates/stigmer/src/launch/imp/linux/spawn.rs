//! Exec by descriptor (Linux): what runs is the very file stigmer opened
//! and checked, whatever happens to any path afterwards.
//!
//! Both backends end here on Linux. A payload is exec'd with `execveat(fd, "", argv,
//! envp, AT_EMPTY_PATH)`, in place ([`exec_fd`], `stigmer run`) or in a
//! child between fork and exec ([`spawn_fd`], services). The kernel names the
//! process after the file's own name (`d_name`): `memfd:NAME` for a memfd,
//! `NAME` for a cache entry, where a path exec of `/proc/self/fd/N` would
//! name it `N`.
//!
//! Where `execveat` itself is refused (a seccomp profile that allows
//! `execve` only), the child falls back to exec'ing `/proc/self/fd/N`, which
//! reaches the same open file; only the process name differs.
//!
//! # References
//! - execveat(2) (`AT_EMPTY_PATH`; a close-on-exec descriptor of a `#!`
//!   script makes the script unreadable to its interpreter: `ENOENT`)
//! - fork(2)/signal-safety(7): only async-signal-safe calls in the child

#![allow(unsafe_code)]

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd as _, BorrowedFd, RawFd};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command};

use super::lease::{changed, lease_held};

/// The most descriptors a payload may be given on top of its stdio.
const MAX_INHERIT: usize = 4;

/// How to exec a descriptor.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct How<'a> {
    /// Descriptors that stay open in the payload.
    pub(crate) inherit: &'a [RawFd],
    /// The descriptor holds a read lease that must still hold right before
    /// the exec (see [`crate::launch::lock`]).
    pub(crate) leased: bool,
    /// Where `execveat` is refused, exec `/proc/self/fd/N` (the same open
    /// file) instead.
    pub(crate) by_path: bool,
}

/// Replaces this process with the file open at `fd`, passing `argv` and
/// this process's environment, as `how` says. Returns only on failure,
/// with `execveat`'s error.
pub(crate) fn exec_fd(fd: BorrowedFd<'_>, argv: &[OsString], how: How<'_>) -> io::Error {
    let How { inherit, leased, by_path } = how;
    let argv = match argv.iter().map(|a| c_string(a.as_bytes())).collect::<io::Result<Vec<_>>>() {
        Ok(a) => a,
        Err(e) => return e,
    };
    let envp = match environment(std::iter::empty()) {
        Ok(e) => e,
        Err(e) => return e,
    };
    if leased && !lease_held(fd.as_raw_fd()) {
        return changed();
    }
    for &keep in inherit {
        // SAFETY: `keep` is a descriptor the caller owns and keeps open;
        // clearing its close-on-exec flag touches nothing else.
        let fd = unsafe { BorrowedFd::borrow_raw(keep) };
        if let Err(e) = rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty()) {
            return e.into();
        }
    }
    // std ignores SIGPIPE in stigmer itself; the payload gets the default,
    // as from a shell (a spawned child has it reset by std already).
    let pipe = nix::sys::signal::Signal::SIGPIPE;
    // SAFETY: SIG_DFL and SIG_IGN install no handler: no code of ours runs
    // in signal context.
    let was = unsafe { nix::sys::signal::signal(pipe, nix::sys::signal::SigHandler::SigDfl) };
    let err = nix::unistd::execveat(fd, c"", &argv, &envp, nix::fcntl::AtFlags::AT_EMPTY_PATH)
        .unwrap_err();
    if by_path {
        if let Ok(path) = c_string(format!("/proc/self/fd/{}", fd.as_raw_fd()).as_bytes()) {
            let _ = nix::unistd::execve(&path, &argv, &envp);
        }
    }
    if let Ok(was) = was {
        // SAFETY: as above; this puts back what was there.
        let _ = unsafe { nix::sys::signal::signal(pipe, was) };
    }
    // Still here: whatever runs next (the cache, after a refusal) must not
    // inherit these.
    for &keep in inherit {
        // SAFETY: as above.
        let fd = unsafe { BorrowedFd::borrow_raw(keep) };
        let _ = rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::CLOEXEC);
    }
    io::Error::from(err)
}

/// Spawns `cmd` so that the child execs the file open at `fd` (with
/// `argv[0]` = `argv0`, then `cmd`'s arguments, and this process's
/// environment with `cmd`'s changes), as `how` says. Everything else `cmd`
/// was given (stdio, working folder, process group, its own `pre_exec`
/// steps) applies as usual, first.
///
/// Call it once per `Command`, which must not have been given `env_clear`
/// (std does not say whether it was). `fd` and the `inherit` descriptors
/// must stay open until this returns.
pub(crate) fn spawn_fd(
    cmd: &mut Command,
    fd: BorrowedFd<'_>,
    argv0: &OsStr,
    how: How<'_>,
) -> io::Result<Child> {
    let How { inherit, leased, by_path } = how;
    if inherit.len() > MAX_INHERIT {
        return Err(io::Error::other("too many descriptors to pass on"));
    }
    let argv = std::iter::once(c_string(argv0.as_bytes()))
        .chain(cmd.get_args().map(|a| c_string(a.as_bytes())))
        .collect::<io::Result<Vec<_>>>()?;
    let changes: Vec<(OsString, Option<OsString>)> =
        cmd.get_envs().map(|(k, v)| (k.to_owned(), v.map(OsStr::to_owned))).collect();
    let envp = environment(changes.into_iter())?;
    let path = c_string(format!("/proc/self/fd/{}", fd.as_raw_fd()).as_bytes())?;
    let argv_ptrs = Ptrs::new(&argv);
    let envp_ptrs = Ptrs::new(&envp);
    let raw = fd.as_raw_fd();
    let mut keep = [-1; MAX_INHERIT];
    keep[..inherit.len()].copy_from_slice(inherit);
    // The strings move into the closure with the pointers into them, so
    // they live as long as the command.
    let strings = (argv, envp, path);
    // SAFETY: the closure runs in the child between fork and exec. It makes
    // only raw fcntl(2), execveat(2) and execve(2) system calls (and builds
    // an io::Error from a raw errno, which does not allocate), which are
    // async-signal-safe, on descriptors and NUL-terminated arrays made
    // before the fork; it allocates nothing, takes no lock and reads only
    // `errno`. On success it does not return; on failure the error is the
    // spawn's.
    unsafe {
        cmd.pre_exec(move || {
            let (_, _, path) = &strings;
            if leased && !lease_held(raw) {
                return Err(changed());
            }
            for &k in keep.iter().filter(|&&k| k >= 0) {
                if nix::libc::fcntl(k, nix::libc::F_SETFD, 0) == -1 {
                    return Err(io::Error::last_os_error());
                }
            }
            nix::libc::syscall(
                nix::libc::SYS_execveat,
                raw,
                c"".as_ptr(),
                argv_ptrs.as_ptr(),
                envp_ptrs.as_ptr(),
                nix::libc::AT_EMPTY_PATH,
            );
            let refused = io::Error::last_os_error();
            if by_path {
                // The same open file through /proc, where execveat is refused.
                nix::libc::execve(path.as_ptr(), argv_ptrs.as_ptr(), envp_ptrs.as_ptr());
            }
            Err(refused)
        });
    }
    cmd.spawn()
}

/// This process's environment with `changes` applied, as `KEY=VALUE`;
/// without [`STIGMER_MAPPED`](crate::env::STIGMER_MAPPED), which stigmer
/// may have inherited from a mapped payload up its tree and which only the
/// mapped backend sets, among `changes`.
pub(super) fn environment(
    changes: impl Iterator<Item = (OsString, Option<OsString>)>,
) -> io::Result<Vec<CString>> {
    let mut vars: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(k, _)| k.as_bytes() != crate::env::STIGMER_MAPPED.as_bytes())
        .collect();
    for (key, value) in changes {
        vars.retain(|(k, _)| *k != key);
        if let Some(value) = value {
            vars.push((key, value));
        }
    }
    vars.iter().map(|(k, v)| c_string(&[k.as_bytes(), b"=", v.as_bytes()].concat())).collect()
}

pub(super) fn c_string(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(io::ErrorKind::InvalidInput, "an argument or variable contains a NUL byte")
    })
}

/// A NULL-terminated array of pointers into strings that outlive it, for a
/// `pre_exec` closure, which must be `Send + Sync`.
pub(crate) struct Ptrs(Vec<*const nix::libc::c_char>);

impl Ptrs {
    pub(crate) fn new(strings: &[CString]) -> Ptrs {
        Ptrs(strings.iter().map(|s| s.as_ptr()).chain(std::iter::once(std::ptr::null())).collect())
    }

    /// The array, for a C call. A method, so that a closure captures the
    /// whole wrapper rather than its field.
    pub(crate) fn as_ptr(&self) -> *const *const nix::libc::c_char {
        self.0.as_ptr()
    }
}

// SAFETY: the pointers are only read, in the forked child, while the
// strings they point to are alive (moved into the same closure).
unsafe impl Send for Ptrs {}
// SAFETY: as above; nothing writes through them.
unsafe impl Sync for Ptrs {}
