//! Finding the payloads in a payload folder, at build time.
//!
//! Every problem is one line that names the file and the fix, because it
//! reaches the user as a build error or a `cargo:warning`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::Error;
use crate::error::{NameError, NameProblem, shown};

/// The manifest's file name inside a payload folder.
pub const MANIFEST: &str = "services.toml";

/// What a payload folder holds.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Scan {
    /// The payloads, sorted by name.
    pub payloads: Vec<Found>,
    /// The assets: regular files that are not executable, which services
    /// read (`${asset:NAME}` in the manifest), sorted by name.
    pub assets: Vec<Found>,
    /// The path of `services.toml`, if there is one.
    pub manifest: Option<PathBuf>,
    /// Files that were skipped, with why and how to include them.
    pub warnings: Vec<String>,
}

/// One payload (or asset) found in the folder.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Found {
    /// The payload's name: its file name.
    pub name: String,
    /// Where it is.
    pub path: PathBuf,
}

/// Checks that `name` can be a payload's name: a plain file name that is
/// safe on every platform, in a shell and as a multi-call link: letters,
/// digits, '.', '_' and '-', at most 64, not starting with '.' or '-', and
/// neither `stigmer` nor `services.toml`.
///
/// ```
/// assert!(stigmer_build::check_name("workflow-runner").is_ok());
/// let err = stigmer_build::check_name("a b").unwrap_err();
/// assert!(err.to_string().contains("rename it"));
/// ```
pub fn check_name(name: &str) -> Result<(), NameError> {
    let problem = if name.is_empty() || name.len() > 64 {
        NameProblem::Length
    } else if name.starts_with(['.', '-']) {
        NameProblem::Leading
    } else if let Some(c) =
        name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        NameProblem::Char(c)
    } else if name == "stigmer" || name == MANIFEST {
        NameProblem::Reserved
    } else {
        return Ok(());
    };
    Err(NameError { name: name.to_owned(), problem })
}

/// Lists the payloads in `dir`: every regular executable file whose name
/// passes [`check_name`], plus the optional `services.toml`; and its
/// assets: every other regular file, under the same name rule.
///
/// Hidden files (dotfiles) are ignored silently; subfolders and empty
/// assets give a warning. A missing folder or an unsafe name is an error;
/// whether a folder without payloads is one is the caller's choice.
pub fn scan(dir: &Path) -> Result<Scan, Error> {
    let entries =
        fs::read_dir(dir).map_err(|source| Error::Folder { dir: dir.to_owned(), source })?;
    let mut scan = Scan::default();
    for entry in entries {
        let entry = entry.map_err(|source| Error::Read { path: dir.to_owned(), source })?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            return Err(Error::NotUtf8 { path });
        };
        if name.starts_with('.') {
            continue;
        }
        // Follow symlinks: a folder of links to build outputs is common.
        let meta = match fs::metadata(&path) {
            Ok(meta) => meta,
            Err(source) => return Err(Error::Entry { path, source }),
        };
        if name == MANIFEST && meta.is_file() {
            scan.manifest = Some(path);
            continue;
        }
        if !meta.is_file() {
            scan.warnings.push(format!(
                "skipping {}: not a regular file (payloads are the executable files directly in the folder)",
                shown(&path)
            ));
            continue;
        }
        if meta.permissions().mode() & 0o111 != 0 {
            if let Err(source) = check_name(&name) {
                return Err(Error::Name { path, source });
            }
            if meta.len() == 0 {
                return Err(Error::EmptyPayload { path });
            }
            scan.payloads.push(Found { name, path });
            continue;
        }
        // Not executable: an asset, if it can be one. A stray file (notes,
        // a copy) is left out with a warning rather than failing the build.
        if let Err(e) = check_name(&name) {
            scan.warnings.push(format!("skipping {}: not embedded as an asset: {e}", shown(&path)));
        } else if meta.len() == 0 {
            scan.warnings.push(format!(
                "skipping {}: empty, so not embedded as an asset (give it content, or \
                 \"chmod +x {}\" to embed it as a payload)",
                shown(&path),
                shown(&path)
            ));
        } else {
            scan.assets.push(Found { name, path });
        }
    }
    scan.payloads.sort_by(|a, b| a.name.cmp(&b.name));
    scan.assets.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(scan)
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
            let err = check_name(bad).unwrap_err().to_string();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
        assert!(check_name(&"x".repeat(65)).is_err());
    }

    #[test]
    fn finds_executables_assets_and_manifest() {
        let dir = tempfile::tempdir().unwrap();
        file(dir.path(), "b-svc", 0o755);
        file(dir.path(), "a-svc", 0o700);
        file(dir.path(), "app.conf", 0o644);
        file(dir.path(), "README.md", 0o400);
        file(dir.path(), ".DS_Store", 0o644);
        file(dir.path(), ".hidden.conf", 0o600);
        fs::write(dir.path().join("empty.conf"), "").unwrap();
        fs::write(dir.path().join(MANIFEST), "").unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        let scan = scan(dir.path()).unwrap();
        let names: Vec<_> = scan.payloads.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a-svc", "b-svc"]);
        // Not executable: an asset; a dotfile and the manifest: neither.
        let assets: Vec<_> = scan.assets.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(assets, ["README.md", "app.conf"]);
        assert_eq!(scan.assets[1].path, dir.path().join("app.conf"));
        assert_eq!(scan.manifest.unwrap(), dir.path().join(MANIFEST));
        assert_eq!(scan.warnings.len(), 2, "{:?}", scan.warnings);
        assert!(scan.warnings.iter().any(|w| w.contains("empty.conf") && w.contains("empty")));
        assert!(
            scan.warnings.iter().any(|w| w.contains("sub") && w.contains("not a regular file"))
        );
    }

    #[test]
    fn an_asset_takes_the_name_rule_of_payloads() {
        let dir = tempfile::tempdir().unwrap();
        file(dir.path(), "ok", 0o755);
        file(dir.path(), "my config.toml", 0o644);
        let scan = scan(dir.path()).unwrap();
        assert!(scan.assets.is_empty());
        let [warning] = &scan.warnings[..] else { panic!("{:?}", scan.warnings) };
        assert!(warning.contains("\"my config.toml\" contains ' '"), "{warning}");
        assert!(warning.contains("not embedded as an asset") && warning.contains("rename"));
    }

    #[test]
    fn errors_name_the_file_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let err = scan(&dir.path().join("missing")).unwrap_err().to_string();
        assert!(err.contains("missing") && err.contains("STIGMER_PAYLOAD_DIR"), "{err}");

        assert!(scan(dir.path()).unwrap().payloads.is_empty());
        let empty = Error::Empty { dir: dir.path().to_owned() }.to_string();
        assert!(empty.contains("STIGMER_PAYLOAD_DIR"), "{empty}");

        file(dir.path(), "bad name", 0o755);
        let err = scan(dir.path()).unwrap_err().to_string();
        assert!(err.contains("bad name") && err.contains("rename"), "{err}");
    }

    /// A file name is printed escaped: a skipped file called
    /// "x\ncargo::rustc-link-lib=..." cannot add a line to the build
    /// script's output, which cargo would take for an instruction, and
    /// every error stays one line without terminal escapes.
    #[test]
    fn file_names_cannot_forge_lines_or_cargo_instructions() {
        let dir = tempfile::tempdir().unwrap();
        file(dir.path(), "ok", 0o755);
        file(dir.path(), "notes\ncargo::rustc-link-lib=evil\r\x1b[2J", 0o644);
        fs::create_dir(dir.path().join("sub\ncargo::rustc-cfg=evil")).unwrap();
        std::os::unix::fs::symlink("nowhere", dir.path().join("gone\ncargo::warning=x")).unwrap();
        let err = scan(dir.path()).unwrap_err().to_string();
        assert!(!err.contains(['\n', '\r', '\x1b']), "{err:?}");
        assert!(err.contains("gone\\ncargo"), "{err:?}");
        fs::remove_file(dir.path().join("gone\ncargo::warning=x")).unwrap();
        let scan = scan(dir.path()).unwrap();
        assert_eq!(scan.warnings.len(), 2, "{:?}", scan.warnings);
        for w in &scan.warnings {
            assert!(!w.contains(['\n', '\r', '\x1b']), "{w:?}");
        }
        file(dir.path(), "bad\nname", 0o755);
        let err = super::scan(dir.path()).unwrap_err().to_string();
        assert!(!err.contains(['\n', '\r', '\x1b']) && err.contains("rename"), "{err:?}");
    }
}
