//! Embeds the payloads of the `stigmer` binary.
//!
//! The payload folder is `$STIGMER_PAYLOAD_DIR` when it is set (relative to
//! the repository's root), otherwise `platform/<target-triple>/`. When that
//! default folder is missing or empty, the demo payloads are built from the
//! std-only sources in `platform/demo/`, so a fresh clone builds and runs.
//!
//! The table itself (kinds, sizes, sha256s, zstd frames with the `compress`
//! feature) is written by `stigmer-build`, as for any other program.

// A build script talks to cargo through stdout and stderr.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use stigmer_build::{Embed, Error, MANIFEST};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Cargo prints a failing build script's stderr: keep it one line.
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    println!("cargo::rerun-if-env-changed=STIGMER_PAYLOAD_DIR");
    let package = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    // This package lives in crates/stigmer-payloads/ of the repository.
    let root = package.join("../..");
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    let target = env::var("TARGET").unwrap();
    let err = |e: Error| e.to_string();

    let embed = match env::var_os("STIGMER_PAYLOAD_DIR").filter(|v| !v.is_empty()) {
        Some(dir) => {
            let dir = root.join(dir);
            Embed::folder(&dir).map_err(err)?.source(dir.display().to_string())
        }
        None => {
            let dir = root.join("platform").join(&target);
            // Watch platform/ as a whole: the target's folder may appear.
            println!("cargo::rerun-if-changed={}", root.join("platform").display());
            let demo = || build_demo(&root.join("platform/demo"), &out, &target, &root);
            match Embed::folder(&dir) {
                Ok(embed) => embed.source(format!("platform/{target}")),
                // Only when nothing is there: a broken symlink is a folder
                // someone meant to fill, not a fresh clone.
                Err(Error::Folder { .. }) if fs::symlink_metadata(&dir).is_err() => demo()?,
                Err(e @ Error::Empty { .. }) => {
                    println!("cargo::warning={e}; embedding the demo payloads instead");
                    demo()?
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    };
    let compress = env::var_os("CARGO_FEATURE_COMPRESS").is_some();
    embed.compress(compress).write().map_err(err)?;
    // For `--version`, and for tests that build stigmer again for the
    // target they were built for.
    println!("cargo::rustc-env=STIGMER_TARGET={target}");
    Ok(())
}

/// Builds every `*.rs` in the demo folder into a payload, and takes its
/// executable files (scripts), its other files (assets) and
/// `services.toml` as they are.
fn build_demo(demo: &Path, out: &Path, target: &str, root: &Path) -> Result<Embed, String> {
    let bin = out.join("demo");
    fs::create_dir_all(&bin).map_err(|e| io_err(&bin, e))?;
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let host = env::var("HOST").unwrap();
    let mut embed = Embed::new().source("platform/demo");
    let mut builds = Vec::new();
    let mut entries: Vec<_> = fs::read_dir(demo)
        .map_err(|e| io_err(demo, e))?
        .map(|e| e.map(|e| e.path()).map_err(|e| io_err(demo, e)))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for path in entries {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name == MANIFEST {
            embed = embed.manifest(path);
        } else if let Some(stem) = name.strip_suffix(".rs") {
            stigmer_build::check_name(stem).map_err(|e| format!("{}: {e}", path.display()))?;
            let exe = bin.join(stem);
            let mut cmd = Command::new(&rustc);
            cmd.args(["--edition=2021", "--crate-type=bin", "-Copt-level=2", "-Cpanic=abort"])
                .args(["-Cstrip=symbols", "-Cdebuginfo=0", "-Ccodegen-units=1"])
                .arg(format!("--crate-name={}", stem.replace('-', "_")))
                // Keep the build machine's paths out of the payload.
                .arg(format!("--remap-path-prefix={}=.", root.display()))
                .arg("-o")
                .arg(&exe)
                .arg(&path);
            if target != host {
                cmd.arg(format!("--target={target}"));
            }
            let child = cmd.spawn().map_err(|e| {
                format!(
                    "cannot run rustc ({}) to build {}: {e}",
                    rustc.to_string_lossy(),
                    path.display()
                )
            })?;
            builds.push((child, path, stem.to_owned(), exe));
        } else if is_executable(&path) {
            embed = embed.payload(&name, path).map_err(|e| e.to_string())?;
        } else if !name.starts_with('.') && path.is_file() {
            embed = embed.asset(&name, path).map_err(|e| e.to_string())?;
        }
    }
    for (child, path, name, exe) in builds {
        let status = child.wait_with_output().map_err(|e| io_err(&path, e))?.status;
        if !status.success() {
            return Err(format!(
                "cannot build the demo payload {} for {target} ({status}): install that target's \
                 toolchain, or put this target's payloads in platform/{target}/",
                path.display()
            ));
        }
        embed = embed.payload(&name, exe).map_err(|e| e.to_string())?;
    }
    Ok(embed)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn io_err(path: &Path, e: std::io::Error) -> String {
    format!("{}: {e}", path.display())
}
