//! Launching payloads: one trait, three backends, one place that chooses.
//!
//! [`Launch::prepare`] makes a payload ready to run and returns a
//! [`Prepared`], which can replace the current process
//! ([`Prepared::exec`]) or give a [`Command`] to spawn it as a child with the
//! usual std (or, through `From`, tokio) controls.
//!
//! | backend | where | how |
//! |---|---|---|
//! | [`MemfdLauncher`] | Linux | a sealed memfd, `execveat(AT_EMPTY_PATH)`; nothing on disk |
//! | [`CacheLauncher`] | every Unix | a verified, content-addressed file under `$STIGMER_HOME/bin/` |
//! | mapped (`imp/linux/mapped.rs`) | Linux | an ELF payload's segments mapped from this executable's own file; nothing copied |
//!
//! [`Launcher`] picks between them: on Linux an ELF payload mapped where the
//! loader takes it and the kernel allows it, any other payload from a memfd;
//! the cache elsewhere, for payloads that need a real path (PyInstaller
//! one-file), and, with one warning, where the kernel refuses exec from
//! memory.
//!
//! Assets ([`Kind::Asset`]), which services read and nothing runs, go the
//! same two ways ([`Launch::prepare_asset`], a [`PreparedAsset`]): a sealed
//! memfd that is not executable, named `/proc/self/fd/N` and kept open in
//! the services that read it, or a read-only, verified cache entry.
//!
//! # Platform-specific behaviour
//!
//! The platform is chosen once, below, as one module: `imp/linux/` (memfds,
//! exec by descriptor, read leases on cache entries) or `imp/other.rs`, which
//! has the same items disabled: there [`MemfdLauncher`] fails with
//! [`Error::MemfdUnsupported`], and a cache entry is exec'd by its path
//! right after its check (`exec.rs`, compiled and tested on Linux too).

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io;
use std::os::fd::AsFd as _;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tracing::{debug, warn};

use crate::{Catalog, Error, Kind, Payload, Result};

mod buf;
pub(crate) mod cache;
mod child;
mod exec;
pub(crate) mod lock;

// The one place the platform is chosen. Both modules have the same items
// (ripgrep's `index/{enabled,disabled}.rs`, tokio's `process/imp`): on
// Linux the real ones, elsewhere stand-ins that refuse or say "none", so
// nothing below, and nothing that uses this module, names a platform.
cfg_if::cfg_if! {
    if #[cfg(target_os = "linux")] {
        #[path = "imp/linux/mod.rs"]
        mod imp;
    } else if #[cfg(unix)] {
        #[path = "imp/other.rs"]
        mod imp;
    } else {
        compile_error!("stigmer runs on Linux and macOS");
    }
}

/// The size of the buffer stigmer moves a payload through when it must pass
/// through user space (hashing a cache entry, filling one, decoding as one
/// stream): big enough that system calls cost nothing, small enough to stay
/// in the L2 cache beside what the kernel copies from. It is an
/// [`AlignedBuf`](buf::AlignedBuf), which matters far more than its size.
pub(crate) const IO_BUF: usize = 128 * 1024;

pub use child::exit_code;

pub use cache::{
    CacheLauncher, FillProgress, FillTicker, Finding, Layout, Survey, Trust, UNUSED_FOR, prune,
    verify,
};
pub use imp::MemfdLauncher;
use imp::{EXEC_BY_FD, NATIVE};
pub(crate) use imp::{is_probe_exe, probe_mapped, probe_memfd};
use lock::{flock, hold_bytes};

/// What the kernel says to exec from memory here: what `stigmer doctor`
/// reports (see `imp::probe_memfd`).
#[derive(Debug)]
pub(crate) struct MemfdProbe {
    /// `memfd_create`, as a payload's memfd is made: whether the kernel
    /// took `MFD_EXEC` (it did not before Linux 6.3), or why it refused.
    pub(crate) create: io::Result<bool>,
    /// `vm.memfd_noexec`, where the kernel has it (6.3+).
    pub(crate) noexec: Option<u8>,
    /// stigmer's own executable run from a sealed memfd: how long that took,
    /// or why it failed.
    pub(crate) exec: io::Result<Duration>,
}

/// Makes payloads ready to run, and assets ready to read.
pub trait Launch {
    /// Prepares `payload`: fills and seals its memfd, or writes and verifies
    /// its cache entry. Cheap to call again for the same payload.
    fn prepare(&self, payload: &Payload) -> Result<Prepared>;

    /// Prepares `asset` (a [`Kind::Asset`]) for the services that read it:
    /// a sealed memfd that is not executable, or a verified, read-only
    /// cache entry. Cheap to call again for the same asset. By default, a
    /// sealed memfd ([`MemfdLauncher`]); a launcher that wraps another
    /// should pass this on too.
    fn prepare_asset(&self, asset: &Payload) -> Result<PreparedAsset> {
        MemfdLauncher::new().prepare_asset(asset)
    }
}

/// An asset ready for services to read, by the path [`PreparedAsset::path`]
/// gives, which stays valid for as long as this (or a clone) lives.
#[derive(Clone, Debug)]
pub struct PreparedAsset {
    name: String,
    image: AssetImage,
}

#[derive(Clone, Debug)]
enum AssetImage {
    Memfd(imp::AssetImage),
    File(cache::Entry),
}

impl PreparedAsset {
    /// The asset's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where it is kept.
    pub fn backend(&self) -> Backend {
        match self.image {
            AssetImage::Memfd(_) => Backend::Memfd,
            AssetImage::File(_) => Backend::Cache,
        }
    }

    /// The path a service opens it by, read-only: `/proc/self/fd/N` for a
    /// memfd (valid in the services [`PreparedAsset::pass_to`] was called
    /// for), the cache entry's path otherwise.
    pub fn path(&self) -> PathBuf {
        match &self.image {
            AssetImage::Memfd(image) => image.path(),
            AssetImage::File(entry) => entry.path().to_owned(),
        }
    }

    /// Gets the asset to `cmd`'s child, to call before it is spawned: a
    /// memfd's descriptor stays open across that child's exec (and only
    /// that one's); a cache entry is verified again now (and refilled from
    /// the embedded bytes if it is missing or bad), as a payload's is
    /// before each start.
    pub fn pass_to(&self, cmd: &mut Command) -> Result<()> {
        match &self.image {
            AssetImage::Memfd(image) => {
                image.pass_to(cmd);
                Ok(())
            }
            AssetImage::File(entry) => entry.open().map(drop),
        }
    }
}

/// A backend: where a payload runs from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Backend {
    /// A sealed memfd (Linux).
    Memfd,
    /// A verified file in the cache.
    Cache,
    /// An ELF payload mapped straight from stigmer's own file (Linux).
    Mapped,
}

impl Backend {
    /// `memfd`, `cache` or `mapped`.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Memfd => "memfd",
            Backend::Cache => "cache",
            Backend::Mapped => "mapped",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which backend to use: `--backend` and `STIGMER_BACKEND`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Choice {
    /// On Linux, an ELF payload mapped from stigmer's own file where the
    /// loader takes it, a sealed memfd for the rest (and where the kernel
    /// refuses the loader), the cache where the kernel refuses exec from
    /// memory; the cache elsewhere.
    #[default]
    Auto,
    /// Only a backend; no fallback.
    Only(Backend),
}

impl FromStr for Choice {
    type Err = Error;

    fn from_str(s: &str) -> Result<Choice> {
        match s {
            "auto" => Ok(Choice::Auto),
            "memfd" => Ok(Choice::Only(Backend::Memfd)),
            "cache" => Ok(Choice::Only(Backend::Cache)),
            "mapped" => Ok(Choice::Only(Backend::Mapped)),
            other => Err(Error::UnknownBackend(other.to_owned())),
        }
    }
}

/// How a payload will be launched, and why: what `stigmer list` shows.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Plan {
    /// The backend.
    pub backend: Backend,
    /// Why, in a few words.
    pub why: &'static str,
}

/// What a host allows, as far as the choice of a backend goes: what
/// `stigmer doctor` found (see [`Launcher::plan_on`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Host {
    /// Exec from a sealed memfd works.
    pub(crate) memfd_exec: bool,
    /// The cache can be used, and its entries can be exec'd.
    pub(crate) cache: bool,
    /// The mapped loader works.
    pub(crate) mapped: bool,
}

/// Why a payload cannot run on a host (see [`Launcher::plan_on`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stuck {
    /// It needs exec from memory, which is refused, and the cache was not
    /// allowed as a fallback (`--backend memfd`) or is unusable.
    NoFallback,
    /// It runs from the cache, which is unusable.
    NeedsCache,
}

/// Why an ELF payload runs mapped.
const MAPPED: &str = "from stigmer's own file, nothing copied or pinned";

/// Why an ELF payload `auto` would map runs from a memfd on a host that
/// refuses the mapped loader.
const MAPPED_REFUSED_ON_HOST: &str =
    "the kernel refuses what the mapped loader needs here: sealed in memory instead";

/// Why a payload runs from the cache after the kernel refused exec from
/// memory in this process.
const REFUSED: &str = "the kernel refuses exec from memory here";

/// Why a payload will run from the cache on a host that refuses exec from
/// memory.
const REFUSED_ON_HOST: &str = "the kernel refuses exec from memory here: from the verified cache";

/// A payload ready to run.
#[derive(Clone, Debug)]
pub struct Prepared {
    name: String,
    image: Image,
    /// The `argv[0]` it gets, when not its name (see [`Launcher::run_as`]).
    arg0: Option<OsString>,
}

#[derive(Clone, Debug)]
enum Image {
    Memfd(imp::Image),
    File(cache::Entry),
    Mapped(imp::MappedImage),
}

impl Prepared {
    fn new(payload: &Payload, image: Image) -> Prepared {
        Prepared { name: payload.name().to_owned(), image, arg0: None }
    }

    /// The payload's name, also its `argv[0]`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The `argv[0]` it runs with.
    fn arg0(&self) -> &OsStr {
        self.arg0.as_deref().unwrap_or(OsStr::new(&self.name))
    }

    /// The backend it runs from.
    pub fn backend(&self) -> Backend {
        match self.image {
            Image::Memfd(_) => Backend::Memfd,
            Image::File(_) => Backend::Cache,
            Image::Mapped(_) => Backend::Mapped,
        }
    }

    /// The backend the process `pid`, spawned from this, runs from: its
    /// [`Prepared::backend`], but for a mapped payload whose child could
    /// not load it and ran it from a memfd instead (see
    /// [`Launcher::prepare`]), which `/proc/PID/exe` tells once `spawn`
    /// has returned (the child has jumped into the payload or exec'd it);
    /// or, once it has exited, its name: the loader names it after the
    /// payload, an exec from a memfd `memfd:NAME` (or, through
    /// `/proc/self/fd/N`, `N`).
    pub fn ran_from(&self, pid: u32) -> Backend {
        let Image::Mapped(_) = self.image else { return self.backend() };
        let memfd = match std::fs::read_link(format!("/proc/{pid}/exe")) {
            Ok(exe) => exe.as_os_str().as_encoded_bytes().starts_with(b"/memfd:"),
            Err(_) => std::fs::read(format!("/proc/{pid}/comm")).is_ok_and(|comm| {
                let name = &self.name.as_bytes()[..self.name.len().min(15)];
                comm.strip_suffix(b"\n").unwrap_or(&comm) != name
            }),
        };
        if memfd { Backend::Memfd } else { Backend::Mapped }
    }

    /// The cache entry it runs from, if it runs from the cache.
    pub fn path(&self) -> Option<&std::path::Path> {
        match &self.image {
            Image::File(entry) => Some(entry.path()),
            Image::Memfd(_) | Image::Mapped(_) => None,
        }
    }

    /// Whether stigmer must outlive the payload to clean up after it (a
    /// private `TMPDIR`), so it cannot exec it in place.
    pub fn needs_parent(&self) -> bool {
        matches!(&self.image, Image::File(entry) if entry.tmpdir().is_some())
    }

    /// A command that runs the payload as a child, with `argv[0]` set to its
    /// name. Add arguments, environment, a working folder and stdio as with
    /// any [`Command`], then start it with [`Prepared::spawn`], which runs
    /// exactly the verified bytes. (Spawned by itself, the command names the
    /// payload by path: its memfd through `/proc/self/fd/N`, or its cache
    /// entry as it was when it was prepared, unchecked since; a mapped
    /// payload has no path, and names `/proc/self/exe` with `argv[0]` set to
    /// its name, which stigmer's multi-call runs.)
    pub fn command(&self) -> Command {
        match &self.image {
            Image::Memfd(image) => image.command(self.arg0()),
            Image::Mapped(_) => {
                let mut cmd = Command::new("/proc/self/exe");
                cmd.arg0(self.arg0());
                cmd
            }
            Image::File(entry) => {
                let mut cmd = Command::new(entry.path());
                cmd.arg0(self.arg0());
                if let Some(tmp) = entry.tmpdir() {
                    cmd.env("TMPDIR", tmp);
                }
                cmd
            }
        }
    }

    /// Starts `cmd` (made by [`Prepared::command`], then given arguments,
    /// environment, stdio, a working folder, `pre_exec` steps...) so that it
    /// runs exactly this payload. A cache entry is verified again right now
    /// (and refilled from the embedded bytes if it is missing or bad), and on
    /// Linux the child execs the very descriptor that was hashed, as it does
    /// a memfd; its process name is `memfd:NAME` (memfd) or `NAME` (cache).
    /// Call it once per command; the command must not have been given
    /// `env_clear`.
    pub fn spawn(&self, cmd: &mut Command) -> Result<std::process::Child> {
        self.spawn_checked(cmd, false)
    }

    /// The entry to exec, checked now (or, with `just_prepared`, by the
    /// `prepare` a moment ago), and the descriptors the payload keeps open:
    /// its locks, and, exec'd by descriptor, a `#!` script's own descriptor,
    /// which its interpreter reads through `/dev/fd/N`.
    fn checked(
        entry: &cache::Entry,
        just_prepared: bool,
        by_fd: bool,
    ) -> Result<(cache::Checked, Vec<std::os::fd::RawFd>)> {
        // Taken either way: a descriptor checked long ago is no check.
        let fresh = entry.take_checked().filter(|_| just_prepared);
        let checked = fresh.map_or_else(|| entry.open(), Ok)?;
        let mut inherit = entry.inherited();
        if by_fd && entry.is_script() {
            inherit.push(std::os::fd::AsRawFd::as_raw_fd(&checked.file));
        }
        Ok((checked, inherit))
    }

    /// [`Prepared::spawn`]; with `just_prepared`, as for `exec_checked`.
    fn spawn_checked(&self, cmd: &mut Command, just_prepared: bool) -> Result<std::process::Child> {
        self.spawn_by(cmd, just_prepared, EXEC_BY_FD)
    }

    /// [`Prepared::spawn_checked`], exec'ing a cache entry by its
    /// descriptor (`by_fd`) or by its path: the platform's way, or, in
    /// tests, the other.
    fn spawn_by(
        &self,
        cmd: &mut Command,
        just_prepared: bool,
        by_fd: bool,
    ) -> Result<std::process::Child> {
        let exec_err = |source| Error::Exec { name: self.name.clone(), source };
        match &self.image {
            Image::Memfd(image) => image.spawn(cmd, self.arg0()).map_err(exec_err),
            Image::Mapped(image) => image.spawn(cmd, self.arg0()).map_err(exec_err),
            Image::File(entry) => {
                let (checked, inherit) = Self::checked(entry, just_prepared, by_fd)?;
                if by_fd {
                    let file = checked.file.as_fd();
                    imp::spawn_entry(cmd, file, self.arg0(), &inherit, checked.leased)
                } else {
                    exec::spawn_by_path(cmd, checked, inherit)
                }
                .map_err(exec_err)
            }
        }
    }

    /// Replaces this process with the payload, passing `args` after
    /// `argv[0]` and this process's environment. A cache entry is verified
    /// right before. Returns only on failure.
    pub fn exec<I, S>(&self, args: I) -> Error
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.exec_checked(args, false)
    }

    /// [`Prepared::exec`]; with `just_prepared`, a cache entry checked by
    /// the `prepare` that made this a moment ago is not hashed again.
    fn exec_checked<I, S>(&self, args: I, just_prepared: bool) -> Error
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let exec_err = |source| Error::Exec { name: self.name.clone(), source };
        match &self.image {
            Image::Memfd(image) => exec_err(image.exec(self.arg0(), args)),
            Image::Mapped(image) => {
                let argv: Vec<OsString> = std::iter::once(self.arg0().to_owned())
                    .chain(args.into_iter().map(|a| a.as_ref().to_owned()))
                    .collect();
                exec_err(image.exec(&argv))
            }
            Image::File(entry) => {
                let (checked, inherit) = match Self::checked(entry, just_prepared, EXEC_BY_FD) {
                    Ok(checked) => checked,
                    Err(e) => return e,
                };
                if !EXEC_BY_FD {
                    return exec_err(exec::exec_by_path(self.command(), args, checked, inherit));
                }
                let argv: Vec<OsString> = std::iter::once(self.arg0().to_owned())
                    .chain(args.into_iter().map(|a| a.as_ref().to_owned()))
                    .collect();
                exec_err(imp::exec_entry(checked.file.as_fd(), &argv, &inherit, checked.leased))
            }
        }
    }
}

/// The launcher: the chosen backend, with the fallbacks a user expects.
#[derive(Debug)]
pub struct Launcher {
    choice: Choice,
    cache: CacheLauncher,
    memfd: MemfdLauncher,
    /// Set once the kernel has refused exec from memory, so that the other
    /// payloads go straight to the cache and the warning is given once.
    memfd_refused: AtomicBool,
    /// Set once the mapped loader was refused here (`PR_SET_MM_MAP`), so
    /// that payloads go to their memfds.
    mapped_refused: AtomicBool,
}

impl Launcher {
    /// A launcher using `choice`, with its cache under `home` (see
    /// [`crate::env::home`]; `None` if there is none).
    pub fn new(choice: Choice, home: Option<PathBuf>) -> Launcher {
        Launcher {
            choice,
            cache: CacheLauncher::new(home),
            memfd: MemfdLauncher::new(),
            memfd_refused: AtomicBool::new(false),
            mapped_refused: AtomicBool::new(false),
        }
    }

    /// Reports every cache fill to `progress` (see [`FillProgress`]).
    pub fn with_progress(mut self, progress: std::sync::Arc<dyn FillProgress>) -> Launcher {
        self.cache = self.cache.with_progress(progress);
        self
    }

    /// The backend choice it was made with.
    pub fn choice(&self) -> Choice {
        self.choice
    }

    /// The cache backend this launcher falls back to.
    pub fn cache(&self) -> &CacheLauncher {
        &self.cache
    }

    /// How `payload` will be launched, decided without touching the cache
    /// or starting anything: for an ELF payload, from its headers and what
    /// `/proc/self` says of this process.
    pub fn plan(&self, payload: &Payload) -> Plan {
        self.decide(payload).0
    }

    /// [`Launcher::plan`], and the mapped image it read deciding so (an
    /// ELF payload that `auto` maps), for `prepare` to use rather than read
    /// the payload's headers again.
    fn decide(&self, payload: &Payload) -> (Plan, Option<imp::MappedImage>) {
        let mut image = None;
        let (backend, why) = match (payload.kind(), self.choice) {
            (Kind::PyInstaller, _) => (
                Backend::Cache,
                "PyInstaller one-file: it reopens its own path and unpacks into a private TMPDIR",
            ),
            (_, Choice::Only(Backend::Cache)) => {
                (Backend::Cache, "chosen with --backend or STIGMER_BACKEND")
            }
            (_, Choice::Only(Backend::Mapped)) => (
                Backend::Mapped,
                "chosen with --backend or STIGMER_BACKEND: mapped from stigmer's own file",
            ),
            (Kind::Script, _) if NATIVE == Backend::Memfd => {
                (Backend::Memfd, "sealed in memory; the #! interpreter reads it through /dev/fd")
            }
            // An ELF payload the loader can map, on a host that lets it:
            // nothing copied (the compatibility matrix, tests/mapped_matrix.rs,
            // holds every class of ELF executable it takes).
            (Kind::Elf, Choice::Auto) if NATIVE == Backend::Memfd => {
                if self.mapped_refused.load(Ordering::Relaxed) {
                    (Backend::Memfd, MAPPED_REFUSED_ON_HOST)
                } else {
                    match imp::mapped_image(payload) {
                        Ok(mapped) => {
                            image = Some(mapped);
                            (Backend::Mapped, MAPPED)
                        }
                        // Why it is not mapped is why it runs from a memfd.
                        Err(why) => (Backend::Memfd, why),
                    }
                }
            }
            (_, _) if NATIVE == Backend::Memfd => {
                (Backend::Memfd, "sealed in memory, nothing written to disk")
            }
            (_, Choice::Only(Backend::Memfd)) => {
                (Backend::Memfd, "chosen, but this platform has no memfd")
            }
            (_, Choice::Auto) => (Backend::Cache, "the verified cache is this platform's backend"),
        };
        if backend == Backend::Memfd
            && self.choice == Choice::Auto
            && self.memfd_refused.load(Ordering::Relaxed)
        {
            return (Plan { backend: Backend::Cache, why: REFUSED }, None);
        }
        (Plan { backend, why }, image)
    }

    /// Asks the kernel, once per process (in a child that exits at once),
    /// whether it allows what the mapped loader needs, so that from then on
    /// [`Launcher::plan`] answers for this host: where it refuses, `auto`
    /// runs ELF payloads from memfds. `prepare` asks by itself before it
    /// spawns a mapped payload; `stigmer list` asks first.
    pub fn ask_kernel(&self) -> std::result::Result<(), &'static str> {
        if NATIVE != Backend::Memfd || self.choice != Choice::Auto {
            return Ok(());
        }
        static ALLOWED: std::sync::OnceLock<std::result::Result<(), &'static str>> =
            std::sync::OnceLock::new();
        (*ALLOWED.get_or_init(imp::probe_mapped)).inspect_err(|why| {
            if !self.mapped_refused.swap(true, Ordering::Relaxed) {
                debug!("the mapped loader is refused here ({why}): payloads run from memfds");
            }
        })
    }

    /// Where `asset` will be kept for the services that read it, decided
    /// without touching the kernel or the cache.
    pub fn plan_asset(&self, _asset: &Payload) -> Plan {
        match self.choice {
            Choice::Only(Backend::Cache) => Plan {
                backend: Backend::Cache,
                why: "chosen with --backend or STIGMER_BACKEND: a read-only, verified file",
            },
            _ if NATIVE == Backend::Memfd => Plan {
                backend: Backend::Memfd,
                why: "sealed in memory, not executable; services read /proc/self/fd/N",
            },
            _ => Plan {
                backend: Backend::Cache,
                why: "a read-only file in the verified cache, this platform's backend",
            },
        }
    }

    /// How `payload` would be launched on `host`: [`Launcher::plan`], with
    /// the fallback [`Launch::prepare`] takes where exec from memory is
    /// refused, or why it cannot run there.
    pub(crate) fn plan_on(&self, payload: &Payload, host: Host) -> Result<Plan, Stuck> {
        let mut plan = self.plan(payload);
        if plan.backend == Backend::Mapped && !host.mapped && self.choice == Choice::Auto {
            // What `prepare` does when the loader is refused.
            plan = Plan { backend: Backend::Memfd, why: MAPPED_REFUSED_ON_HOST };
        }
        match plan.backend {
            Backend::Memfd if host.memfd_exec => Ok(plan),
            Backend::Memfd if self.choice == Choice::Auto && host.cache => {
                Ok(Plan { backend: Backend::Cache, why: REFUSED_ON_HOST })
            }
            Backend::Memfd => Err(Stuck::NoFallback),
            Backend::Mapped if host.mapped => Ok(plan),
            Backend::Mapped => Err(Stuck::NoFallback),
            Backend::Cache if host.cache => Ok(plan),
            Backend::Cache => Err(Stuck::NeedsCache),
        }
    }

    fn prepare_memfd(&self, payload: &Payload) -> Result<Prepared> {
        self.memfd.prepare(payload)
    }

    /// The payload mapped from stigmer's own file (`image`, when `plan`
    /// read it already); or, with `auto`, its memfd when it cannot be
    /// mapped. With `auto`, and unless it is to
    /// replace this process (`in_place`, where a refusal is undone and the
    /// memfd used then), the kernel is asked once per process whether it
    /// allows the loader (`PR_SET_MM_MAP`), since a spawned child that
    /// finds out could not fall back.
    fn prepare_mapped(
        &self,
        payload: &Payload,
        image: Option<imp::MappedImage>,
        in_place: bool,
    ) -> Result<Prepared> {
        let image = image.map_or_else(|| imp::mapped_image(payload), Ok).and_then(|image| {
            if self.choice == Choice::Auto && !in_place {
                self.ask_kernel()?;
            }
            Ok(image)
        });
        match image {
            // A child that cannot load it after all runs it from a memfd.
            Ok(image) if self.choice == Choice::Auto && !in_place => {
                Ok(Prepared::new(payload, Image::Mapped(image.with_fallback())))
            }
            Ok(image) => Ok(Prepared::new(payload, Image::Mapped(image))),
            Err(_) if self.choice == Choice::Auto => self.prepare_memfd_or_cache(payload),
            Err(why) => Err(Error::NotMappable { name: payload.name().to_owned(), why }),
        }
    }

    /// [`Launch::prepare`]: to spawn, or to replace this process
    /// (`in_place`, see [`Launcher::prepare_mapped`]).
    fn prepare_to(&self, payload: &Payload, in_place: bool) -> Result<Prepared> {
        let (plan, image) = self.decide(payload);
        match plan.backend {
            Backend::Cache => self.prepare_cache(payload).map_err(|e| Error::NeedsCache {
                name: payload.name().to_owned(),
                source: e.into(),
            }),
            Backend::Memfd => self.prepare_memfd_or_cache(payload),
            Backend::Mapped => self.prepare_mapped(payload, image, in_place),
        }
    }

    /// The payload's memfd, or, with `auto`, its cache entry where the
    /// kernel refuses exec from memory.
    fn prepare_memfd_or_cache(&self, payload: &Payload) -> Result<Prepared> {
        match self.prepare_memfd(payload) {
            Err(e) if self.choice == Choice::Auto && e.is_exec_refused() => {
                self.fall_back(payload, e)
            }
            other => other,
        }
    }

    fn prepare_cache(&self, payload: &Payload) -> Result<Prepared> {
        let entry = self.cache.entry(payload)?;
        Ok(Prepared::new(payload, Image::File(entry)))
    }

    /// Falls back to the cache after the kernel refused exec from memory,
    /// warning once per process; when the cache fails too, the error names
    /// both causes.
    fn fall_back(&self, payload: &Payload, refused: Error) -> Result<Prepared> {
        match self.prepare_cache(payload) {
            Ok(prepared) => {
                if !self.memfd_refused.swap(true, Ordering::Relaxed) {
                    warn!(
                        "exec from memory is refused here ({refused}); using the cache in {}",
                        self.cache_home()
                    );
                }
                Ok(prepared)
            }
            Err(cache) => Err(Error::NoBackend {
                name: payload.name().to_owned(),
                memfd: Box::new(refused),
                cache: Box::new(cache),
            }),
        }
    }

    fn cache_home(&self) -> String {
        self.cache.home().map(|h| h.display().to_string()).unwrap_or_else(|e| e.to_string())
    }

    /// Replaces this process with `payload`, falling back to the cache when
    /// the kernel refuses the exec from memory. Returns only on failure.
    pub fn exec<I, S>(&self, payload: &Payload, args: I) -> Error
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        match self.prepare(payload) {
            Ok(prepared) => self.exec_prepared(payload, &prepared, args),
            Err(e) => e,
        }
    }

    fn exec_prepared<I, S>(&self, payload: &Payload, prepared: &Prepared, args: I) -> Error
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let err = prepared.exec_checked(&args, true);
        if prepared.backend() == Backend::Mapped && self.choice == Choice::Auto {
            // It undid what it did: run the payload from its memfd instead.
            debug!(payload = payload.name(), "the mapped exec failed ({err}): using the memfd");
            return match self.prepare_memfd_or_cache(payload) {
                Ok(memfd) => {
                    let memfd = Prepared { arg0: prepared.arg0.clone(), ..memfd };
                    self.exec_prepared(payload, &memfd, args)
                }
                Err(e) => e,
            };
        }
        if prepared.backend() == Backend::Memfd
            && self.choice == Choice::Auto
            && err.is_exec_refused()
        {
            return match self.fall_back(payload, err) {
                Ok(cached) => Prepared { arg0: prepared.arg0.clone(), ..cached }.exec(&args),
                Err(e) => e,
            };
        }
        err
    }

    /// Runs `payload` with `args` the way `stigmer run` does: in place when
    /// it can (this returns only on failure), or as a child that stigmer
    /// waits for, forwarding signals, when the payload needs stigmer to
    /// clean up after it. Call it from a single-threaded process.
    pub fn run<I, S>(&self, payload: &Payload, args: I) -> Result<ExitStatus>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run_as(payload, None, args)
    }

    /// [`Launcher::run`], with `argv[0]` = `arg0` (its name when `None`):
    /// what a program that re-execs itself with an `argv[0]` of its choice
    /// (Go's re-exec idiom) expects to see again.
    pub fn run_as<I, S>(
        &self,
        payload: &Payload,
        arg0: Option<&OsStr>,
        args: I,
    ) -> Result<ExitStatus>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let blocked = child::Blocked::new()?;
        let mut prepared = self.prepare_to(payload, true)?;
        prepared.arg0 = arg0.map(OsStr::to_owned);
        if prepared.needs_parent() {
            if blocked.stop_pending() {
                // Told to stop before the payload ran: clean up (its private
                // TMPDIR), then take the signal.
                drop(prepared);
                drop(blocked);
                return Err(Error::Exec {
                    name: payload.name().to_owned(),
                    source: io::Error::from(io::ErrorKind::Interrupted),
                });
            }
            let mut cmd = prepared.command();
            cmd.args(args);
            return child::run(&mut cmd, |cmd| prepared.spawn_checked(cmd, true), &blocked);
        }
        // An exec in place keeps the signal mask: restore it first.
        drop(blocked);
        Err(self.exec_prepared(payload, &prepared, args))
    }
}

/// The payload to run again when this process is stigmer reached by a
/// mapped payload that re-exec'd itself: a mapped payload's
/// `/proc/self/exe` is stigmer's file, and the loader leaves
/// [`STIGMER_MAPPED`](crate::env::STIGMER_MAPPED)`=NAME` in its
/// environment (and only in its: every other launch drops the variable).
/// It is that payload, to run with the `argv` it was given
/// ([`Launcher::run_as`]) whatever `argv[0]` is, when the path the kernel
/// exec'd was a `/proc/.../exe` link (`AT_EXECFN`); stigmer exec'd by any
/// other path is stigmer, even with the variable set.
pub fn mapped_reexec(catalog: &Catalog) -> Option<&Payload> {
    let name = std::env::var_os(crate::env::STIGMER_MAPPED)?;
    let payload = catalog.find(name.to_str()?)?;
    imp::exec_through_proc_exe().then_some(payload)
}

impl Launch for Launcher {
    /// As [`Launcher::plan_asset`] says; with `auto`, an asset whose memfd
    /// is refused (a seccomp profile) is kept in the cache instead, with
    /// one warning.
    fn prepare_asset(&self, asset: &Payload) -> Result<PreparedAsset> {
        let plan = self.plan_asset(asset);
        if plan.backend == Backend::Cache {
            return self.cache.prepare_asset(asset);
        }
        match self.memfd.prepare_asset(asset) {
            Err(memfd) if self.choice == Choice::Auto => match self.cache.prepare_asset(asset) {
                Ok(prepared) => {
                    warn!(
                        "cannot keep the asset {} in memory ({memfd}); using the cache in {}",
                        asset.name(),
                        self.cache_home()
                    );
                    Ok(prepared)
                }
                Err(cache) => Err(Error::NoAssetBackend {
                    name: asset.name().to_owned(),
                    memfd: Box::new(memfd),
                    cache: Box::new(cache),
                }),
            },
            other => other,
        }
    }

    fn prepare(&self, payload: &Payload) -> Result<Prepared> {
        self.prepare_to(payload, false)
    }
}

impl Launch for CacheLauncher {
    fn prepare(&self, payload: &Payload) -> Result<Prepared> {
        let entry = self.entry(payload)?;
        Ok(Prepared::new(payload, Image::File(entry)))
    }

    /// A read-only (`0400`) entry, checked like a payload's.
    fn prepare_asset(&self, asset: &Payload) -> Result<PreparedAsset> {
        let entry = self.entry(asset)?;
        // Checked just now; every start checks it again (`pass_to`).
        drop(entry.take_checked());
        Ok(PreparedAsset { name: asset.name().to_owned(), image: AssetImage::File(entry) })
    }
}

/// Elsewhere than Linux, fails with [`Error::MemfdUnsupported`].
impl Launch for MemfdLauncher {
    fn prepare(&self, payload: &Payload) -> Result<Prepared> {
        Ok(Prepared::new(payload, Image::Memfd(self.image(payload)?)))
    }

    fn prepare_asset(&self, asset: &Payload) -> Result<PreparedAsset> {
        let image = AssetImage::Memfd(self.asset(asset)?);
        Ok(PreparedAsset { name: asset.name().to_owned(), image })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `#!` script in the cache of a fresh home, prepared.
    fn prepared(home: &std::path::Path, script: &str) -> Prepared {
        let payload = Payload::from_bytes("probe", format!("#!/bin/sh\n{script}\n").into_bytes());
        let launcher = Launcher::new(Choice::Only(Backend::Cache), Some(home.join("home")));
        launcher.prepare(&payload).unwrap()
    }

    fn output(prepared: &Prepared, by_fd: bool, args: &[&str]) -> String {
        let mut cmd = prepared.command();
        cmd.args(args).stdout(std::process::Stdio::piped());
        let child = prepared.spawn_by(&mut cmd, false, by_fd).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn a_cache_entry_spawns_by_path_as_on_macos() {
        let dir = tempfile::tempdir().unwrap();
        let prepared = prepared(dir.path(), r#"echo "$0 $1 $TMPDIR""#);
        let want = format!("{} x \n", prepared.path().unwrap().display());
        assert_eq!(output(&prepared, false, &["x"]), want);
        if EXEC_BY_FD {
            // The interpreter reads a script exec'd by descriptor through
            // /dev/fd/N; the payload sees the same either way otherwise.
            let by_fd = output(&prepared, true, &["x"]);
            assert!(by_fd.starts_with("/dev/fd/") && by_fd.ends_with(" x \n"), "{by_fd}");
        }
    }

    #[test]
    fn a_bad_cache_entry_is_refilled_before_a_spawn_by_path() {
        let dir = tempfile::tempdir().unwrap();
        let prepared = prepared(dir.path(), "echo good");
        let path = prepared.path().unwrap().to_owned();
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, "#!/bin/sh\necho evil\n").unwrap();
        assert_eq!(output(&prepared, false, &[]), "good\n");
    }

    #[test]
    fn a_host_that_refuses_exec_from_memory_gets_the_fallback_prepare_takes() {
        let payload = Payload::from_bytes("probe", b"#!/bin/sh\ntrue\n".to_vec());
        let plan = |choice, memfd_exec, cache| {
            let launcher = Launcher::new(choice, None);
            launcher.plan_on(&payload, Host { memfd_exec, cache, mapped: true }).map(|p| p.backend)
        };
        let (auto, cache, memfd) =
            (Choice::Auto, Choice::Only(Backend::Cache), Choice::Only(Backend::Memfd));
        assert_eq!(plan(auto, true, true), Ok(NATIVE));
        assert_eq!(plan(auto, false, true), Ok(Backend::Cache));
        let stuck = if NATIVE == Backend::Memfd { Stuck::NoFallback } else { Stuck::NeedsCache };
        assert_eq!(plan(auto, false, false), Err(stuck));
        assert_eq!(plan(memfd, true, true), Ok(Backend::Memfd));
        assert_eq!(plan(memfd, false, true), Err(Stuck::NoFallback), "no fallback when chosen");
        assert_eq!(plan(cache, true, true), Ok(Backend::Cache));
        assert_eq!(plan(cache, true, false), Err(Stuck::NeedsCache));
    }

    #[test]
    fn the_memfd_backend_is_there_or_refuses_plainly() {
        let payload = Payload::from_bytes("probe", b"#!/bin/sh\ntrue\n".to_vec());
        match MemfdLauncher::new().prepare(&payload) {
            Ok(prepared) => {
                assert_eq!(NATIVE, Backend::Memfd);
                assert_eq!(prepared.backend(), Backend::Memfd);
            }
            Err(e) => {
                assert_ne!(NATIVE, Backend::Memfd);
                assert!(matches!(e, Error::MemfdUnsupported), "{e}");
            }
        }
    }
}
