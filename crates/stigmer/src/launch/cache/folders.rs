//! The cache's folders: where things live ([`Layout`]), the checks that
//! decide whether stigmer trusts them (run before every launch), and how
//! they stand without creating any ([`CacheLauncher::survey`], which
//! `stigmer doctor` reports). See the parent module's doc for why each
//! check exists.

use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};
use std::path::{Component, Path, PathBuf};

use super::CacheLauncher;
use crate::{CacheOp, Error, Result};

/// The version of the cache layout, part of every entry's path.
const LAYOUT: &str = "v1";

/// Where a cache keeps things, under its root (the `cache` module doc says
/// why each is so):
///
/// | path | what | locked by |
/// |---|---|---|
/// | `bin/v1/<sha256>/` | one folder per payload's bytes | every stigmer that may exec its entry (shared `flock`); `cache prune` (exclusive) |
/// | `bin/v1/<sha256>/<name>` | the entry, read-only, checked before every launch | a read lease (Linux) from its check to its exec |
/// | `bin/v1/<sha256>/.tmp-<pid>-...` | a fill in progress | its writer |
/// | `tmp/run-...` | a private `TMPDIR` (PyInstaller one-file payloads) | the payload that uses it, and its stigmer |
/// | `run/` | `stigmer server`'s control socket (`control.sock`) and its lock (`lock`) | the running server (exclusive `flock` on `lock`) |
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Layout {
    /// The root: `$STIGMER_HOME` (or `~/.stigmer`), absolute.
    pub root: PathBuf,
    /// `bin/`, which holds one folder per layout version.
    pub bin: PathBuf,
    /// `bin/v1/`: one folder per payload sha256, holding its entry.
    pub entries: PathBuf,
    /// `tmp/`: private `TMPDIR`s.
    pub tmp: PathBuf,
    /// `run/`: the running server's control socket and lock.
    pub run: PathBuf,
}

impl Layout {
    pub(super) fn new(root: &Path) -> Layout {
        let bin = root.join("bin");
        Layout {
            root: root.to_owned(),
            entries: bin.join(LAYOUT),
            bin,
            tmp: root.join("tmp"),
            run: root.join("run"),
        }
    }

    /// The folders stigmer makes on the way to the entries, root first.
    pub fn folders(&self) -> [&Path; 3] {
        [&self.root, &self.bin, &self.entries]
    }
}

/// The cache as it stands: see [`CacheLauncher::survey`].
#[derive(Debug)]
#[non_exhaustive]
pub struct Survey {
    /// Where things are.
    pub layout: Layout,
    /// What the checks every launch makes say about its folders.
    pub trust: Trust,
    /// The deepest of [`Layout::folders`] that exists and is trusted, or
    /// else the nearest folder above the root that exists: the file system
    /// the entries are, or will be, on.
    pub nearest: Option<PathBuf>,
    /// Free bytes on that file system.
    pub free: Option<u64>,
    /// Whether that file system is mounted `noexec` (`None` where this
    /// platform cannot tell).
    pub noexec: Option<bool>,
}

/// What the checks every launch makes say about the cache's folders,
/// without creating any: see [`CacheLauncher::survey`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Trust {
    /// Every folder down to the entries exists, and all are trusted.
    Ready,
    /// The folders down to this one exist and are trusted; stigmer creates
    /// the rest, private, inside it.
    Partial(PathBuf),
    /// The root does not exist; stigmer creates it, private, in this
    /// folder, which it can write to.
    Creatable(PathBuf),
    /// The root does not exist, and this folder, where it would be made, is
    /// not writable.
    Unwritable(PathBuf),
    /// The root does not exist, nor does any folder above it.
    NoParent,
    /// A folder of the cache, or one above it, cannot be trusted.
    Refused(Error),
}

impl Trust {
    /// Whether a launch can use the cache (creating what is missing).
    pub fn is_usable(&self) -> bool {
        matches!(self, Trust::Ready | Trust::Partial(_) | Trust::Creatable(_))
    }
}

impl CacheLauncher {
    /// The cache as it stands, inspected as a launch would check it but
    /// without creating anything: what `stigmer doctor` reports.
    pub fn survey(&self) -> Result<Survey> {
        let layout = self.layout()?;
        let mut refused = trusted_ancestors(&layout.root).err();
        // The folders stigmer would use, down to the first that is missing;
        // the rest would be created, private, inside the last that exists.
        let mut existing = None;
        for dir in layout.folders().into_iter().filter(|_| refused.is_none()) {
            if fs::symlink_metadata(dir).is_err() {
                break;
            }
            if let Err(e) = trusted_dir(dir) {
                refused = Some(e);
                break;
            }
            existing = Some(dir.to_owned());
        }
        let trust = match (refused, &existing) {
            (Some(e), _) => Trust::Refused(e),
            (None, Some(dir)) if *dir == layout.entries => Trust::Ready,
            (None, Some(dir)) => Trust::Partial(dir.clone()),
            (None, None) => match nearest_existing(&layout.root) {
                Some(parent) if writable(&parent) => Trust::Creatable(parent),
                Some(parent) => Trust::Unwritable(parent),
                None => Trust::NoParent,
            },
        };
        let nearest = existing.or_else(|| nearest_existing(&layout.root));
        let stat = nearest.as_deref().and_then(|p| nix::sys::statvfs::statvfs(p).ok());
        // The two fields' types differ between platforms.
        #[allow(clippy::unnecessary_cast)]
        let free = stat.as_ref().map(|s| s.blocks_available() as u64 * s.fragment_size() as u64);
        let noexec = stat.as_ref().and_then(crate::launch::imp::mount_noexec);
        Ok(Survey { layout, trust, nearest, free, noexec })
    }
}

/// `path` made absolute: taken from the current folder if relative, and
/// with the folder that holds it resolved by `realpath` (the last part is
/// kept as written, so that a symlink there is seen and refused).
pub(super) fn resolve_home(path: &Path) -> io::Result<PathBuf> {
    let absolute = std::path::absolute(path)?;
    let (parent, name) = match (absolute.parent(), absolute.components().next_back()) {
        (Some(parent), Some(Component::Normal(name))) => (parent, name),
        // "/", or a path ending in ".." or ".": it must exist.
        _ => return fs::canonicalize(&absolute),
    };
    // The parent may not exist yet: resolve what does, keep the rest.
    let mut existing = parent;
    let mut rest = Vec::new();
    let resolved = loop {
        match fs::canonicalize(existing) {
            Ok(resolved) => break resolved,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                match (existing.parent(), existing.file_name()) {
                    (Some(up), Some(last)) => {
                        rest.push(last);
                        existing = up;
                    }
                    _ => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
    };
    let mut out = resolved;
    for part in rest.into_iter().rev() {
        if part == ".." {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "it goes up (\"..\") through a folder that does not exist",
            ));
        }
        out.push(part);
    }
    out.push(name);
    Ok(out)
}

/// Refuses `home` unless every folder above it that exists, up to `/`, is
/// owned by root or by this user and not writable by group or others (a
/// sticky folder owned by root, such as `/tmp`, may be): otherwise someone
/// else could rename the cache away and put their own in its place.
pub(super) fn trusted_ancestors(home: &Path) -> Result<()> {
    let uid = nix::unistd::geteuid().as_raw();
    let mut above: Vec<&Path> = home.ancestors().skip(1).collect();
    above.reverse();
    for dir in above {
        let meta = match fs::symlink_metadata(dir) {
            Ok(m) => m,
            // The rest will be created by stigmer, private.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(Error::Cache { op: CacheOp::ReadAbove, path: dir.to_owned(), source });
            }
        };
        let refuse = |reason: String, fix: String| Error::UntrustedCache {
            path: dir.to_owned(),
            reason: format!("{reason}, above the cache"),
            fix,
        };
        let elsewhere =
            "or set STIGMER_HOME to a folder whose parents only you and root can change";
        if meta.file_type().is_symlink() {
            return Err(refuse(
                "it is a symlink (it was resolved when stigmer started: someone replaced it)"
                    .into(),
                format!("find out who did, {elsewhere}"),
            ));
        }
        if !meta.is_dir() {
            return Err(refuse("it is not a folder".into(), format!("remove it, {elsewhere}")));
        }
        if meta.uid() != 0 && meta.uid() != uid {
            return Err(refuse(
                format!("it belongs to uid {}, who could swap everything below it", meta.uid()),
                format!(
                    "set STIGMER_HOME to a folder whose parents belong to you or root ({elsewhere})"
                ),
            ));
        }
        let sticky_root = meta.uid() == 0 && meta.mode() & 0o1000 != 0;
        if meta.mode() & 0o022 != 0 && !sticky_root {
            return Err(refuse(
                format!("it is writable by group or others (mode {:o})", meta.mode() & 0o7777),
                format!("run \"chmod go-w {}\", {elsewhere}", dir.display()),
            ));
        }
    }
    Ok(())
}

/// Creates `dir` with mode 0700 if it is missing, then refuses it unless it
/// is a real folder of ours that nobody else can write to.
pub(super) fn private_dir(dir: &Path, parents: bool) -> Result<()> {
    match DirBuilder::new().mode(0o700).recursive(parents).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(source) => {
            return Err(Error::Cache { op: CacheOp::CreateFolder, path: dir.to_owned(), source });
        }
    }
    trusted_dir(dir)
}

/// Refuses `dir` unless it is a real folder of ours that nobody else can
/// write to. Creates nothing.
fn trusted_dir(dir: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(dir).map_err(|source| Error::Cache {
        op: CacheOp::ReadFolder,
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
        // A shared folder such as /tmp is not to be chmod'ed: go inside it.
        let fix = if meta.mode() & 0o1000 != 0 {
            format!(
                "set STIGMER_HOME to a private folder inside it, e.g. {}",
                dir.join("stigmer").display()
            )
        } else {
            format!("run \"chmod go-w {}\"", dir.display())
        };
        return Err(refuse(
            format!("it is writable by group or others (mode {:o})", meta.mode() & 0o7777),
            fix,
        ));
    }
    Ok(())
}

impl CacheLauncher {
    /// The folder of the server's control socket, created private if it
    /// is missing and refused if it, or any folder above it, cannot be
    /// trusted: the same checks as the cache's.
    pub(crate) fn run_dir(&self) -> Result<PathBuf> {
        let layout = self.layout()?;
        trusted_ancestors(&layout.root)?;
        private_dir(&layout.root, true)?;
        trusted_ancestors(&layout.root)?;
        private_dir(&layout.run, false)?;
        Ok(layout.run)
    }

    /// The folder of the server's control socket if it exists and is
    /// trusted; creates nothing.
    pub(crate) fn existing_run_dir(&self) -> Result<PathBuf> {
        let layout = self.layout()?;
        trusted_ancestors(&layout.root)?;
        trusted_dir(&layout.root)?;
        trusted_dir(&layout.run)?;
        Ok(layout.run)
    }
}

/// The nearest folder above `path` that exists.
fn nearest_existing(path: &Path) -> Option<PathBuf> {
    path.ancestors().skip(1).find(|p| p.is_dir()).map(Path::to_owned)
}

/// Whether this process may create entries in `dir`.
fn writable(dir: &Path) -> bool {
    nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn a_survey_creates_nothing_and_follows_the_layout() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CacheLauncher::new(Some(dir.path().join("home")));
        let survey = cache.survey().unwrap();
        let root = fs::canonicalize(dir.path()).unwrap().join("home");
        assert_eq!(survey.layout.root, root);
        assert_eq!(survey.layout.entries, root.join("bin").join(LAYOUT));
        assert_eq!(survey.layout.tmp, root.join("tmp"));
        assert!(matches!(&survey.trust, Trust::Creatable(p) if *p == root.parent().unwrap()));
        assert!(survey.trust.is_usable());
        assert!(!root.exists(), "a survey creates nothing");

        fs::create_dir(&root).unwrap();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o700)).unwrap();
        assert!(matches!(cache.survey().unwrap().trust, Trust::Partial(p) if p == root));
        assert_eq!(cache.bin_dir().unwrap(), survey.layout.entries);
        assert!(matches!(cache.survey().unwrap().trust, Trust::Ready));

        fs::set_permissions(&survey.layout.bin, fs::Permissions::from_mode(0o777)).unwrap();
        let trust = cache.survey().unwrap().trust;
        assert!(matches!(&trust, Trust::Refused(Error::UntrustedCache { .. })), "{trust:?}");
        assert!(!trust.is_usable());
    }
}
