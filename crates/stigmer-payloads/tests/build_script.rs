//! This package's build script, run again on a made-up repository: which
//! payload folder it takes.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The build script cargo compiled for this package (the newest, should
/// there be several). It is a host program: with `--target`, this test is in
/// `target/<triple>/debug/deps/` and the build script under `target/debug/`.
fn build_script() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile = exe.parent().unwrap().parent().unwrap();
    let host = profile.parent().unwrap().parent().unwrap().join(profile.file_name().unwrap());
    [profile.join("build"), host.join("build")]
        .iter()
        .flat_map(|build| fs::read_dir(build).into_iter().flatten())
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("stigmer-payloads-"))
        .map(|e| e.path().join("build-script-build"))
        .filter(|p| p.exists())
        .max_by_key(|p| fs::metadata(p).unwrap().modified().unwrap())
        .expect("cargo built this package's build script")
}

/// A repository with `platform/demo/` holding one script, as this
/// package's build script sees it.
fn repository() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    fs::create_dir_all(root.path().join("crates/stigmer-payloads")).unwrap();
    fs::create_dir_all(root.path().join("platform/demo")).unwrap();
    let hello = root.path().join("platform/demo/hello");
    fs::write(&hello, "#!/bin/sh\necho demo\n").unwrap();
    fs::set_permissions(&hello, fs::Permissions::from_mode(0o755)).unwrap();
    fs::create_dir(root.path().join("out")).unwrap();
    root
}

fn run(root: &Path) -> Output {
    Command::new(build_script())
        .env("CARGO_MANIFEST_DIR", root.join("crates/stigmer-payloads"))
        .env("OUT_DIR", root.join("out"))
        .env("TARGET", stigmer_payloads::TARGET)
        .env("HOST", stigmer_payloads::TARGET)
        .env_remove("STIGMER_PAYLOAD_DIR")
        .env_remove("CARGO_FEATURE_COMPRESS")
        .output()
        .unwrap()
}

/// With no `platform/<target>/`, the demo payloads; with one that is a
/// broken symlink (release artifacts not fetched, a build output not
/// built), an error naming it, never the demo payloads in their place.
#[test]
fn a_dangling_platform_folder_is_an_error_not_the_demo_payloads() {
    let root = repository();
    let o = run(root.path());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let table = fs::read_to_string(root.path().join("out/stigmer_payloads.rs")).unwrap();
    assert!(table.contains("\"hello\""), "{table}");

    let root = repository();
    let dir = root.path().join("platform").join(stigmer_payloads::TARGET);
    std::os::unix::fs::symlink(root.path().join("artifacts/not-fetched"), &dir).unwrap();
    let o = run(root.path());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "the demo payloads were embedded instead:\n{err}");
    let named = format!("platform/{}", stigmer_payloads::TARGET);
    assert!(err.contains("cannot read the payload folder") && err.contains(&named), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!root.path().join("out/stigmer_payloads.rs").exists());
}
