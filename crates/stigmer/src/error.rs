//! The library's error type.
//!
//! One variant per operation that can fail, each carrying its subject (the
//! payload, the path) and, where there is one, the OS error behind it. The
//! message is one line that names the thing and, where there is one, the fix;
//! it already includes the cause, so print it with `{}`, not a chain.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// A `Result` with stigmer's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while finding, preparing and launching a
/// payload.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No payload has that name.
    #[error("no payload named {name:?}: this stigmer carries {}", known.join(", "))]
    UnknownPayload {
        /// The name asked for.
        name: String,
        /// The names this build carries.
        known: Vec<String>,
    },

    /// No asset has that name.
    #[error("no asset named {name:?}: this stigmer carries {}", carried(known))]
    UnknownAsset {
        /// The name asked for.
        name: String,
        /// The assets this build carries.
        known: Vec<String>,
    },

    /// A step of keeping an asset in a sealed memfd failed.
    #[error("cannot keep the asset {name} in a sealed memfd: {op}: {source}")]
    AssetMemfd {
        /// The asset.
        name: String,
        /// The step that failed.
        op: MemfdOp,
        /// Why.
        #[source]
        source: io::Error,
    },

    /// An asset could be kept neither in a sealed memfd nor in the cache.
    #[error(
        "cannot give the services the asset {name}: no sealed memfd ({memfd}) and the cache is \
         unusable ({cache}); set STIGMER_HOME to a writable folder"
    )]
    NoAssetBackend {
        /// The asset.
        name: String,
        /// Why the memfd failed.
        memfd: Box<Error>,
        /// Why the cache failed.
        cache: Box<Error>,
    },

    /// A backend name that is not `auto`, `memfd` or `cache`.
    #[error("unknown backend {0:?}: use auto, memfd, mapped or cache")]
    UnknownBackend(String),

    /// The memfd backend was asked for where it does not exist.
    #[error("the memfd backend needs Linux: use --backend auto or --backend cache")]
    MemfdUnsupported,

    /// The mapped backend was asked for a payload it cannot map.
    #[error("{name} cannot be mapped: {why}; use --backend auto or --backend memfd")]
    NotMappable {
        /// The payload.
        name: String,
        /// Why, in a few words.
        why: &'static str,
    },

    /// Neither `STIGMER_HOME` nor `HOME` is set.
    #[error("cannot find a folder for the cache: set STIGMER_HOME (or HOME)")]
    NoHome,

    /// A step of making the payload's sealed memfd failed.
    #[error("cannot run {name} from memory: {op}: {source}")]
    Memfd {
        /// The payload.
        name: String,
        /// The step that failed.
        op: MemfdOp,
        /// Why.
        #[source]
        source: io::Error,
    },

    /// A cache folder exists but cannot be trusted.
    #[error("refusing the cache folder {}: {reason}; {fix}", path.display())]
    UntrustedCache {
        /// The folder.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
        /// How to make it right.
        fix: String,
    },

    /// Reading or writing the cache failed.
    #[error("cannot {op} {}: {source}; {}", path.display(), cache_fix(source))]
    Cache {
        /// What stigmer was doing.
        op: CacheOp,
        /// The file or folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },

    /// The bytes embedded in this binary do not hash to their build-time
    /// sha256: the stigmer binary itself is damaged.
    #[error(
        "the embedded payload {name} is corrupt (sha256 {actual}, built as {expected}): reinstall stigmer"
    )]
    CorruptPayload {
        /// The payload.
        name: String,
        /// The build-time sha256.
        expected: String,
        /// What the bytes hash to.
        actual: String,
    },

    /// A compressed payload could not be decompressed.
    #[error("cannot decompress the embedded payload {name}: {source}; reinstall stigmer")]
    Decode {
        /// The payload.
        name: String,
        /// Why.
        #[source]
        source: io::Error,
    },

    /// Exec from memory was refused and the cache cannot be used either.
    #[error(
        "cannot run {name}: the kernel refuses exec from memory ({memfd}) and the cache is unusable ({cache}); \
         set STIGMER_HOME to a writable folder that allows exec (in a container, mount a volume there)"
    )]
    NoBackend {
        /// The payload.
        name: String,
        /// Why the memfd backend failed.
        memfd: Box<Error>,
        /// Why the cache backend failed.
        cache: Box<Error>,
    },

    /// A payload that runs from the cache could not get a good entry.
    #[error("{name} runs from the cache, and {source}")]
    NeedsCache {
        /// The payload.
        name: String,
        /// What went wrong with the cache.
        source: Box<Error>,
    },

    /// Starting the payload failed.
    #[error("cannot start {name}: {source}")]
    Exec {
        /// The payload.
        name: String,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// A step of making a payload's sealed memfd: what [`Error::Memfd`] says
/// failed, in the words of the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MemfdOp {
    /// `memfd_create`.
    Create,
    /// Filling it from the executable with `sendfile`.
    Sendfile,
    /// Filling it with `write`.
    Write,
    /// Sealing it (`F_ADD_SEALS`).
    AddSeals,
    /// Making an asset's memfd read-only (`fchmod`).
    Chmod,
}

impl MemfdOp {
    /// The call, as the error message names it.
    pub fn as_str(self) -> &'static str {
        match self {
            MemfdOp::Create => "memfd_create",
            MemfdOp::Sendfile => "sendfile",
            MemfdOp::Write => "write",
            MemfdOp::AddSeals => "F_ADD_SEALS",
            MemfdOp::Chmod => "fchmod",
        }
    }
}

impl fmt::Display for MemfdOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What stigmer was doing to the cache when [`Error::Cache`] happened; the
/// message reads "cannot {op} {path}".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CacheOp {
    /// Making `STIGMER_HOME` absolute.
    ResolveHome,
    /// Reading a folder above the cache.
    ReadAbove,
    /// Creating one of the cache's folders.
    CreateFolder,
    /// Reading one of the cache's folders.
    ReadFolder,
    /// Opening an entry's folder, to lock it.
    OpenFolder,
    /// Locking an entry's folder.
    LockFolder,
    /// Creating a private `TMPDIR` in a folder.
    CreateFolderIn,
    /// Creating a fill's temporary file in a folder.
    CreateFileIn,
    /// Writing a fill's temporary file.
    WriteFileIn,
    /// Making a fill's temporary file read-only.
    SetPermissionsIn,
    /// Syncing a fill's temporary file.
    SyncFileIn,
    /// Renaming a fill's temporary file into place.
    RenameFileIn,
    /// Getting a good entry in place, which other writers kept changing.
    Settle,
    /// Removing an entry, a folder or a temporary file.
    Remove,
}

impl CacheOp {
    /// What stigmer was doing, as the error message says it.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheOp::ResolveHome => "resolve the cache folder",
            CacheOp::ReadAbove => "read the folder above the cache",
            CacheOp::CreateFolder => "create the cache folder",
            CacheOp::ReadFolder => "read the cache folder",
            CacheOp::OpenFolder => "open the cache folder",
            CacheOp::LockFolder => "lock the cache folder",
            CacheOp::CreateFolderIn => "create a folder in",
            CacheOp::CreateFileIn => "create a file in",
            CacheOp::WriteFileIn => "write a file in",
            CacheOp::SetPermissionsIn => "set permissions in",
            CacheOp::SyncFileIn => "sync a file in",
            CacheOp::RenameFileIn => "rename a file in",
            CacheOp::Settle => "settle the cache entry",
            CacheOp::Remove => "remove",
        }
    }
}

impl fmt::Display for CacheOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Error {
    /// Whether the error comes from what the user asked for (a name, a
    /// flag), as opposed to a failure of the machine or the binary. The CLI
    /// exits 2 for these and 1 for the rest.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Error::UnknownPayload { .. }
                | Error::UnknownAsset { .. }
                | Error::UnknownBackend(_)
                | Error::MemfdUnsupported
        )
    }

    /// Whether this error means the kernel refuses to exec from a memfd here
    /// (`vm.memfd_noexec=2`, a seccomp filter, an LSM, an old kernel), so the
    /// cache should be used instead.
    pub fn is_exec_refused(&self) -> bool {
        let source = match self {
            Error::Memfd { source, .. } | Error::Exec { source, .. } => source,
            _ => return false,
        };
        matches!(source.kind(), io::ErrorKind::PermissionDenied | io::ErrorKind::Unsupported)
            || matches!(source.raw_os_error(), Some(code) if is_refusal(code))
    }
}

/// Names for a message, or "none".
fn carried(names: &[String]) -> String {
    if names.is_empty() { "none".to_owned() } else { names.join(", ") }
}

/// EACCES, EPERM and ENOSYS: what `memfd_create` and `execveat` return when
/// policy (or age) forbids them.
fn is_refusal(code: i32) -> bool {
    use nix::errno::Errno;
    matches!(Errno::from_raw(code), Errno::EPERM | Errno::EACCES | Errno::ENOSYS)
}

/// How to get past a cache error, by its cause.
fn cache_fix(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
            "free some space there, or set STIGMER_HOME to a volume with room for the payloads"
        }
        io::ErrorKind::ReadOnlyFilesystem => {
            "mount a writable volume and set STIGMER_HOME to it (a read-only root needs one)"
        }
        _ => "make it writable, or set STIGMER_HOME to a folder that is",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_send_sync() {
        fn check<T: Send + Sync + 'static>() {}
        check::<Error>();
    }

    #[test]
    fn refusals() {
        let err = |code| Error::Memfd {
            name: "api".into(),
            op: MemfdOp::Create,
            source: io::Error::from_raw_os_error(code),
        };
        for code in [nix::libc::EPERM, nix::libc::EACCES, nix::libc::ENOSYS] {
            assert!(err(code).is_exec_refused(), "{code}");
        }
        assert!(!err(nix::libc::ENOSPC).is_exec_refused(), "ENOSPC is not a refusal");
        assert!(!Error::NoHome.is_exec_refused());
    }

    #[test]
    fn operations_read_as_before() {
        let e = Error::Memfd {
            name: "api".into(),
            op: MemfdOp::AddSeals,
            source: io::Error::from_raw_os_error(nix::libc::EBUSY),
        };
        assert!(e.to_string().starts_with("cannot run api from memory: F_ADD_SEALS: "), "{e}");
        let e = Error::Cache {
            op: CacheOp::ReadAbove,
            path: "/x".into(),
            source: io::Error::from(io::ErrorKind::PermissionDenied),
        };
        assert!(e.to_string().starts_with("cannot read the folder above the cache /x: "), "{e}");
    }

    #[test]
    fn unknown_payload_lists_names() {
        let e = Error::UnknownPayload { name: "x".into(), known: vec!["a".into(), "b".into()] };
        assert_eq!(e.to_string(), r#"no payload named "x": this stigmer carries a, b"#);
        assert!(e.is_usage());
    }
}
