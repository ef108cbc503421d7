//! The cache backend (macOS, and Linux where exec from memory is refused):
//! payloads run from verified files in a private, content-addressed folder.
//!
//! Layout: `$STIGMER_HOME/bin/v1/<sha256>/<name>`. The `v1` is the layout's
//! version: a new layout gets a new folder and never reads an old one.
//!
//! Every folder stigmer uses must be a real folder (not a symlink) owned by
//! this user and not writable by group or others; otherwise it is refused,
//! because someone else could swap an entry between its check and its exec.
//!
//! An entry is written to a temporary file in its own folder, hashed while it
//! is written, fsynced, made read-only (`0500`) and renamed into place: a new
//! inode every time, never rewritten in place (macOS kills a signed binary
//! rewritten in place). Before every launch the entry is opened without
//! following links and checked: a regular file, ours, not writable by
//! others, one link, the right size, the right sha256. An entry that fails is
//! logged and atomically replaced, never executed. Many processes filling the
//! same entry at once all succeed: the first rename wins and the others find
//! a good entry.

use std::fs::{self, DirBuilder, File};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{
    DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sha2::{Digest as _, Sha256};
use tempfile::TempDir;
use tracing::{debug, warn};

use super::buf::AlignedBuf;
use crate::{Digest, Error, Payload, Result};

/// The version of the cache layout, part of every entry's path.
const LAYOUT: &str = "v1";

/// Temporary files older than this are left behind by a killed stigmer and
/// can be removed, whatever process wrote them.
const STALE_AFTER: Duration = Duration::from_secs(60 * 60);

/// How a temporary file in an entry's folder is named: this prefix, the
/// writer's pid, `-`, random characters. A file whose writer is gone was
/// left by a killed stigmer.
const TEMP: &str = ".tmp-";

/// Writes and verifies cache entries under one root folder.
#[derive(Debug)]
pub struct CacheLauncher {
    home: Result<PathBuf, ()>,
    progress: Option<Arc<dyn FillProgress>>,
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

/// A verified cache entry, ready to exec.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub(crate) path: PathBuf,
    /// A private, exec-capable `TMPDIR` for payloads that unpack themselves
    /// (PyInstaller), removed when the last [`Prepared`](crate::Prepared)
    /// using it is dropped.
    pub(crate) tmpdir: Option<Arc<TempDir>>,
}

/// What checking an entry found.
enum Check {
    Good,
    Missing,
    Bad(String),
}

impl CacheLauncher {
    /// A cache rooted at `home` (see [`crate::env::home`]). `None` means no
    /// home could be found; the error comes when the cache is first used.
    pub fn new(home: Option<PathBuf>) -> CacheLauncher {
        CacheLauncher { home: home.ok_or(()), progress: None }
    }

    /// Reports every fill to `progress`.
    pub fn with_progress(mut self, progress: Arc<dyn FillProgress>) -> CacheLauncher {
        self.progress = Some(progress);
        self
    }

    /// The cache root.
    pub fn home(&self) -> Result<&Path> {
        self.home.as_deref().map_err(|()| Error::NoHome)
    }

    /// The folder that holds this layout's entries, created private if it is
    /// missing and refused if it cannot be trusted.
    pub fn bin_dir(&self) -> Result<PathBuf> {
        let home = self.home()?;
        private_dir(home, true)?;
        let bin = home.join("bin");
        private_dir(&bin, false)?;
        let layout = bin.join(LAYOUT);
        private_dir(&layout, false)?;
        Ok(layout)
    }

    /// Makes sure a good entry for `payload` exists, and returns it.
    pub(crate) fn entry(&self, payload: &Payload) -> Result<Entry> {
        let dir = self.bin_dir()?.join(payload.sha256().to_string());
        private_dir(&dir, false)?;
        let path = dir.join(payload.name());
        // Three rounds: a concurrent writer can win a rename between our
        // check and ours, after which its entry is checked like any other.
        for _ in 0..3 {
            let replace = match check(&path, payload.len(), payload.sha256()) {
                Check::Good => {
                    let tmpdir = match payload.kind().needs_real_path() {
                        true => Some(Arc::new(self.tmpdir()?)),
                        false => None,
                    };
                    return Ok(Entry { path, tmpdir });
                }
                Check::Missing => false,
                Check::Bad(why) => {
                    warn!("cache entry {} {why}: replacing it", path.display());
                    true
                }
            };
            remove_orphan_temps(&dir);
            let ticker = self.progress.as_ref().map(|p| p.start(payload.name(), payload.len()));
            write_entry(&dir, &path, payload, replace, ticker)?;
        }
        Err(Error::Cache {
            op: "settle the cache entry",
            path,
            source: io::Error::other("it kept changing while stigmer wrote it"),
        })
    }

    /// A new private temporary folder under `$STIGMER_HOME/tmp/`, named after
    /// this process. Folders of processes that are gone are removed first.
    fn tmpdir(&self) -> Result<TempDir> {
        let tmp = self.home()?.join("tmp");
        private_dir(&tmp, false)?;
        remove_orphan_tmpdirs(&tmp);
        tempfile::Builder::new()
            .prefix(&format!("{}-", std::process::id()))
            .tempdir_in(&tmp)
            .map_err(|source| Error::Cache { op: "create a folder in", path: tmp, source })
    }
}

/// Creates `dir` with mode 0700 if it is missing, then refuses it unless it
/// is a real folder of ours that nobody else can write to.
pub(crate) fn private_dir(dir: &Path, parents: bool) -> Result<()> {
    match DirBuilder::new().mode(0o700).recursive(parents).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(source) => {
            return Err(Error::Cache {
                op: "create the cache folder",
                path: dir.to_owned(),
                source,
            });
        }
    }
    trusted_dir(dir)
}

/// Refuses `dir` unless it is a real folder of ours that nobody else can
/// write to. Creates nothing.
pub(crate) fn trusted_dir(dir: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(dir).map_err(|source| Error::Cache {
        op: "read the cache folder",
        path: dir.to_owned(),
        source,
    })?;
    let refuse =
        |reason: String, fix: String| Error::UntrustedCache { path: dir.to_owned(), reason, fix };
    if meta.file_type().is_symlink() {
        return Err(refuse(
            "it is a symlink".into(),
            "replace it with a real folder, or set STIGMER_HOME to one".into(),
        ));
    }
    if !meta.is_dir() {
        return Err(refuse(
            "it is not a folder".into(),
            "remove it, or set STIGMER_HOME elsewhere".into(),
        ));
    }
    let uid = nix::unistd::geteuid().as_raw();
    if meta.uid() != uid {
        return Err(refuse(
            format!("it belongs to uid {}, not to this user (uid {uid})", meta.uid()),
            "set STIGMER_HOME to a folder of your own".into(),
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(refuse(
            format!("it is writable by group or others (mode {:o})", meta.mode() & 0o7777),
            format!("run \"chmod go-w {}\"", dir.display()),
        ));
    }
    Ok(())
}

/// Checks the entry at `path` the way it will be trusted: opened without
/// following a link, then its owner, mode, link count, size and sha256.
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
    if meta.nlink() != 1 {
        return Check::Bad(format!("has {} hard links", meta.nlink()));
    }
    if meta.len() != len {
        return Check::Bad(format!("has {} bytes, not {len}", meta.len()));
    }
    match hash_file(file) {
        Ok(actual) if actual == sha256 => Check::Good,
        Ok(actual) => Check::Bad(format!("is corrupt (sha256 {actual}, expected {sha256})")),
        Err(e) => Check::Bad(format!("cannot be read ({e})")),
    }
}

/// The sha256 of a file, reading each byte once.
pub(crate) fn hash_file(mut file: File) -> io::Result<Digest> {
    let mut hasher = Sha256::new();
    let mut buf = AlignedBuf::new(super::IO_BUF);
    let buf = buf.all();
    loop {
        match file.read(buf) {
            Ok(0) => return Ok(Digest(hasher.finalize().into())),
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Writes the payload to a temporary file beside `path`, checking its hash
/// as it goes, and renames it into place: over a bad entry when `replace`,
/// otherwise only if no entry appeared meanwhile.
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
        .map_err(|e| cache_err("create a file in", e))?;
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
        tmp.as_file().write_all(&buf[..n]).map_err(|e| cache_err("write a file in", e))?;
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
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(0o500))
        .map_err(|e| cache_err("set permissions in", e))?;
    tmp.as_file().sync_all().map_err(|e| cache_err("sync a file in", e))?;
    let persisted = if replace { tmp.persist(path) } else { tmp.persist_noclobber(path) };
    match persisted {
        Ok(_) => {
            debug!("wrote cache entry {}", path.display());
            Ok(())
        }
        // Another stigmer won the race; its entry is checked next round.
        Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(cache_err("rename a file in", e.error)),
    }
}

/// Removes the private temporary folders of processes that no longer run.
fn remove_orphan_tmpdirs(tmp: &Path) {
    let Ok(entries) = fs::read_dir(tmp) else { return };
    for entry in entries.flatten() {
        if owner_gone(&entry.file_name(), "") && fs::remove_dir_all(entry.path()).is_ok() {
            debug!("removed {} (its process is gone)", entry.path().display());
        }
    }
}

/// Removes the temporary files in an entry's folder whose writer no longer
/// runs: what a stigmer killed while it filled the cache leaves behind.
fn remove_orphan_temps(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        if owner_gone(&entry.file_name(), TEMP) && fs::remove_file(entry.path()).is_ok() {
            debug!("removed {} (left by a stigmer that was killed)", entry.path().display());
        }
    }
}

/// Whether `name` is `{prefix}{pid}-...` and that process is gone.
fn owner_gone(name: &std::ffi::OsStr, prefix: &str) -> bool {
    let pid = name
        .to_str()
        .and_then(|n| n.strip_prefix(prefix))
        .and_then(|n| n.split_once('-'))
        .and_then(|(p, _)| p.parse::<i32>().ok());
    pid.is_some_and(|pid| {
        matches!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
            Err(nix::errno::Errno::ESRCH)
        )
    })
}

/// What [`prune`] and [`verify`] did to one path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// The entry, temporary file or folder.
    pub path: PathBuf,
    /// What was found, in a few words.
    pub what: String,
}

/// Removes what the cache holds that this build does not need: entries of
/// payloads it does not carry, temporary files left by a killed stigmer, and
/// private temporary folders of processes that are gone.
pub fn prune(cache: &CacheLauncher, keep: &[&Payload]) -> Result<Vec<Finding>> {
    let mut removed = Vec::new();
    let home = cache.home()?;
    if !home.exists() {
        return Ok(removed);
    }
    let bin = cache.bin_dir()?;
    for dir in read_dir(&bin)? {
        let name = dir.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let kept: Vec<&str> =
            keep.iter().filter(|p| p.sha256().to_string() == name).map(|p| p.name()).collect();
        if kept.is_empty() {
            remove(&dir)?;
            removed.push(Finding {
                path: dir,
                what: "entry of a payload this build does not carry".into(),
            });
            continue;
        }
        for file in read_dir(&dir)? {
            let fname = file.file_name().unwrap_or_default().to_string_lossy().into_owned();
            let stale = fname.starts_with(TEMP)
                && (owner_gone(file.file_name().unwrap_or_default(), TEMP)
                    || fs::symlink_metadata(&file).and_then(|m| m.modified()).is_ok_and(|t| {
                        SystemTime::now().duration_since(t).unwrap_or_default() > STALE_AFTER
                    }));
            if stale {
                remove(&file)?;
                removed.push(Finding {
                    path: file,
                    what: "temporary file left by an interrupted write".into(),
                });
            } else if !fname.starts_with(TEMP) && !kept.contains(&fname.as_str()) {
                remove(&file)?;
                removed.push(Finding {
                    path: file,
                    what: "entry of a payload this build does not carry".into(),
                });
            }
        }
    }
    let tmp = home.join("tmp");
    if tmp.is_dir() {
        private_dir(&tmp, false)?;
        remove_orphan_tmpdirs(&tmp);
    }
    Ok(removed)
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
                Check::Good => ("ok".to_owned(), true),
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
    let err = |source| Error::Cache { op: "read the cache folder", path: dir.to_owned(), source };
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
    res.map_err(|source| Error::Cache { op: "remove", path: path.to_owned(), source })
}
