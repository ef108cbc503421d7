//! Every environment variable stigmer reads, in one place.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::{Error, Result};

/// The cache's root folder. Default: `~/.stigmer`. Payload entries live in
/// `$STIGMER_HOME/bin/`, private temporary folders in `$STIGMER_HOME/tmp/`.
pub const STIGMER_HOME: &str = "STIGMER_HOME";

/// The launch backend: `auto` (the default), `memfd` or `cache`. The
/// `--backend` flag wins over it.
pub const STIGMER_BACKEND: &str = "STIGMER_BACKEND";

/// Build time only: the folder whose executables are embedded as payloads,
/// instead of `platform/<target-triple>/`. Read by `build.rs`, never at run
/// time.
pub const STIGMER_PAYLOAD_DIR: &str = "STIGMER_PAYLOAD_DIR";

/// Internal: set by `stigmer doctor` in the environment of the copy of
/// stigmer it runs from a sealed memfd, which then exits at once
/// ([`crate::doctor::answer_probe`]). Never set for a payload.
pub const STIGMER_DOCTOR_PROBE: &str = "STIGMER_DOCTOR_PROBE";

/// Set by the mapped backend in a payload's environment to the payload's
/// name (and dropped from every other launch's): a mapped payload's
/// `/proc/self/exe` is stigmer, so a payload that re-execs itself through
/// it reaches stigmer, which runs that payload again (see
/// [`crate::launch::mapped_reexec`]).
pub const STIGMER_MAPPED: &str = "STIGMER_MAPPED";

/// Test-only, and honoured only by debug builds (a release build ignores
/// it): when set and not empty, `stigmer server` panics in a task at a
/// reload (SIGUSR1), so a test can prove that a panic stops every service
/// before the process ends.
pub const STIGMER_TEST_PANIC: &str = "STIGMER_TEST_PANIC";

/// Test-only, and honoured only by debug builds: when set and not empty,
/// `stigmer` shows the cache's progress bar (on a terminal) from the first
/// byte instead of after 300 ms, so a test of the bar does not depend on how
/// fast the machine fills the cache.
pub const STIGMER_TEST_PROGRESS_AT_ONCE: &str = "STIGMER_TEST_PROGRESS_AT_ONCE";

/// The cache root: `$STIGMER_HOME`, else `$HOME/.stigmer`.
pub fn home() -> Result<PathBuf> {
    home_from(std::env::var_os(STIGMER_HOME), std::env::var_os("HOME"))
}

fn home_from(stigmer_home: Option<OsString>, home: Option<OsString>) -> Result<PathBuf> {
    if let Some(dir) = stigmer_home.filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    match home.filter(|v| !v.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".stigmer")),
        None => Err(Error::NoHome),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolution() {
        let h = |s: Option<&str>, home: Option<&str>| {
            home_from(s.map(Into::into), home.map(Into::into))
        };
        assert_eq!(h(Some("/x"), Some("/home/u")).unwrap(), PathBuf::from("/x"));
        assert_eq!(h(Some(""), Some("/home/u")).unwrap(), PathBuf::from("/home/u/.stigmer"));
        assert_eq!(h(None, Some("/home/u")).unwrap(), PathBuf::from("/home/u/.stigmer"));
        assert!(matches!(h(None, None), Err(Error::NoHome)));
    }
}
