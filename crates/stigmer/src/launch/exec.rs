//! Exec of a checked cache entry by its path, where there is no exec by
//! descriptor.
//!
//! Where the kernel can exec a descriptor (Linux, `imp::EXEC_BY_FD`), the
//! platform module execs the very descriptor that was hashed
//! (`imp::spawn_entry`, `imp::exec_entry`). Where it cannot (macOS), the
//! entry's path is
//! exec'd right after its check, by the functions here; the folder checks of
//! the cache keep other users from swapping it in between. These functions
//! are compiled, and tested, on Linux too, where nothing else calls them.

use std::ffi::OsStr;
use std::io;
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command};

use super::cache::Checked;

/// Spawns `cmd`, which names a cache entry by path, right after `checked`
/// was checked, keeping `inherit` open in the child.
pub(crate) fn spawn_by_path(
    cmd: &mut Command,
    checked: Checked,
    inherit: Vec<RawFd>,
) -> io::Result<Child> {
    // The path is exec'd, not the descriptor: nothing to hold.
    drop(checked);
    inherit_in_child(cmd, inherit);
    cmd.spawn()
}

/// Replaces this process with `cmd`, which names a cache entry by path,
/// right after `checked` was checked, passing `args` and keeping `inherit`
/// open. Returns only on failure.
pub(crate) fn exec_by_path<I, S>(
    mut cmd: Command,
    args: I,
    checked: Checked,
    inherit: Vec<RawFd>,
) -> io::Error
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    drop(checked);
    inherit_in_child(&mut cmd, inherit);
    cmd.args(args).exec()
}

/// Keeps `fds` open across the exec of `cmd` (an exec by descriptor does
/// this itself).
fn inherit_in_child(cmd: &mut Command, fds: Vec<RawFd>) {
    if fds.is_empty() {
        return;
    }
    // SAFETY: the closure runs in the child between fork and exec and makes
    // only fcntl(2) calls, which are async-signal-safe, on descriptors the
    // parent keeps open until the spawn returns; it reads a vector made
    // before the fork and allocates nothing.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &fds {
                if nix::libc::fcntl(fd, nix::libc::F_SETFD, 0) == -1 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd as _;

    fn checked() -> Checked {
        Checked { file: std::fs::File::open("/dev/null").unwrap(), leased: false }
    }

    #[test]
    fn spawn_by_path_keeps_only_what_it_is_told_to() {
        // std opens files close-on-exec: only an inherited one is seen.
        let kept = std::fs::File::open("/dev/null").unwrap();
        let fd = kept.as_raw_fd();
        let sees = |inherit: Vec<RawFd>| {
            let mut cmd = Command::new("/bin/sh");
            cmd.args(["-c", &format!("test -e /dev/fd/{fd}")]);
            spawn_by_path(&mut cmd, checked(), inherit).unwrap().wait().unwrap().success()
        };
        assert!(sees(vec![fd]), "an inherited descriptor stays open");
        assert!(!sees(Vec::new()), "nothing else does");
    }

    #[test]
    fn exec_by_path_returns_the_error_of_a_failed_exec() {
        let cmd = Command::new("/nonexistent/stigmer-test");
        let err = exec_by_path(cmd, ["x"], checked(), Vec::new());
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
