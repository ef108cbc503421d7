//! [`Embed`]: the payloads one build embeds, and the table it generates.

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use sha2::Digest as _;

use crate::asm::{Asm, symbol_prefix};
use crate::frames::{kept_frames, zstd_frames};
use crate::{Error, FRAME_LEN, Found, GENERATED, Kind, check_name, scan};

/// The payloads (and optional `services.toml`) one build embeds, and how.
#[derive(Debug, Default)]
pub struct Embed {
    payloads: Vec<Found>,
    assets: Vec<Found>,
    manifest: Option<PathBuf>,
    warnings: Vec<String>,
    compress: bool,
    source: String,
    /// A path given to [`Embed::manifest`] that cargo cannot watch,
    /// reported by [`Embed::write_to`].
    unwatchable: Option<PathBuf>,
}

/// What [`Embed::write`] embedded.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Embedded {
    /// Each payload, in name order.
    pub payloads: Vec<EmbeddedPayload>,
    /// Each asset (of kind [`Kind::Asset`]), in name order.
    pub assets: Vec<EmbeddedPayload>,
    /// The generated file.
    pub generated: PathBuf,
}

/// One payload or asset, as [`Embed::write`] found it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct EmbeddedPayload {
    /// Its name.
    pub name: String,
    /// Its kind.
    pub kind: Kind,
    /// Its size, uncompressed.
    pub size: u64,
    /// The sha256 of its bytes.
    pub sha256: [u8; 32],
}

impl Embed {
    /// Nothing yet: add payloads with [`Embed::payload`].
    pub fn new() -> Embed {
        Embed::default()
    }

    /// Every payload of `dir` (its executable files), its assets (its
    /// other files) and its `services.toml`, as [`scan()`](crate::scan())
    /// finds them. Files that are skipped
    /// become cargo warnings when the table is written. A folder with no
    /// payload is [`Error::Empty`].
    pub fn folder(dir: impl AsRef<Path>) -> Result<Embed, Error> {
        let dir = dir.as_ref();
        let scan = scan(dir)?;
        if scan.payloads.is_empty() {
            return Err(Error::Empty { dir: dir.to_owned() });
        }
        rerun_if_changed(dir)?;
        Ok(Embed {
            payloads: scan.payloads,
            assets: scan.assets,
            manifest: scan.manifest,
            warnings: scan.warnings,
            source: dir.display().to_string(),
            ..Embed::default()
        })
    }

    /// Adds the executable at `path` as the payload `name`.
    ///
    /// Cargo runs the build script again when that file changes, unless it
    /// is in `$OUT_DIR`: a payload the build script makes there itself is
    /// rebuilt when its sources change, which the script must watch
    /// (`cargo::rerun-if-changed`).
    pub fn payload(mut self, name: &str, path: impl Into<PathBuf>) -> Result<Embed, Error> {
        let found = self.new_name(name, path.into())?;
        self.payloads.push(found);
        self.payloads.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(self)
    }

    /// Adds the file at `path` as the asset `name`: bytes a service reads
    /// (`${asset:NAME}` in the manifest), never run. Watched as
    /// [`Embed::payload`] watches a payload.
    pub fn asset(mut self, name: &str, path: impl Into<PathBuf>) -> Result<Embed, Error> {
        let found = self.new_name(name, path.into())?;
        self.assets.push(found);
        self.assets.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(self)
    }

    /// `path` as `name`, after checking that the name is valid and not
    /// taken by a payload or an asset, and telling cargo to watch it.
    fn new_name(&self, name: &str, path: PathBuf) -> Result<Found, Error> {
        if let Err(source) = check_name(name) {
            return Err(Error::Name { path, source });
        }
        if let Some(first) = self.payloads.iter().chain(&self.assets).find(|p| p.name == name) {
            return Err(Error::Duplicate {
                name: name.to_owned(),
                first: first.path.clone(),
                second: path,
            });
        }
        rerun_if_changed(&path)?;
        Ok(Found { name: name.to_owned(), path })
    }

    /// Embeds the file at `path` as the `services.toml` beside the payloads.
    pub fn manifest(mut self, path: impl Into<PathBuf>) -> Embed {
        let path = path.into();
        if rerun_if_changed(&path).is_err() {
            self.unwatchable = Some(path.clone());
        }
        self.manifest = Some(path);
        self
    }

    /// Compresses every payload with zstd (level 19, [`FRAME_LEN`] frames):
    /// a smaller binary, for a decompression at every first launch. Needs
    /// this crate's `compress` feature and the runtime's.
    pub fn compress(mut self, compress: bool) -> Embed {
        self.compress = compress;
        self
    }

    /// Where the payloads came from, for the generated file's header.
    pub fn source(mut self, source: impl Into<String>) -> Embed {
        self.source = source.into();
        self
    }

    /// Whether no payload was added.
    pub fn is_empty(&self) -> bool {
        self.payloads.is_empty()
    }

    /// The payloads so far, in name order.
    pub fn payloads(&self) -> &[Found] {
        &self.payloads
    }

    /// The assets so far, in name order.
    pub fn assets(&self) -> &[Found] {
        &self.assets
    }

    /// Writes the table to `$OUT_DIR/`[`GENERATED`] (run from a build
    /// script), prints the scan's warnings as cargo warnings, and returns
    /// what was embedded.
    pub fn write(self) -> Result<Embedded, Error> {
        let out = PathBuf::from(std::env::var_os("OUT_DIR").ok_or_else(|| Error::Write {
            path: PathBuf::from("$OUT_DIR"),
            source: io::Error::other("OUT_DIR is not set: call this from a build script"),
        })?);
        for w in &self.warnings {
            println!("cargo::warning={w}");
        }
        self.write_to(&out)
    }

    /// Writes the table to `out`/[`GENERATED`], and the stored bytes of
    /// every payload under `out/stigmer-payloads/`, named by sha256.
    pub fn write_to(self, out: &Path) -> Result<Embedded, Error> {
        if self.compress && !cfg!(feature = "compress") {
            return Err(Error::NoCompress);
        }
        if let Some(path) = self.unwatchable {
            return Err(Error::LineBreak { path });
        }
        let stored_dir = out.join("stigmer-payloads");
        fs::create_dir_all(&stored_dir)
            .map_err(|source| Error::Write { path: stored_dir.clone(), source })?;
        let asm = Asm::for_target();
        let prefix = symbol_prefix();
        let mut kept = Vec::new();
        // The stored file of each payload placed so far, and its index.
        let mut placed: Vec<(PathBuf, usize)> = Vec::new();
        // The block's items (the bytes, their symbols) and the table's rows.
        let (mut items, mut entries) = (String::new(), String::new());
        let (mut embedded, mut assets) = (Vec::new(), Vec::new());
        // Payloads, then assets: one table, told apart by their kind.
        let all =
            self.payloads.iter().map(|p| (p, false)).chain(self.assets.iter().map(|a| (a, true)));
        for (i, (p, asset)) in all.enumerate() {
            regular_file(&p.path)?;
            let bytes =
                fs::read(&p.path).map_err(|source| Error::Read { path: p.path.clone(), source })?;
            if bytes.is_empty() {
                return Err(Error::EmptyPayload { path: p.path.clone() });
            }
            let kind = if asset { Kind::Asset } else { Kind::detect(&bytes) };
            let sha256: [u8; 32] = sha2::Sha256::digest(&bytes).into();
            let hex: String = sha256.iter().map(|b| format!("{b:02x}")).collect();
            // The bytes that were hashed are the bytes embedded: the build
            // embeds its own copy, kept under the sha256, so an edit racing
            // the build cannot slip other bytes under this digest, and an
            // unchanged payload is neither copied nor compressed again.
            let (stored, encoding) = if self.compress {
                let path = stored_dir.join(format!("{hex}.zst"));
                let lens_path = stored_dir.join(format!("{hex}.lens"));
                // Frames kept from an earlier build are reused only if they
                // decode to exactly these bytes: a truncated or foreign file
                // under this name is made again.
                let lens = match kept_frames(&path, &lens_path, &bytes) {
                    Some(lens) => lens,
                    None => {
                        let frames = zstd_frames(&bytes)
                            .map_err(|source| Error::Read { path: p.path.clone(), source })?;
                        let lens: Vec<usize> = frames.iter().map(Vec::len).collect();
                        write_if_changed(&path, &frames.concat())?;
                        write_if_changed(&lens_path, lens_text(&lens).as_bytes())?;
                        lens
                    }
                };
                let lens = lens_text(&lens);
                kept.push(lens_path);
                let encoding = format!(
                    "::stigmer::Encoding::Zstd {{ frame_len: {FRAME_LEN}, \
                     frames: ::std::borrow::Cow::Borrowed(&[{lens}]) }}"
                );
                (path, encoding)
            } else {
                // A copy from an earlier build is kept only if it holds
                // exactly these bytes (compared, not just measured).
                let path = stored_dir.join(&hex);
                write_if_changed(&path, &bytes)?;
                (path, "::stigmer::Encoding::Raw".to_owned())
            };
            let stored_len = fs::metadata(&stored)
                .map_err(|source| Error::Read { path: stored.clone(), source })?
                .len();
            // Payloads with the same bytes (multi-call names, links) share
            // one copy in the executable.
            let i = match placed.iter().find(|(path, _)| *path == stored).map(|(_, j)| *j) {
                Some(j) => j,
                None => {
                    let symbol = format!("{prefix}_{i}");
                    asm.push(&mut items, &symbol, &stored, stored_len)?;
                    writeln!(
                        items,
                        "    #[allow(unsafe_code)]\n    // SAFETY: the global_asm! above defines this \
                         symbol as\n    // exactly this many bytes, in a read-only section nothing \
                         writes.\n    unsafe extern \"C\" {{\n        #[link_name = {symbol:?}]\n        \
                         safe static PAYLOAD_{i}: [u8; {stored_len}];\n    }}"
                    )
                    .unwrap();
                    placed.push((stored.clone(), i));
                    kept.push(stored);
                    i
                }
            };
            let found =
                EmbeddedPayload { name: p.name.clone(), kind, size: bytes.len() as u64, sha256 };
            if asset {
                assets.push(found)
            } else {
                embedded.push(found)
            }
            writeln!(
                entries,
                "        ::stigmer::Embedded::new({:?}, ::stigmer::Kind::{kind:?}, {}, {sha256:?}, \
                 {encoding}, &PAYLOAD_{i}),",
                p.name,
                bytes.len()
            )
            .unwrap();
        }
        remove_others(&stored_dir, &kept);
        let manifest = match &self.manifest {
            Some(path) => {
                // rustc reads it (include_bytes!): a FIFO would hang the build.
                regular_file(path)?;
                format!("::std::option::Option::Some(include_bytes!({}))", literal(path)?)
            }
            None => "::std::option::Option::None".to_owned(),
        };
        let generated = format!(
            "// Generated by stigmer-build from {:?}; do not edit.\n\
             {{\n{items}    static PAYLOADS: [::stigmer::Embedded; {}] = [\n{entries}    ];\n    \
             ::stigmer::Bundle::new(&PAYLOADS, {manifest})\n}}\n",
            self.source,
            self.payloads.len() + self.assets.len(),
        );
        let path = out.join(GENERATED);
        write_if_changed(&path, generated.as_bytes())?;
        Ok(Embedded { payloads: embedded, assets, generated: path })
    }
}

/// Checks that `path` is a regular file (following symlinks) before it is
/// read: reading a FIFO would wait for a writer forever.
fn regular_file(path: &Path) -> Result<(), Error> {
    let meta =
        fs::metadata(path).map_err(|source| Error::Read { path: path.to_owned(), source })?;
    if meta.is_file() { Ok(()) } else { Err(Error::NotAFile { path: path.to_owned() }) }
}

/// A path as a Rust string literal, for `include_bytes!`.
fn literal(path: &Path) -> Result<String, Error> {
    let abs = std::path::absolute(path)
        .map_err(|source| Error::Read { path: path.to_owned(), source })?;
    match abs.to_str() {
        Some(s) => Ok(format!("{s:?}")),
        None => Err(Error::NotUtf8 { path: abs }),
    }
}

/// Tells cargo to run the build script again when `path` changes, unless
/// it is in `$OUT_DIR`: a file the build script writes is newer than its
/// last run every time, and watching it would run the script, and rebuild
/// everything that embeds it, at every build. Such a payload is made from
/// sources the build script watches itself.
///
/// A path with a line break is an error: cargo reads its instructions a
/// line at a time, so the rest of such a path would be read as another
/// instruction.
fn rerun_if_changed(path: &Path) -> Result<(), Error> {
    use std::os::unix::ffi::OsStrExt as _;
    if path.as_os_str().as_bytes().iter().any(|b| matches!(b, b'\n' | b'\r')) {
        return Err(Error::LineBreak { path: path.to_owned() });
    }
    let Some(out) = std::env::var_os("OUT_DIR") else { return Ok(()) };
    if std::path::absolute(path).is_ok_and(|p| p.starts_with(&out)) {
        return Ok(());
    }
    println!("cargo::rerun-if-changed={}", path.display());
    Ok(())
}

/// Removes the files of `dir` that are not in `keep` (frames of payloads
/// that are gone), so the folder does not grow with every edit.
fn remove_others(dir: &Path, keep: &[PathBuf]) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if !keep.contains(&e.path()) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

/// Leaves the file's timestamp alone when its content is the same, so an
/// unchanged payload set does not force a rebuild of what includes it.
///
/// Only a regular file is left alone: a symlink of the same content (to the
/// payload itself, say) is replaced, as the assembler reading it later
/// would read whatever it then points at.
fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    if is_regular(path) && fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    let write = || -> io::Result<()> {
        let tmp = path.with_extension("tmp");
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        fs::rename(&tmp, path)
    };
    write().map_err(|source| Error::Write { path: path.to_owned(), source })
}

/// Whether `path` itself (not what a symlink points at) is a regular file.
pub(crate) fn is_regular(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file())
}

/// The frame lengths as the generated code and the `.lens` file hold them.
fn lens_text(lens: &[usize]) -> String {
    lens.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")
}
