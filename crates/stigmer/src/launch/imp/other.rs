//! Everywhere but Linux (macOS): no memfd, no exec by descriptor, no read
//! leases.
//!
//! One of the two platform modules, chosen once in `launch/mod.rs`: the
//! same items as `imp/linux/mod.rs`, disabled, so that the code that uses
//! them is the same everywhere. [`MemfdLauncher`] refuses with
//! [`Error::MemfdUnsupported`], so no [`Image`] is ever made; a cache entry
//! is exec'd by path ([`EXEC_BY_FD`]), through `launch/exec.rs`, which Linux
//! compiles and tests too.

use std::convert::Infallible;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{BorrowedFd, RawFd};
use std::process::{Child, Command};

use crate::launch::{Backend, MemfdProbe};
use crate::{Error, Payload, Result};

/// The backend `auto` means on this platform.
pub(crate) const NATIVE: Backend = Backend::Cache;

/// Whether a checked cache entry is exec'd by its descriptor here (not by
/// its path): no, there is no exec by descriptor.
pub(crate) const EXEC_BY_FD: bool = false;

/// The memfd backend, which needs Linux: here
/// [`Launch::prepare`](crate::Launch::prepare) fails with
/// [`Error::MemfdUnsupported`].
#[derive(Debug, Default)]
pub struct MemfdLauncher {
    _private: (),
}

impl MemfdLauncher {
    /// A launcher that refuses every payload on this platform.
    pub fn new() -> MemfdLauncher {
        MemfdLauncher::default()
    }

    /// Never: there is no memfd here.
    pub(crate) fn image(&self, _payload: &Payload) -> Result<Image> {
        Err(Error::MemfdUnsupported)
    }

    /// Never: there is no memfd here; assets come from the cache.
    pub(crate) fn asset(&self, _asset: &Payload) -> Result<AssetImage> {
        Err(Error::MemfdUnsupported)
    }
}

/// An asset sealed in a memfd: none can exist here.
#[derive(Clone, Debug)]
pub(crate) struct AssetImage {
    never: Infallible,
}

impl AssetImage {
    /// Never called: no `AssetImage` exists here.
    pub(crate) fn path(&self) -> std::path::PathBuf {
        match self.never {}
    }

    /// Never called: no `AssetImage` exists here.
    pub(crate) fn pass_to(&self, _cmd: &mut Command) {
        match self.never {}
    }
}

/// A payload sealed in a memfd: none can exist here.
#[derive(Clone, Debug)]
pub(crate) struct Image {
    never: Infallible,
}

impl Image {
    /// Never called: no `Image` exists here.
    pub(crate) fn command(&self, _argv0: &OsStr) -> Command {
        match self.never {}
    }

    /// Never called: no `Image` exists here.
    pub(crate) fn spawn(&self, _cmd: &mut Command, _name: &OsStr) -> io::Result<Child> {
        match self.never {}
    }

    /// Never called: no `Image` exists here.
    pub(crate) fn exec<I, S>(&self, _argv0: &OsStr, _args: I) -> io::Error
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        match self.never {}
    }
}

/// A payload mapped from stigmer's own file: none can exist here.
#[derive(Clone, Debug)]
pub(crate) struct MappedImage {
    never: Infallible,
}

impl MappedImage {
    /// Never called: no `MappedImage` exists here.
    pub(crate) fn with_fallback(self) -> MappedImage {
        match self.never {}
    }

    /// Never called: no `MappedImage` exists here.
    pub(crate) fn spawn(&self, _cmd: &mut Command, _argv0: &OsStr) -> io::Result<Child> {
        match self.never {}
    }

    /// Never called: no `MappedImage` exists here.
    pub(crate) fn exec(&self, _argv: &[OsString]) -> io::Error {
        match self.never {}
    }
}

/// Never: the mapped loader is Linux's.
pub(crate) fn mapped_image(_payload: &Payload) -> std::result::Result<MappedImage, &'static str> {
    Err(MAPPED_UNSUPPORTED)
}

/// Never: the mapped loader is Linux's.
pub(crate) fn probe_mapped() -> std::result::Result<(), &'static str> {
    Err(MAPPED_UNSUPPORTED)
}

/// Never: no payload is mapped here, so none re-execs stigmer.
pub(crate) fn exec_through_proc_exe() -> bool {
    false
}

const MAPPED_UNSUPPORTED: &str = "the mapped backend needs Linux";

fn unsupported() -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, "no exec by descriptor on this platform")
}

/// No exec by descriptor here ([`EXEC_BY_FD`]).
pub(crate) fn spawn_entry(
    _cmd: &mut Command,
    _file: BorrowedFd<'_>,
    _argv0: &OsStr,
    _inherit: &[RawFd],
    _leased: bool,
) -> io::Result<Child> {
    Err(unsupported())
}

/// No exec by descriptor here ([`EXEC_BY_FD`]).
pub(crate) fn exec_entry(
    _file: BorrowedFd<'_>,
    _argv: &[OsString],
    _inherit: &[RawFd],
    _leased: bool,
) -> io::Error {
    unsupported()
}

/// No leases here: the check stands alone (see `launch/lock.rs`).
pub(crate) fn hold_bytes(_file: &File) -> io::Result<bool> {
    Ok(false)
}

/// Never: there is no probe here.
pub(crate) fn is_probe_exe() -> bool {
    false
}

/// Probes exec from memory: there is no memfd here, so `None`.
pub(crate) fn probe_memfd(_env: &str) -> Option<MemfdProbe> {
    None
}

/// Not known here.
pub(crate) fn mount_noexec(_stat: &nix::sys::statvfs::Statvfs) -> Option<bool> {
    None
}
