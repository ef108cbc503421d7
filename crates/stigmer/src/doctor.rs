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

use crate::launch::{Host, Stuck, Trust};
use crate::{Backend, Catalog, Launcher, Manifest, ManifestError};

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
#[non_exhaustive]
pub struct Report {
    /// The kernel's name and release (`uname -sr`).
    pub kernel: String,
    /// Exec from memory; `None` where there is no memfd (macOS).
    pub memfd: Option<MemfdReport>,
    /// The mapped loader (what `auto` uses for ELF payloads): whether this host allows it,
    /// or why not.
    pub mapped: Finding,
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
#[non_exhaustive]
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
#[non_exhaustive]
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
#[non_exhaustive]
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
#[non_exhaustive]
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
    let mapped = match crate::launch::probe_mapped() {
        Ok(()) => Finding::ok("allowed: ELF payloads can run mapped from stigmer's own file"),
        Err(why) => Finding::bad(why),
    };
    let host = Host {
        memfd_exec: memfd.as_ref().is_some_and(|m| m.exec.ok),
        cache: cache.usable.ok && cache.noexec != Some(true),
        mapped: mapped.ok,
    };
    let cache_problem = || match cache.noexec {
        Some(true) => format!("{} is on a noexec mount", show(cache.root.as_deref())),
        _ => cache.usable.detail.clone(),
    };

    let payloads: Vec<PayloadReport> = catalog
        .payloads()
        .iter()
        .map(|p| {
            let (backend, why, ok) = match launcher.plan_on(p, host) {
                Ok(plan) => (Some(plan.backend), plan.why.to_owned(), true),
                Err(Stuck::NoFallback) => (
                    None,
                    "exec from memory is refused here and there is no fallback".into(),
                    false,
                ),
                Err(Stuck::NeedsCache) => {
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
        mapped,
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
    let survey = match launcher.cache().survey() {
        Ok(survey) => survey,
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
    let usable = match survey.trust {
        Trust::Ready => Finding::ok("private and ours"),
        Trust::Partial(dir) => Finding::ok(format!(
            "private and ours; stigmer creates the rest under {}",
            dir.display()
        )),
        Trust::Creatable(parent) => Finding::ok(format!(
            "not created yet; stigmer creates it, private, in {}",
            parent.display()
        )),
        Trust::Unwritable(parent) => Finding::bad(format!(
            "missing, and {} is not writable: set STIGMER_HOME to a writable folder",
            parent.display()
        )),
        Trust::NoParent => Finding::bad("missing, and no parent folder exists"),
        Trust::Refused(e) => Finding::bad(e.to_string()),
    };
    let root = survey.layout.root;
    let meta = std::fs::symlink_metadata(&root).ok();
    CacheReport {
        owner: meta.as_ref().map(|m| m.uid()),
        mode: meta.as_ref().map(|m| format!("{:o}", m.mode() & 0o7777)),
        root: Some(root),
        usable,
        free: survey.free,
        noexec: survey.noexec,
    }
}
