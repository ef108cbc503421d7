//! Finding the payloads in a payload folder, at build time.
//!
//! `build.rs` includes this file with `#[path]`; the library compiles it only
//! for its unit tests. It is std-only so the build script needs no
//! dependencies. Every problem is one line that names the file and the fix,
//! because it reaches the user as a build error or a `cargo:warning`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The manifest's file name inside a payload folder.
pub(crate) const MANIFEST: &str = "services.toml";

/// What a payload folder holds.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    /// The payloads, sorted by name.
    pub(crate) payloads: Vec<Found>,
    /// The path of `services.toml`, if there is one.
    pub(crate) manifest: Option<PathBuf>,
    /// Files that were skipped, with why and how to include them.
    pub(crate) warnings: Vec<String>,
}

/// One payload found in the folder.
#[derive(Debug)]
pub(crate) struct Found {
    /// The payload's name: its file name.
    pub(crate) name: String,
    /// Where it is.
    pub(crate) path: PathBuf,
}

/// Checks that `name` can be a payload's name: a plain file name that is
/// safe on every platform, in a shell and as a multi-call link.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    let fix =
        "rename it to letters, digits, '.', '_' and '-' (at most 64, not starting with '.' or '-')";
    if name.is_empty() || name.len() > 64 {
        return Err(format!("payload name {name:?} must be 1 to 64 characters: {fix}"));
    }
    if name.starts_with(['.', '-']) {
        return Err(format!("payload name {name:?} starts with '.' or '-': {fix}"));
    }
    if let Some(c) =
        name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!("payload name {name:?} contains {c:?}: {fix}"));
    }
    if name == "stigmer" || name == MANIFEST {
        return Err(format!("payload name {name:?} is reserved by stigmer: rename the file"));
    }
    Ok(())
}

/// Lists the payloads in `dir`: every regular executable file whose name
/// passes [`check_name`], plus the optional `services.toml`.
///
/// Hidden files (dotfiles) are ignored silently; other files that are not
/// payloads give a warning. A missing folder or an unsafe name is an error;
/// whether a folder without payloads is one is the caller's choice.
pub(crate) fn scan(dir: &Path) -> Result<Scan, String> {
    let entries = fs::read_dir(dir).map_err(|e| {
        format!(
            "cannot read the payload folder {}: {e} (create it and put the executables \
             there, or set STIGMER_PAYLOAD_DIR to the folder that holds them)",
            dir.display()
        )
    })?;
    let mut scan = Scan::default();
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            return Err(format!(
                "payload file {} has a name that is not UTF-8: rename it",
                path.display()
            ));
        };
        if name.starts_with('.') {
            continue;
        }
        // Follow symlinks: a folder of links to build outputs is common.
        let meta = fs::metadata(&path)
            .map_err(|e| format!("cannot read payload file {}: {e}", path.display()))?;
        if name == MANIFEST && meta.is_file() {
            scan.manifest = Some(path);
            continue;
        }
        if !meta.is_file() {
            scan.warnings.push(format!(
                "skipping {}: not a regular file (payloads are the executable files directly in the folder)",
                path.display()
            ));
            continue;
        }
        if meta.permissions().mode() & 0o111 == 0 {
            scan.warnings.push(format!(
                "skipping {}: not executable (run \"chmod +x {}\" to embed it as a payload)",
                path.display(),
                path.display()
            ));
            continue;
        }
        check_name(&name).map_err(|e| format!("{}: {e}", path.display()))?;
        if meta.len() == 0 {
            return Err(format!(
                "payload file {} is empty: rebuild it or remove it",
                path.display()
            ));
        }
        scan.payloads.push(Found { name, path });
    }
    scan.payloads.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(scan)
}

/// The error for a payload folder that holds no payload.
pub(crate) fn empty_error(dir: &Path) -> String {
    format!(
        "the payload folder {} holds no executable files: put the payloads there (chmod +x), \
         or unset STIGMER_PAYLOAD_DIR to embed the demo payloads",
        dir.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &Path, name: &str, mode: u32) {
        let path = dir.join(name);
        fs::write(&path, b"\x7fELF").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn names() {
        for ok in ["api", "workflow-runner", "py_tool.bin", "A1"] {
            check_name(ok).unwrap();
        }
        for bad in ["", ".hidden", "-rf", "a b", "a/b", "ünï", "stigmer", "services.toml"] {
            let err = check_name(bad).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
        assert!(check_name(&"x".repeat(65)).is_err());
    }

    #[test]
    fn finds_executables_and_manifest() {
        let dir = tempfile::tempdir().unwrap();
        file(dir.path(), "b-svc", 0o755);
        file(dir.path(), "a-svc", 0o700);
        file(dir.path(), "README.md", 0o644);
        file(dir.path(), ".DS_Store", 0o644);
        fs::write(dir.path().join(MANIFEST), "").unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        let scan = scan(dir.path()).unwrap();
        let names: Vec<_> = scan.payloads.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a-svc", "b-svc"]);
        assert_eq!(scan.manifest.unwrap(), dir.path().join(MANIFEST));
        assert_eq!(scan.warnings.len(), 2, "{:?}", scan.warnings);
        assert!(scan.warnings.iter().any(|w| w.contains("README.md") && w.contains("chmod +x")));
        assert!(
            scan.warnings.iter().any(|w| w.contains("sub") && w.contains("not a regular file"))
        );
    }

    #[test]
    fn errors_name_the_file_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let err = scan(&dir.path().join("missing")).unwrap_err();
        assert!(err.contains("missing") && err.contains("STIGMER_PAYLOAD_DIR"), "{err}");

        assert!(scan(dir.path()).unwrap().payloads.is_empty());
        assert!(empty_error(dir.path()).contains("STIGMER_PAYLOAD_DIR"));

        file(dir.path(), "bad name", 0o755);
        let err = scan(dir.path()).unwrap_err();
        assert!(err.contains("bad name") && err.contains("rename"), "{err}");
    }
}
