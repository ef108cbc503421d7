//! `stigmer doctor`: what this host allows, and how each payload will run
//! here.
//!
//! Every answer comes from asking the system, never from a version number:
//! `memfd_create` is called with `MFD_EXEC`, and exec from a sealed memfd is
//! proven by running stigmer's own executable from one, made exactly as a
//! payload's memfd is, with [`PROBE_ENV`] set so that it exits at once.
//! Nothing is written: the cache folders are inspected, not created.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::launch::{trusted_ancestors, trusted_dir};
use crate::{Backend, Catalog, Choice, Launcher, Manifest, ManifestError};

/// Set in the environment of the executable that [`diagnose`] runs from a
/// memfd. A program embedding stigmer calls [`answer_probe`] first in
/// `main`, so that the probe costs one exec and nothing else.
pub const PROBE_ENV: &str = crate::env::STIGMER_DOCTOR_PROBE;

/// Exits at once, with status 0, when this process is `doctor`'s probe:
/// [`PROBE_ENV`] is set *and* this process runs from the sealed memfd that
/// [`diagnose`] made. Anywhere else the variable is ignored, so a stray
/// `STIGMER_DOCTOR_PROBE=1` in an environment changes nothing. Never
/// answers off Linux, where there is no probe.
pub fn answer_probe() {
    if std::env::var_os(PROBE_ENV).is_some() && crate::launch::is_probe_exe() {
        std::process::exit(0);
    }
}

/// Everything `stigmer doctor` found.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The kernel's name and release (`uname -sr`).
    pub kernel: String,
    /// Exec from memory; `None` where there is no memfd (macOS).
    pub memfd: Option<MemfdReport>,
    /// The seccomp mode of this process (Linux), e.g. `2 (filter)`.
    pub seccomp: Option<String>,
    /// The cache.
    pub cache: CacheReport,
    /// The RAM a full `stigmer server` would pin in memfds: the sizes of the
    /// payloads its services run from memory, each counted once. `None`
    /// when this build carries no `services.toml`.
    pub server_shmem: Option<u64>,
    /// Every payload, and how it will run here.
    pub payloads: Vec<PayloadReport>,
    /// The problems `stigmer server` would report in the embedded
    /// `services.toml` if started from here (one line each); empty when it
    /// passes the check, `None` when this build carries none.
    pub manifest_problems: Option<Vec<String>>,
}

/// What the kernel allows for exec from memory.
#[derive(Debug, Serialize)]
pub struct MemfdReport {
    /// `memfd_create` with `MFD_EXEC`.
    pub create: Finding,
    /// `vm.memfd_noexec`, where the kernel has it (6.3+).
    pub noexec: Option<u8>,
    /// Running an executable from a sealed memfd.
    pub exec: Finding,
}

/// The cache as it stands.
#[derive(Debug, Serialize)]
pub struct CacheReport {
    /// `$STIGMER_HOME`, or `~/.stigmer`.
    pub root: Option<PathBuf>,
    /// Its owner's uid, if it exists.
    pub owner: Option<u32>,
    /// Its permission bits, in octal (`700`), if it exists.
    pub mode: Option<String>,
    /// Whether stigmer can trust (or create) it.
    pub usable: Finding,
    /// Free bytes on its file system.
    pub free: Option<u64>,
    /// Whether its file system is mounted `noexec` (Linux).
    pub noexec: Option<bool>,
}

/// One answer: whether it is good, and what was seen.
#[derive(Debug, Serialize)]
pub struct Finding {
    /// Good for running payloads.
    pub ok: bool,
    /// What was seen, in a few words.
    pub detail: String,
}

impl Finding {
    fn ok(detail: impl Into<String>) -> Finding {
        Finding { ok: true, detail: detail.into() }
    }

    fn bad(detail: impl Into<String>) -> Finding {
        Finding { ok: false, detail: detail.into() }
    }
}

/// How one payload will run here.
#[derive(Debug, Serialize)]
pub struct PayloadReport {
    /// Its name.
    pub name: String,
    /// Its kind (`elf`, `script`, ...).
    pub kind: &'static str,
    /// Its size in bytes.
    pub size: u64,
    /// Where it will run from, if it can run.
    pub backend: Option<Backend>,
    /// Why, or why not.
    pub why: String,
    /// Whether it can run here.
    pub ok: bool,
}

impl Report {
    /// Whether every payload can run here.
    pub fn all_ok(&self) -> bool {
        self.payloads.iter().all(|p| p.ok)
    }

    /// Whether the embedded `services.toml`, if any, passes the check.
    pub fn manifest_ok(&self) -> bool {
        self.manifest_problems.as_ref().is_none_or(Vec::is_empty)
    }
}

/// Examines this host for `catalog`, as `launcher` would launch it, and
/// reports on `manifest`: the embedded `services.toml` as checked here, if
/// the build carries one.
pub fn diagnose(
    catalog: &Catalog,
    launcher: &Launcher,
    manifest: Option<&Result<Manifest, ManifestError>>,
) -> Report {
    let manifest_problems = manifest.map(|m| match m {
        Ok(_) => Vec::new(),
        Err(e) => e.problems().to_vec(),
    });
    let manifest = manifest.and_then(|m| m.as_ref().ok());
    let memfd = memfd_report();
    let cache = cache_report(launcher);
    let memory_works = memfd.as_ref().is_some_and(|m| m.exec.ok);
    let cache_works = cache.usable.ok && cache.noexec != Some(true);
    let cache_problem = || match cache.noexec {
        Some(true) => format!("{} is on a noexec mount", show(cache.root.as_deref())),
        _ => cache.usable.detail.clone(),
    };

    let payloads: Vec<PayloadReport> = catalog
        .payloads()
        .iter()
        .map(|p| {
            let plan = launcher.plan(p);
            let (backend, why, ok) = match plan.backend {
                Backend::Memfd if memory_works => (Some(Backend::Memfd), plan.why.to_owned(), true),
                Backend::Memfd if launcher.choice() == Choice::Auto && cache_works => (
                    Some(Backend::Cache),
                    "the kernel refuses exec from memory here: from the verified cache".to_owned(),
                    true,
                ),
                Backend::Memfd => (
                    None,
                    "exec from memory is refused here and there is no fallback".into(),
                    false,
                ),
                Backend::Cache if cache_works => (Some(Backend::Cache), plan.why.to_owned(), true),
                Backend::Cache => {
                    (None, format!("needs the cache, but {}", cache_problem()), false)
                }
            };
            PayloadReport {
                name: p.name().to_owned(),
                kind: p.kind().as_str(),
                size: p.len(),
                backend,
                why,
                ok,
            }
        })
        .collect();

    let server_shmem = manifest.map(|m| {
        let mut names: Vec<&str> = m.services.iter().map(|s| s.payload.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        names
            .iter()
            .filter_map(|n| payloads.iter().find(|p| p.name == *n))
            .filter(|p| p.backend == Some(Backend::Memfd))
            .map(|p| p.size)
            .sum()
    });

    Report {
        kernel: kernel(),
        memfd,
        seccomp: seccomp(),
        cache,
        server_shmem,
        payloads,
        manifest_problems,
    }
}

fn show(path: Option<&Path>) -> String {
    path.map_or_else(|| "the cache".to_owned(), |p| p.display().to_string())
}

fn kernel() -> String {
    match nix::sys::utsname::uname() {
        Ok(u) => format!("{} {}", u.sysname().to_string_lossy(), u.release().to_string_lossy()),
        Err(e) => format!("unknown ({e})"),
    }
}

/// The `Seccomp:` line of `/proc/self/status`, explained.
fn seccomp() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field =
        |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_owned());
    let mode = field("Seccomp:")?;
    Some(match mode.as_str() {
        "0" => "0 (off)".to_owned(),
        "1" => "1 (strict)".to_owned(),
        "2" => match field("Seccomp_filters:") {
            Some(n) => format!("2 (filter: {n} installed)"),
            None => "2 (filter)".to_owned(),
        },
        other => other.to_owned(),
    })
}

fn memfd_report() -> Option<MemfdReport> {
    let probe = crate::launch::probe_memfd(PROBE_ENV)?;
    let create = match probe.create {
        Ok(true) => Finding::ok("works with MFD_EXEC"),
        Ok(false) => Finding::ok("works (this kernel predates MFD_EXEC, 6.3)"),
        Err(e) => Finding::bad(format!("refused: {e}")),
    };
    let exec = match probe.exec {
        Ok(took) => Finding::ok(format!(
            "works: stigmer ran itself from a sealed memfd in {} ms",
            took.as_millis()
        )),
        Err(e) => Finding::bad(format!("refused: {e}")),
    };
    Some(MemfdReport { create, noexec: probe.noexec, exec })
}

fn cache_report(launcher: &Launcher) -> CacheReport {
    let root = match launcher.cache().home() {
        Ok(root) => root.to_owned(),
        Err(e) => {
            return CacheReport {
                root: None,
                owner: None,
                mode: None,
                usable: Finding::bad(e.to_string()),
                free: None,
                noexec: None,
            };
        }
    };
    // The folders stigmer would use, down to the first that is missing;
    // the rest would be created, private, inside the last that exists.
    let chain = [root.clone(), root.join("bin"), root.join("bin").join("v1")];
    let mut usable = trusted_ancestors(&root).err().map(|e| Finding::bad(e.to_string()));
    let mut existing = None;
    // The folders above it first, as every launch checks them.
    for dir in chain.iter().filter(|_| usable.is_none()) {
        if std::fs::symlink_metadata(dir).is_err() {
            break;
        }
        if let Err(e) = trusted_dir(dir) {
            usable = Some(Finding::bad(e.to_string()));
            break;
        }
        existing = Some(dir.clone());
    }
    let usable = usable.unwrap_or_else(|| match &existing {
        Some(dir) if *dir == chain[2] => Finding::ok("private and ours"),
        Some(dir) => Finding::ok(format!(
            "private and ours; stigmer creates the rest under {}",
            dir.display()
        )),
        None => match nearest_existing(&root) {
            Some(parent) if writable(&parent) => Finding::ok(format!(
                "not created yet; stigmer creates it, private, in {}",
                parent.display()
            )),
            Some(parent) => Finding::bad(format!(
                "missing, and {} is not writable: set STIGMER_HOME to a writable folder",
                parent.display()
            )),
            None => Finding::bad("missing, and no parent folder exists"),
        },
    });
    let probe = existing.or_else(|| nearest_existing(&root));
    let stat = probe.as_deref().and_then(|p| nix::sys::statvfs::statvfs(p).ok());
    // The two fields' types differ between platforms.
    #[allow(clippy::unnecessary_cast)]
    let free = stat.as_ref().map(|s| s.blocks_available() as u64 * s.fragment_size() as u64);
    let meta = std::fs::symlink_metadata(&root).ok();
    CacheReport {
        owner: meta.as_ref().map(|m| m.uid()),
        mode: meta.as_ref().map(|m| format!("{:o}", m.mode() & 0o7777)),
        root: Some(root),
        usable,
        free,
        noexec: stat.as_ref().and_then(crate::launch::mount_noexec),
    }
}

fn nearest_existing(path: &Path) -> Option<PathBuf> {
    path.ancestors().skip(1).find(|p| p.is_dir()).map(Path::to_owned)
}

fn writable(dir: &Path) -> bool {
    nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK)
        .is_ok()
}
