//! Linux: exec from memory, exec by descriptor, read leases.
//!
//! One of the two platform modules, chosen once in `launch/mod.rs`; the
//! other (`imp/other.rs`) has the same items, disabled. What is here:
//!
//! - [`MemfdLauncher`] and its [`Image`]s: payloads sealed in memfds
//!   (`memfd.rs`); and [`AssetImage`]s: assets sealed in memfds that are
//!   not executable, passed to the services that read them;
//! - [`spawn_entry`] and [`exec_entry`]: what runs is the descriptor that
//!   was checked (`spawn.rs`, which memfds use too), so [`EXEC_BY_FD`];
//! - [`hold_bytes`]: read leases on cache entries (`lease.rs`);
//! - the probes of `stigmer doctor`: [`probe_memfd`], [`is_probe_exe`],
//!   [`mount_noexec`].

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{BorrowedFd, RawFd};
use std::process::{Child, Command};
use std::time::Instant;

use crate::launch::{Backend, MemfdProbe};

mod elf;
mod lease;
mod mapped;
mod memfd;
mod spawn;

pub(crate) use lease::hold_bytes;
pub(crate) use mapped::MappedImage;
pub use memfd::MemfdLauncher;
pub(crate) use memfd::{AssetImage, Image};

/// `payload` as the mapped backend runs it, or why it cannot: it must be
/// an ELF executable of this architecture stored as it is (not compressed),
/// on a page boundary in stigmer's own file, on a host that allows the
/// mapped loader (see [`mapped::Host`]).
pub(crate) fn mapped_image(payload: &crate::Payload) -> Result<MappedImage, &'static str> {
    match payload.kind() {
        crate::Kind::Elf => {}
        crate::Kind::Script => return Err("a #! script, which its interpreter reads"),
        crate::Kind::PyInstaller => return Err("PyInstaller one-file, which reopens its own path"),
        _ => return Err("not an ELF executable"),
    }
    if *payload.encoding() != crate::Encoding::Raw {
        return Err("stored compressed, so its bytes are not in stigmer's file as they run");
    }
    let (exe, offset) = memfd::locate_in_self(payload.data())
        .ok_or("its bytes are not found in stigmer's own file")?;
    MappedImage::new(exe, offset, payload.data(), payload.name())
}

/// Whether the mapped loader works here, or why not (`stigmer doctor`).
pub(crate) fn probe_mapped() -> Result<(), &'static str> {
    mapped::Host::get()?.probe()
}

/// Whether the kernel exec'd this process through a `/proc` link to a
/// process's executable (`/proc/self/exe`, `/proc/thread-self/exe`,
/// `/proc/PID/exe`, `/proc/PID/task/TID/exe`): the path execve(2) was
/// given, which it leaves in the auxiliary vector as `AT_EXECFN`. That is
/// how a program re-execs itself, whatever `argv[0]` it passes.
pub(crate) fn exec_through_proc_exe() -> bool {
    is_proc_exe(rustix::param::linux_execfn().to_bytes())
}

fn is_proc_exe(path: &[u8]) -> bool {
    let number = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
    let Some(rest) = path.strip_prefix(b"/proc/").and_then(|p| p.strip_suffix(b"/exe")) else {
        return false;
    };
    let parts: Vec<&[u8]> = rest.split(|&b| b == b'/').collect();
    match parts[..] {
        [b"self" | b"thread-self"] => true,
        [pid] => number(pid),
        [pid, b"task", tid] => number(pid) && number(tid),
        _ => false,
    }
}

/// The backend `auto` means on this platform.
pub(crate) const NATIVE: Backend = Backend::Memfd;

/// Whether a checked cache entry is exec'd by its descriptor here (not by
/// its path): yes, so what runs is what was hashed.
pub(crate) const EXEC_BY_FD: bool = true;

/// Spawns `cmd` so that the child execs the checked cache entry open at
/// `file`, with `argv[0]` = `argv0`, keeping `inherit` open; `leased`: the
/// descriptor holds a read lease, which must still hold right before the
/// exec. Where `execveat` is refused, the child execs `/proc/self/fd/N`.
pub(crate) fn spawn_entry(
    cmd: &mut Command,
    file: BorrowedFd<'_>,
    argv0: &OsStr,
    inherit: &[RawFd],
    leased: bool,
) -> io::Result<Child> {
    let how = spawn::How { inherit, leased, by_path: true };
    spawn::spawn_fd(cmd, file, argv0, how)
}

/// Replaces this process with the checked cache entry open at `file`, as
/// [`spawn_entry`] runs it in a child. Returns only on failure.
pub(crate) fn exec_entry(
    file: BorrowedFd<'_>,
    argv: &[OsString],
    inherit: &[RawFd],
    leased: bool,
) -> io::Error {
    let how = spawn::How { inherit, leased, by_path: true };
    spawn::exec_fd(file, argv, how)
}

/// The name of the memfd `doctor` runs stigmer's own executable from.
const PROBE_NAME: &str = "stigmer-doctor";

/// Whether this process runs from the sealed memfd [`probe_memfd`] made.
pub(crate) fn is_probe_exe() -> bool {
    let probe_exe = format!("/memfd:{PROBE_NAME} (deleted)");
    std::fs::read_link("/proc/self/exe").is_ok_and(|exe| exe.as_os_str() == probe_exe.as_str())
}

/// Asks the kernel for exec from memory, as payloads need it: a memfd made
/// as theirs are, `vm.memfd_noexec`, and stigmer's own executable run from
/// a sealed memfd with `env` set (it must exit at once, with status 0, when
/// [`is_probe_exe`] says so).
pub(crate) fn probe_memfd(env: &str) -> Option<MemfdProbe> {
    let create = memfd::memfd_create(PROBE_NAME).map(|(_, exec_flag)| exec_flag);
    let noexec = std::fs::read_to_string("/proc/sys/vm/memfd_noexec")
        .ok()
        .and_then(|v| v.trim().parse().ok());
    let start = Instant::now();
    let exec = memfd::run_self_sealed(PROBE_NAME, env).map(|()| start.elapsed());
    Some(MemfdProbe { create, noexec, exec })
}

/// Whether the file system `stat` describes is mounted `noexec`.
pub(crate) fn mount_noexec(stat: &nix::sys::statvfs::Statvfs) -> Option<bool> {
    Some(stat.flags().contains(nix::sys::statvfs::FsFlags::ST_NOEXEC))
}

#[cfg(test)]
mod tests {
    #[test]
    fn proc_exe_links_are_told_from_other_paths() {
        for link in
            ["/proc/self/exe", "/proc/thread-self/exe", "/proc/42/exe", "/proc/42/task/43/exe"]
        {
            assert!(super::is_proc_exe(link.as_bytes()), "{link}");
        }
        for other in [
            "/usr/bin/stigmer",
            "/proc/self/exe/x",
            "/proc/self/fd/3",
            "/proc/4x/exe",
            "/proc//exe",
            "/proc/self/root/usr/bin/stigmer",
            "proc/self/exe",
            "/proc/42/task/exe",
        ] {
            assert!(!super::is_proc_exe(other.as_bytes()), "{other}");
        }
    }
}
