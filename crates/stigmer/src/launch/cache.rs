//! The cache backend (macOS, and Linux where exec from memory is refused):
//! payloads run from verified files in a private, content-addressed folder.
//!
//! Layout: `$STIGMER_HOME/bin/v1/<sha256>/<name>`. The `v1` is the layout's
//! version: a new layout gets a new folder and never reads an old one.
//!
//! **Who can touch it.** `STIGMER_HOME` is made absolute once (its parent
//! resolved with `realpath`). Every folder above it, up to `/`, must be
//! owned by root or by this user and not writable by group or others,
//! unless it is a sticky folder owned by root (`/tmp`): the rule OpenSSH
//! applies to the folders above `authorized_keys`. Every folder stigmer uses
//! below it must be a real folder (not a symlink) of this user that nobody
//! else can write to. Anything else is refused before anything runs: a user
//! who can rename a folder on the way could swap an entry between its check
//! and its exec. These checks run before every launch, on every platform.
//!
//! **What runs is what was hashed.** Before every launch (every spawn and
//! every restart of a service too) the entry is opened without following
//! links and checked: a regular file, ours, not writable by others, one
//! link, the right size, the right sha256. On Linux that very descriptor is
//! exec'd (`execveat`, see `imp/linux/spawn.rs`), so no rename or swap of any
//! path after the check changes what runs. On macOS (no exec by descriptor)
//! the path is exec'd right after the check; the folder rules above keep
//! other users from swapping it. A missing or bad entry is refilled from
//! the embedded bytes, never executed.
//!
//! **Writes.** An entry is written to a temporary file in its own folder
//! (locked by its writer while it writes), hashed while it is written,
//! fsynced, made read-only (`0500`; an asset's `0400`) and renamed into place: a new inode
//! every time, never rewritten in place (macOS kills a signed binary
//! rewritten in place). Many processes filling the same entry at once all
//! succeed: the first rename wins and the others find a good entry.
//!
//! **Liveness is a lock, never a pid** (pids do not cross pid namespaces).
//! A stigmer that may exec an entry holds a shared `flock` on the entry's
//! folder for as long as it may (a server: its whole life); `cache prune`
//! removes an entry of another build only when it can take that lock
//! exclusively *and* the folder was last used more than [`UNUSED_FOR`] ago.
//! A fill holds a lock on its temporary file; a PyInstaller payload's
//! private `TMPDIR` is locked by the payload itself (the locked descriptor
//! is inherited), so it is never removed while the payload runs, even after
//! its stigmer was killed.

use std::fs::{self, File};
use std::io::{self, Read as _, Write as _};
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sha2::{Digest as _, Sha256};
use tracing::{debug, warn};

mod folders;

use super::buf::AlignedBuf;
use crate::{CacheOp, Digest, Error, Payload, Result};
pub use folders::{Layout, Survey, Trust};
use folders::{private_dir, resolve_home, trusted_ancestors};

/// How long an entry of a payload this build does not carry must have gone
/// unused (by any stigmer) before `stigmer cache prune` removes it.
pub const UNUSED_FOR: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// How a temporary file in an entry's folder is named: this prefix, the
/// writer's pid, `-`, random characters. Its writer holds a lock on it.
const TEMP: &str = ".tmp-";

/// Where a folder being removed goes first, so that no stigmer finds it
/// half-removed under its real name.
const TRASH: &str = ".trash-";

/// How a private `TMPDIR` is named under `$STIGMER_HOME/tmp/`.
const RUN: &str = "run-";

/// A private `TMPDIR` or a fill's temporary file that nobody holds a lock
/// on is removed only once it is this old, so that one just made (not yet
/// locked by its maker) is never taken.
const GRACE: Duration = Duration::from_secs(60);

/// Writes and verifies cache entries under one root folder.
#[derive(Clone, Debug)]
pub struct CacheLauncher {
    /// The absolute root, or why there is none.
    home: std::result::Result<PathBuf, HomeError>,
    progress: Option<Arc<dyn FillProgress>>,
}

#[derive(Clone, Debug)]
enum HomeError {
    Missing,
    Unresolved(PathBuf, Arc<io::Error>),
}

/// Told about cache fills as they go, to show progress: a first run on
/// macOS fills an entry per payload, which takes a while for large ones.
/// The `stigmer` binary draws a bar on a terminal.
pub trait FillProgress: Send + Sync + std::fmt::Debug {
    /// A fill of `len` bytes for payload `name` starts; the returned ticker
    /// is told every step and dropped when the fill ends, however it ends.
    fn start(&self, name: &str, len: u64) -> Box<dyn FillTicker>;
}

/// One fill in progress: see [`FillProgress`].
pub trait FillTicker {
    /// `bytes` more were written.
    fn advance(&mut self, bytes: u64);
}

/// A payload's cache entry, ready to be verified and exec'd any number of
/// times: cloning it is cheap, and its folder stays locked (so no `cache
/// prune` removes it) until the last clone is dropped.
#[derive(Clone, Debug)]
pub(crate) struct Entry(Arc<EntryInner>);

#[derive(Debug)]
struct EntryInner {
    cache: CacheLauncher,
    payload: Payload,
    dir: PathBuf,
    path: PathBuf,
    /// A shared lock on `dir`: this stigmer may exec the entry.
    lock: Lock,
    /// A private, exec-capable `TMPDIR` for payloads that unpack themselves
    /// (PyInstaller), removed when the entry is dropped.
    tmpdir: Option<PrivateTmp>,
    /// The descriptor `entry()` checked, for an exec that follows at once
    /// (`stigmer run`), so a payload is not hashed twice in a row.
    checked: std::sync::Mutex<Option<Checked>>,
}

/// A private temporary folder, locked for as long as a payload may use it.
/// Dropped, it is removed only if nothing else holds it any more (what the
/// payload left running keeps its inherited lock, and the folder).
#[derive(Debug)]
pub(crate) struct PrivateTmp {
    path: PathBuf,
    lock: Option<Lock>,
}

impl Drop for PrivateTmp {
    fn drop(&mut self) {
        // Close our descriptor (never unlock: the payload shares the lock).
        drop(self.lock.take());
        if unlocked(&self.path) {
            let _ = fs::remove_dir_all(&self.path);
        } else {
            debug!("{} is still in use: left for a later cleaner", self.path.display());
        }
    }
}

/// A `flock` held through one open file description, released when the
/// last descriptor of it closes: never unlocked explicitly, because a
/// payload may share the description (an inherited descriptor) and must
/// keep the lock after stigmer lets go.
#[derive(Debug)]
pub(crate) struct Lock(File);

impl Lock {
    fn new(file: File, op: LockOp) -> io::Result<Lock> {
        super::flock(&file, op)?;
        Ok(Lock(file))
    }

    fn raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}

/// How to lock, for [`Lock::new`].
#[derive(Clone, Copy, Debug)]
pub(crate) enum LockOp {
    /// Shared, waiting for an exclusive holder to let go.
    Shared,
    /// Exclusive, or fail at once (`WouldBlock`).
    TryExclusive,
}

/// An entry's descriptor, checked: exec this.
#[derive(Debug)]
pub(crate) struct Checked {
    /// Opened read-only, without following a link.
    pub(crate) file: File,
    /// It holds a read lease (Linux): the exec must make sure it still does
    /// (a lease that was broken means someone opened it for writing).
    pub(crate) leased: bool,
}

/// What checking an entry found.
enum Check {
    Good(Checked),
    Missing,
    Bad(String),
}

impl CacheLauncher {
    /// A cache rooted at `home` (see [`crate::env::home`]), made absolute
    /// now, once: a relative path is taken from the current folder, and
    /// the folder that holds `home` is resolved with `realpath`, so no later
    /// change of folder or of a symlink on the way changes which files run.
    /// `None` means no home could be found; the error comes when the cache
    /// is first used.
    pub fn new(home: Option<PathBuf>) -> CacheLauncher {
        let home = match home {
            None => Err(HomeError::Missing),
            Some(path) => resolve_home(&path).map_err(|e| HomeError::Unresolved(path, Arc::new(e))),
        };
        CacheLauncher { home, progress: None }
    }

    /// Reports every fill to `progress`.
    pub fn with_progress(mut self, progress: Arc<dyn FillProgress>) -> CacheLauncher {
        self.progress = Some(progress);
        self
    }

    /// The cache root, absolute.
    pub fn home(&self) -> Result<&Path> {
        match &self.home {
            Ok(home) => Ok(home),
            Err(HomeError::Missing) => Err(Error::NoHome),
            Err(HomeError::Unresolved(path, e)) => Err(Error::Cache {
                op: CacheOp::ResolveHome,
                path: path.clone(),
                source: io::Error::new(e.kind(), e.to_string()),
            }),
        }
    }

    /// Where this cache keeps things, under its root.
    pub fn layout(&self) -> Result<Layout> {
        Ok(Layout::new(self.home()?))
    }

    /// The folder that holds this layout's entries, created private if it is
    /// missing and refused if it, or any folder above it, cannot be trusted.
    pub fn bin_dir(&self) -> Result<PathBuf> {
        let layout = self.layout()?;
        trusted_ancestors(&layout.root)?;
        private_dir(&layout.root, true)?;
        trusted_ancestors(&layout.root)?;
        private_dir(&layout.bin, false)?;
        private_dir(&layout.entries, false)?;
        Ok(layout.entries)
    }

    /// Makes sure a good entry for `payload` exists, locks its folder for as
    /// long as the returned [`Entry`] lives, and returns it.
    pub(crate) fn entry(&self, payload: &Payload) -> Result<Entry> {
        let dir = self.bin_dir()?.join(payload.sha256().to_string());
        let lock = lock_entry_dir(&dir)?;
        let path = dir.join(payload.name());
        // Fill and check it now, so that a first launch fails early and
        // plainly; the private TMPDIR only then, so a fill that fails or is
        // killed leaves none.
        let file = self.open_checked(payload, &dir, &path)?;
        let tmpdir = match payload.kind().needs_real_path() {
            true => Some(self.tmpdir()?),
            false => None,
        };
        Ok(Entry(Arc::new(EntryInner {
            cache: self.clone(),
            payload: payload.clone(),
            dir,
            path,
            lock,
            tmpdir,
            checked: std::sync::Mutex::new(Some(file)),
        })))
    }

    /// A new private temporary folder under `$STIGMER_HOME/tmp/`, locked
    /// by this process (and by the payload that inherits the lock). Folders
    /// that nobody holds are removed first.
    fn tmpdir(&self) -> Result<PrivateTmp> {
        let tmp = self.layout()?.tmp;
        private_dir(&tmp, false)?;
        remove_unlocked_tmpdirs(&tmp);
        let err = |source| Error::Cache { op: CacheOp::CreateFolderIn, path: tmp.clone(), source };
        let dir = tempfile::Builder::new().prefix(RUN).tempdir_in(&tmp).map_err(err)?;
        let file = open_dir(dir.path()).map_err(err)?;
        let lock = Lock::new(file, LockOp::TryExclusive).map_err(err)?;
        Ok(PrivateTmp { path: dir.keep(), lock: Some(lock) })
    }
}

impl Entry {
    /// The entry's path.
    pub(crate) fn path(&self) -> &Path {
        &self.0.path
    }

    /// Whether the payload is a `#!` script.
    pub(crate) fn is_script(&self) -> bool {
        self.0.payload.kind() == crate::Kind::Script
    }

    /// The private `TMPDIR`, for payloads that need one.
    pub(crate) fn tmpdir(&self) -> Option<&Path> {
        self.0.tmpdir.as_ref().map(|t| t.path.as_path())
    }

    /// The descriptors the payload keeps open: the locks on its private
    /// `TMPDIR` and on its entry's folder, so that neither is removed while
    /// it runs, even if its stigmer is gone. None for other payloads.
    pub(crate) fn inherited(&self) -> Vec<std::os::fd::RawFd> {
        match &self.0.tmpdir {
            Some(tmp) => tmp.lock.iter().map(Lock::raw_fd).chain([self.0.lock.raw_fd()]).collect(),
            None => Vec::new(),
        }
    }

    /// The descriptor checked when the entry was made, once, if nothing
    /// took it yet: for an exec that follows the `prepare` at once.
    pub(crate) fn take_checked(&self) -> Option<Checked> {
        self.0.checked.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Opens the entry, checked now: the folders on the way are trusted, and
    /// the file is a regular file of ours, read-only to others, with one
    /// link, the right size and the right sha256. A missing or bad entry is
    /// replaced from the embedded bytes first, never returned. Exec the
    /// returned descriptor (Linux), or the path while nothing else happens
    /// (macOS).
    pub(crate) fn open(&self) -> Result<Checked> {
        let inner = &*self.0;
        inner.cache.open_checked(&inner.payload, &inner.dir, &inner.path)
    }
}

impl CacheLauncher {
    /// See [`Entry::open`].
    fn open_checked(&self, payload: &Payload, dir: &Path, path: &Path) -> Result<Checked> {
        // The folders above, and the entry's folder itself, again: this runs
        // before every launch, long after the entry was first made.
        self.bin_dir()?;
        private_dir(dir, false)?;
        // Three rounds: a concurrent writer can win a rename between our
        // check and ours, after which its entry is checked like any other.
        for _ in 0..3 {
            let replace = match check(path, payload.len(), payload.sha256()) {
                Check::Good(file) => return Ok(file),
                Check::Missing => false,
                Check::Bad(why) => {
                    warn!("cache entry {} {why}: replacing it", path.display());
                    true
                }
            };
            remove_unlocked_temps(dir);
            let ticker = self.progress.as_ref().map(|p| p.start(payload.name(), payload.len()));
            write_entry(dir, path, payload, replace, ticker)?;
        }
        Err(Error::Cache {
            op: CacheOp::Settle,
            path: path.to_owned(),
            source: io::Error::other("it kept changing while stigmer wrote it"),
        })
    }
}

/// Opens a folder itself (for a lock or a timestamp), never through a link.
fn open_dir(dir: &Path) -> io::Result<File> {
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_DIRECTORY | nix::libc::O_NOFOLLOW)
        .open(dir)
}

/// Creates (private) and share-locks an entry's folder, and marks it used
/// now. If the folder was removed between our open and our lock (a prune
/// holding it exclusively), the new one is locked instead.
fn lock_entry_dir(dir: &Path) -> Result<Lock> {
    let err = |op, source| Error::Cache { op, path: dir.to_owned(), source };
    for _ in 0..3 {
        private_dir(dir, false)?;
        let file = match open_dir(dir) {
            Ok(file) => file,
            // A prune took it between the two: make it again.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(err(CacheOp::OpenFolder, e)),
        };
        let lock = Lock::new(file, LockOp::Shared).map_err(|e| err(CacheOp::LockFolder, e))?;
        let held = lock.0.metadata().map_err(|e| err(CacheOp::ReadFolder, e))?;
        match fs::symlink_metadata(dir) {
            Ok(now) if (now.dev(), now.ino()) == (held.dev(), held.ino()) => {
                let now = nix::sys::time::TimeSpec::UTIME_NOW;
                // The last use, which `cache prune` ages entries by.
                if let Err(e) = nix::sys::stat::futimens(&lock.0, &now, &now) {
                    debug!("cannot mark {} used: {e}", dir.display());
                }
                return Ok(lock);
            }
            _ => continue,
        }
    }
    Err(err(CacheOp::LockFolder, io::Error::other("it kept being removed")))
}

/// Checks the entry at `path` the way it will be trusted: opened without
/// following a link, then its owner, mode, link count, size and sha256,
/// all read through the one descriptor that is returned. On Linux that
/// descriptor holds a read lease from before the hash until it is closed
/// (after the exec has begun): nobody has the file open for writing, and
/// whoever opens it for writing meanwhile waits (see [`super::hold_bytes`]).
fn check(path: &Path, len: u64, sha256: Digest) -> Check {
    let file =
        match fs::OpenOptions::new().read(true).custom_flags(nix::libc::O_NOFOLLOW).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Check::Missing,
            Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
                return Check::Bad("is a symlink".into());
            }
            Err(e) => return Check::Bad(format!("cannot be opened ({e})")),
        };
    let meta = match file.metadata() {
        Ok(m) => m,
        Err(e) => return Check::Bad(format!("cannot be read ({e})")),
    };
    let uid = nix::unistd::geteuid().as_raw();
    if !meta.is_file() {
        return Check::Bad("is not a regular file".into());
    }
    if meta.uid() != uid {
        return Check::Bad(format!("belongs to uid {}", meta.uid()));
    }
    if meta.mode() & 0o022 != 0 {
        return Check::Bad("is writable by group or others".into());
    }
    if meta.mode() & 0o200 != 0 {
        return Check::Bad(format!("is writable (mode {:o}), not read-only", meta.mode() & 0o7777));
    }
    let leased = match super::hold_bytes(&file) {
        Ok(leased) => leased,
        Err(e) => return Check::Bad(format!("is open for writing elsewhere ({e})")),
    };
    if meta.nlink() != 1 {
        return Check::Bad(format!("has {} hard links", meta.nlink()));
    }
    if meta.len() != len {
        return Check::Bad(format!("has {} bytes, not {len}", meta.len()));
    }
    match hash_file(&file) {
        Ok(actual) if actual == sha256 => Check::Good(Checked { file, leased }),
        Ok(actual) => Check::Bad(format!("is corrupt (sha256 {actual}, expected {sha256})")),
        Err(e) => Check::Bad(format!("cannot be read ({e})")),
    }
}

/// The sha256 of a file, reading each byte once from its start.
pub(crate) fn hash_file(file: &File) -> io::Result<Digest> {
    use std::os::unix::fs::FileExt as _;
    let mut hasher = Sha256::new();
    let mut buf = AlignedBuf::new(super::IO_BUF);
    let buf = buf.all();
    let mut offset = 0;
    loop {
        match file.read_at(buf, offset) {
            Ok(0) => return Ok(Digest(hasher.finalize().into())),
            Ok(n) => {
                hasher.update(&buf[..n]);
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Writes the payload to a temporary file beside `path` (locked while it
/// is written), checking its hash as it goes, and renames it into place:
/// over a bad entry when `replace`, otherwise only if no entry appeared
/// meanwhile.
fn write_entry(
    dir: &Path,
    path: &Path,
    payload: &Payload,
    replace: bool,
    mut ticker: Option<Box<dyn FillTicker>>,
) -> Result<()> {
    let cache_err = |op, source| Error::Cache { op, path: dir.to_owned(), source };
    let tmp = tempfile::Builder::new()
        .prefix(&format!("{TEMP}{}-", std::process::id()))
        .tempfile_in(dir)
        .map_err(|e| cache_err(CacheOp::CreateFileIn, e))?;
    // Held until the rename: a cleaner that can take it knows the writer is
    // gone. Cleaners leave files younger than GRACE alone, so nothing takes
    // it before this.
    if let Err(e) = super::flock(tmp.as_file(), LockOp::TryExclusive) {
        debug!("cannot lock {}: {e}; going round again", tmp.path().display());
        return Ok(());
    }
    let mut hasher = Sha256::new();
    let decode_err = |source| Error::Decode { name: payload.name().to_owned(), source };
    let mut bytes = payload.decode(payload.data()).map_err(decode_err)?;
    let mut buf = AlignedBuf::new(super::IO_BUF);
    let buf = buf.all();
    loop {
        let n = match bytes.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(decode_err(e)),
        };
        hasher.update(&buf[..n]);
        // Through the File itself: tempfile's own Write adds the path to
        // the error, which the message already names.
        tmp.as_file().write_all(&buf[..n]).map_err(|e| cache_err(CacheOp::WriteFileIn, e))?;
        if let Some(ticker) = &mut ticker {
            ticker.advance(n as u64);
        }
    }
    let actual = Digest(hasher.finalize().into());
    if actual != payload.sha256() {
        return Err(Error::CorruptPayload {
            name: payload.name().to_owned(),
            expected: payload.sha256().to_string(),
            actual: actual.to_string(),
        });
    }
    // Read-only for its owner; executable too, unless it is an asset,
    // which nothing runs.
    let mode = if payload.kind() == crate::Kind::Asset { 0o400 } else { 0o500 };
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| cache_err(CacheOp::SetPermissionsIn, e))?;
    tmp.as_file().sync_all().map_err(|e| cache_err(CacheOp::SyncFileIn, e))?;
    let persisted = if replace { tmp.persist(path) } else { tmp.persist_noclobber(path) };
    match persisted {
        Ok(_) => {
            debug!("wrote cache entry {}", path.display());
            Ok(())
        }
        // Another stigmer won the race; its entry is checked next round.
        Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        // A cleaner took our file before we locked it: go round again.
        Err(e) if e.error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(cache_err(CacheOp::RenameFileIn, e.error)),
    }
}

/// Whether nobody holds a lock on `path` (a file or folder): its writer or
/// user is gone. A path that cannot be opened is not ours to judge.
fn unlocked(path: &Path) -> bool {
    let Ok(file) = fs::OpenOptions::new().read(true).custom_flags(nix::libc::O_NOFOLLOW).open(path)
    else {
        return false;
    };
    super::flock(&file, LockOp::TryExclusive).is_ok()
}

fn older_than(meta: &fs::Metadata, age: Duration) -> bool {
    meta.modified()
        .is_ok_and(|t| SystemTime::now().duration_since(t).is_ok_and(|elapsed| elapsed > age))
}

/// Removes the private temporary folders that no running payload or
/// stigmer holds. Returns what it removed.
fn remove_unlocked_tmpdirs(tmp: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = fs::read_dir(tmp) else { return removed };
    for entry in entries.flatten() {
        // Only what stigmer made: `tmp/` may hold the user's own folders.
        if !entry.file_name().to_str().is_some_and(|n| n.starts_with(RUN)) {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else { continue };
        if !meta.is_dir() || !older_than(&meta, GRACE) || !unlocked(&path) {
            continue;
        }
        if fs::remove_dir_all(&path).is_ok() {
            debug!("removed {} (nothing uses it)", path.display());
            removed.push(path);
        }
    }
    removed
}

/// Removes the temporary files in an entry's folder that no writer holds:
/// what a stigmer killed while it filled the cache leaves behind.
fn remove_unlocked_temps(dir: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else { return removed };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_temp = entry.file_name().to_str().is_some_and(|n| n.starts_with(TEMP));
        let old = fs::symlink_metadata(&path).is_ok_and(|m| older_than(&m, GRACE));
        if is_temp && old && unlocked(&path) && fs::remove_file(&path).is_ok() {
            debug!("removed {} (left by a stigmer that was killed)", path.display());
            removed.push(path);
        }
    }
    removed
}

/// What [`prune`] and [`verify`] did to one path.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Finding {
    /// The entry, temporary file or folder.
    pub path: PathBuf,
    /// What was found, in a few words.
    pub what: String,
}

/// Removes what the cache holds that no stigmer needs, and lists what it
/// kept and why:
///
/// - an entry of a payload this build does not carry, once no running
///   stigmer (of any build, in any namespace) holds its folder and nobody
///   used it for [`UNUSED_FOR`];
/// - temporary files of fills whose writer is gone (nobody holds them);
/// - private temporary folders that no payload holds.
///
/// Returns `(removed, kept)`.
pub fn prune(cache: &CacheLauncher, keep: &[&Payload]) -> Result<(Vec<Finding>, Vec<Finding>)> {
    let (mut removed, mut kept) = (Vec::new(), Vec::new());
    let home = cache.home()?;
    if !home.exists() {
        return Ok((removed, kept));
    }
    let bin = cache.bin_dir()?;
    for dir in read_dir(&bin)? {
        let name = dir.file_name().unwrap_or_default().to_string_lossy().into_owned();
        if name.starts_with(TRASH) {
            // A prune was killed while it removed this.
            if unlocked(&dir) {
                remove(&dir)?;
                removed.push(Finding { path: dir, what: "left by an interrupted prune".into() });
            }
            continue;
        }
        if !fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
            remove(&dir)?;
            removed.push(Finding { path: dir, what: "not an entry folder".into() });
            continue;
        }
        for path in remove_unlocked_temps(&dir) {
            removed
                .push(Finding { path, what: "temporary file left by an interrupted write".into() });
        }
        let carried: Vec<&str> =
            keep.iter().filter(|p| p.sha256().to_string() == name).map(|p| p.name()).collect();
        let foreign: Vec<PathBuf> = read_dir(&dir)?
            .into_iter()
            .filter(|f| {
                let n = f.file_name().unwrap_or_default().to_string_lossy();
                !n.starts_with(TEMP) && !carried.contains(&n.as_ref())
            })
            .collect();
        if foreign.is_empty() {
            continue;
        }
        let whole = carried.is_empty();
        let what = "entry of a payload this build does not carry";
        // Taken exclusively, or some stigmer may still exec it.
        let Ok(lock) = open_dir(&dir).map(|f| Lock::new(f, LockOp::TryExclusive)) else {
            continue;
        };
        let Ok(lock) = lock else {
            for path in foreign {
                kept.push(Finding {
                    path,
                    what: format!("{what}, kept: a running stigmer uses it"),
                });
            }
            continue;
        };
        let meta = lock.0.metadata().map_err(|source| Error::Cache {
            op: CacheOp::ReadFolder,
            path: dir.clone(),
            source,
        })?;
        // The name may have been given to a new folder since we opened it.
        let same = fs::symlink_metadata(&dir)
            .is_ok_and(|m| (m.dev(), m.ino()) == (meta.dev(), meta.ino()));
        if !same {
            continue;
        }
        if !older_than(&meta, UNUSED_FOR) {
            let used = meta
                .modified()
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .map(|d| humantime::format_duration(Duration::from_secs(d.as_secs())).to_string())
                .unwrap_or_else(|| "just now".into());
            for path in foreign {
                kept.push(Finding {
                    path,
                    what: format!(
                        "{what}, kept: last used {used} ago; removed once unused for {}",
                        humantime::format_duration(UNUSED_FOR)
                    ),
                });
            }
            continue;
        }
        if whole {
            // Out of the way first, under the lock: a stigmer that locks
            // the name next finds a new folder, never a half-removed one.
            let trash = bin.join(format!("{TRASH}{name}-{}", std::process::id()));
            fs::rename(&dir, &trash).map_err(|source| Error::Cache {
                op: CacheOp::Remove,
                path: dir.clone(),
                source,
            })?;
            remove(&trash)?;
            removed.push(Finding { path: dir, what: what.into() });
        } else {
            for path in foreign {
                remove(&path)?;
                removed.push(Finding { path, what: what.into() });
            }
        }
        drop(lock);
    }
    let tmp = cache.layout()?.tmp;
    if tmp.is_dir() {
        private_dir(&tmp, false)?;
        for path in remove_unlocked_tmpdirs(&tmp) {
            removed.push(Finding { path, what: "private TMPDIR that nothing uses".into() });
        }
    }
    Ok((removed, kept))
}

/// Re-hashes every entry in the cache against the sha256 that names its
/// folder, and removes the ones that do not match (they would be replaced,
/// never executed, anyway). Returns every entry with its verdict.
pub fn verify(cache: &CacheLauncher) -> Result<Vec<(Finding, bool)>> {
    let mut out = Vec::new();
    if !cache.home()?.exists() {
        return Ok(out);
    }
    for dir in read_dir(&cache.bin_dir()?)? {
        let expected =
            dir.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse::<Digest>().ok());
        if dir.file_name().is_some_and(|n| n.to_string_lossy().starts_with(TRASH)) {
            continue;
        }
        for file in read_dir(&dir)? {
            if file.file_name().is_some_and(|n| n.to_string_lossy().starts_with(TEMP)) {
                continue;
            }
            let verdict = match expected {
                None => Check::Bad("is in a folder that is not a sha256".into()),
                Some(sha) => {
                    let len = fs::symlink_metadata(&file).map(|m| m.len()).unwrap_or(0);
                    check(&file, len, sha)
                }
            };
            let (what, good) = match verdict {
                Check::Good(_) => ("ok".to_owned(), true),
                Check::Missing => continue,
                Check::Bad(why) => {
                    remove(&file)?;
                    (format!("{why}: removed"), false)
                }
            };
            out.push((Finding { path: file, what }, good));
        }
    }
    Ok(out)
}

fn read_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let err = |source| Error::Cache { op: CacheOp::ReadFolder, path: dir.to_owned(), source };
    let mut paths = fs::read_dir(dir)
        .map_err(err)?
        .map(|e| e.map(|e| e.path()))
        .collect::<io::Result<Vec<_>>>()
        .map_err(err)?;
    paths.sort();
    Ok(paths)
}

fn remove(path: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(path);
    let res = match meta {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        _ => fs::remove_file(path),
    };
    res.map_err(|source| Error::Cache { op: CacheOp::Remove, path: path.to_owned(), source })
}
