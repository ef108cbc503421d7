//! `stigmer-build` in a real build script, built by cargo: what cargo does
//! with what the helper tells it.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BUILD_RS: &str = r##"
fn main() {
    // A payload the build script makes itself, as the demo payloads and
    // examples/hello-tenant are: its source is what to watch.
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").unwrap());
    let made = out.join("made");
    std::fs::write(&made, b"#!/bin/sh\necho made\n").unwrap();
    println!("cargo::rerun-if-changed=build.rs");
    let embed = stigmer_build::Embed::folder("payloads").unwrap();
    embed.payload("made", &made).unwrap().write().unwrap();
}
"##;

/// A package with this build script, a payload folder, and a library that
/// refuses to compile under `cfg(injected)`.
fn package(dir: &Path) {
    let helper = Path::new(env!("CARGO_MANIFEST_DIR"));
    fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"probe-tenant\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\
             [workspace]\n[build-dependencies]\nstigmer-build = {{ path = {:?} }}\n",
            helper.display().to_string()
        ),
    )
    .unwrap();
    // The workspace's versions, resolved offline (from the repository; a
    // packaged copy of this crate has no lock file to lend).
    let lock = helper.join("../../Cargo.lock");
    if lock.exists() {
        fs::copy(lock, dir.join("Cargo.lock")).unwrap();
    }
    fs::write(dir.join("build.rs"), BUILD_RS).unwrap();
    fs::create_dir(dir.join("src")).unwrap();
    fs::write(dir.join("src/lib.rs"), "#[cfg(injected)]\ncompile_error!(\"injected\");\n").unwrap();
    let payloads = dir.join("payloads");
    fs::create_dir(&payloads).unwrap();
    let tool = payloads.join("tool");
    fs::write(&tool, b"#!/bin/sh\necho tool\n").unwrap();
    fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(payloads.join("notes\ncargo::rustc-cfg=injected\n"), "not a payload").unwrap();
}

fn cargo_build(dir: &Path, target: &Path) -> Output {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    Command::new(cargo)
        .args(["build", "--offline", "-v", "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", target)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .output()
        .unwrap()
}

fn target_dir() -> PathBuf {
    // Shared between runs, so the helper's dependencies build once.
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/stigmer-build-tests")
}

/// A build script's own outputs are not watched: a second build with
/// nothing changed runs no build script and compiles nothing. (Watching a
/// file the script writes makes cargo find it newer than the last run,
/// every time: the demo payloads were compiled again, and stigmer relinked,
/// at every `cargo build` and `cargo test`.) And a file name in the folder
/// is only ever a name to cargo.
#[test]
fn a_second_build_is_fresh_and_file_names_are_not_instructions() {
    let dir = tempfile::tempdir().unwrap();
    package(dir.path());
    let target = target_dir();
    let first = cargo_build(dir.path(), &target);
    let err = String::from_utf8_lossy(&first.stderr);
    assert!(first.status.success(), "{err}");
    assert!(err.contains("skipping") && err.contains("notes\\ncargo::rustc-cfg"), "{err}");
    let second = cargo_build(dir.path(), &target);
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{err}");
    assert!(
        err.contains("Fresh probe-tenant") && !err.contains("Dirty") && !err.contains("Running"),
        "the second build was not fresh:\n{err}"
    );
}
