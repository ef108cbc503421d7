//! The build side of a stigmer fat binary: find the payloads, decide their
//! kinds, hash them, compress them, and generate the table that embeds them.
//!
//! A program that carries its own executables calls this from its
//! `build.rs`, and includes the result with `stigmer::include_payloads!()`:
//!
//! ```no_run
//! // build.rs
//! fn main() {
//!     if let Err(e) = stigmer_build::Embed::folder("payloads").and_then(|e| e.write()) {
//!         panic!("{e}");
//!     }
//! }
//! ```
//!
//! ```ignore
//! // main.rs
//! static PAYLOADS: stigmer::Bundle = stigmer::include_payloads!();
//! let catalog = PAYLOADS.catalog();
//! ```
//!
//! What [`Embed::write`] does, once per build:
//! - decides each payload's [`Kind`] from its bytes (an ELF, a `#!` script,
//!   a PyInstaller one-file binary...), and hashes it with sha256: its
//!   identity, which the runtime checks every cache entry against;
//! - with [`Embed::compress`] (the `compress` feature), compresses it as
//!   independent zstd frames of [`FRAME_LEN`] bytes, decoded on every core at
//!   launch, and keeps the frames in `$OUT_DIR` under the payload's sha256,
//!   so a payload that did not change is never compressed again;
//! - keeps a copy of exactly the bytes it hashed (or their frames) in
//!   `$OUT_DIR/stigmer-payloads/`, named by sha256, reused only while it
//!   holds those bytes;
//! - writes `$OUT_DIR/stigmer_payloads.rs`: per payload, a `global_asm!`
//!   whose `.incbin` places that copy in a read-only section (checked to be
//!   exactly its length when assembled) and a static over it, an
//!   `include_bytes!` for `services.toml`, and the build-time facts beside
//!   them, so nothing is hashed or scanned when the program starts, and the
//!   runtime can copy a payload into its memfd straight from the
//!   executable's file (`sendfile`); the file is rewritten only when its
//!   content changes;
//! - tells cargo to run the build script again when a payload changes (but
//!   not for files in `$OUT_DIR`, which the build script itself makes).
//!
//! Hashing, scanning and compressing run in the build script, which cargo
//! compiles without optimisation unless told otherwise (8 s instead of under
//! one for 180 MB of payloads): for payloads of tens of megabytes, add this to
//! the workspace's `Cargo.toml` (and the same for `profile.release`):
//!
//! ```toml
//! [profile.dev.package.stigmer-build]
//! opt-level = 3
//! [profile.dev.package.sha2]
//! opt-level = 3
//! [profile.dev.package.memchr]
//! opt-level = 3
//! [profile.dev.package.zstd-sys] # with compress
//! opt-level = 3
//! ```

#![deny(missing_docs)]
// A build helper talks to cargo through stdout (`cargo::` lines).
#![allow(clippy::print_stdout)]
// The example is a whole build script, `main` included.
#![allow(clippy::needless_doctest_main)]

mod kind;
mod scan;

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use sha2::Digest as _;

pub use kind::Kind;
pub use scan::{Found, MANIFEST, Scan, check_name, scan};

/// What each zstd frame of a compressed payload decodes to (the last one,
/// less).
///
/// Payloads are compressed as independent frames so that a launch decodes
/// them on every core at once. 1 MiB, by measurement on a 60 MB Go-like
/// payload: one frame with an 8 MiB window stored 28.5% and took 99 ms to
/// decode on one core; 1 MiB frames store 32.1% and take 48 ms on two cores,
/// and a decoding thread needs only 2 MiB of buffers.
pub const FRAME_LEN: usize = 1 << 20;

/// The file [`Embed::write`] generates in `$OUT_DIR`.
pub const GENERATED: &str = "stigmer_payloads.rs";

/// Why a payload folder cannot be embedded. Each message is one line that
/// names the file and the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The payload folder cannot be read.
    #[error(
        "cannot read the payload folder {}: {source} (create it and put the executables \
         there, or set STIGMER_PAYLOAD_DIR to the folder that holds them)",
        shown(dir)
    )]
    Folder {
        /// The folder.
        dir: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The payload folder holds no executable file.
    #[error(
        "the payload folder {} holds no executable files: put the payloads there (chmod +x), \
         or unset STIGMER_PAYLOAD_DIR to embed the demo payloads",
        shown(dir)
    )]
    Empty {
        /// The folder.
        dir: PathBuf,
    },
    /// A file cannot be read.
    #[error(
        "cannot read {}: {source} (check that it exists and that the build can read it)",
        shown(path)
    )]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A generated file cannot be written.
    #[error(
        "cannot write {}: {source} (check the permissions and free space of the build's output \
         folder, or run cargo clean)",
        shown(path)
    )]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// An entry of the payload folder cannot be followed.
    #[error(
        "cannot read {} in the payload folder: {source} (a broken or looping symlink? point it \
         at the payload, or remove it)",
        shown(path)
    )]
    Entry {
        /// The entry.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A payload file's name is not UTF-8.
    #[error("payload file {} has a name that is not UTF-8: rename it", shown(path))]
    NotUtf8 {
        /// The file.
        path: PathBuf,
    },
    /// A payload's name cannot be used.
    #[error("{}: {source}", shown(path))]
    Name {
        /// The file.
        path: PathBuf,
        /// What is wrong with its name.
        #[source]
        source: NameError,
    },
    /// A payload (or manifest) path is not a regular file.
    #[error(
        "payload file {} is not a regular file (a folder, a FIFO, a device): point it at the \
         executable",
        shown(path)
    )]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// A path holds a line break, which cargo cannot be told to watch.
    #[error(
        "{} holds a line break, which cargo cannot watch (its instructions are lines): \
         rename it",
        shown(path)
    )]
    LineBreak {
        /// The path.
        path: PathBuf,
    },
    /// A payload file is empty.
    #[error("payload file {} is empty: rebuild it or remove it", shown(path))]
    EmptyPayload {
        /// The file.
        path: PathBuf,
    },
    /// Two payloads have the same name.
    #[error("two payloads are named {name:?} ({} and {}): rename one", shown(first), shown(second))]
    Duplicate {
        /// The name.
        name: String,
        /// The first file.
        first: PathBuf,
        /// The second file.
        second: PathBuf,
    },
    /// Compression was asked for without the `compress` feature.
    #[error("payloads are compressed only by stigmer-build's compress feature: enable it")]
    NoCompress,
}

/// A name that cannot name a payload (or a service).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("payload name {name:?} {problem}")]
pub struct NameError {
    name: String,
    problem: NameProblem,
}

impl NameError {
    /// The name that was refused.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// What is wrong with a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NameProblem {
    Length,
    Leading,
    Char(char),
    Reserved,
}

impl std::fmt::Display for NameProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fix = "rename it to letters, digits, '.', '_' and '-' (at most 64, not starting with '.' or '-')";
        match self {
            NameProblem::Length => write!(f, "must be 1 to 64 characters: {fix}"),
            NameProblem::Leading => write!(f, "starts with '.' or '-': {fix}"),
            NameProblem::Char(c) => write!(f, "contains {c:?}: {fix}"),
            NameProblem::Reserved => f.write_str("is reserved by stigmer: rename the file"),
        }
    }
}

/// The payloads (and optional `services.toml`) one build embeds, and how.
#[derive(Debug, Default)]
pub struct Embed {
    payloads: Vec<Found>,
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
    /// The generated file.
    pub generated: PathBuf,
}

/// One payload, as [`Embed::write`] found it.
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

    /// Every payload of `dir` (its executable files) and its
    /// `services.toml`, as [`scan`] finds them. Files that are skipped
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
        let path = path.into();
        if let Err(source) = check_name(name) {
            return Err(Error::Name { path, source });
        }
        if let Some(first) = self.payloads.iter().find(|p| p.name == name) {
            return Err(Error::Duplicate {
                name: name.to_owned(),
                first: first.path.clone(),
                second: path,
            });
        }
        rerun_if_changed(&path)?;
        self.payloads.push(Found { name: name.to_owned(), path });
        self.payloads.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(self)
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
        let mut embedded = Vec::new();
        for (i, p) in self.payloads.iter().enumerate() {
            regular_file(&p.path)?;
            let bytes =
                fs::read(&p.path).map_err(|source| Error::Read { path: p.path.clone(), source })?;
            if bytes.is_empty() {
                return Err(Error::EmptyPayload { path: p.path.clone() });
            }
            let kind = Kind::detect(&bytes);
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
            embedded.push(EmbeddedPayload {
                name: p.name.clone(),
                kind,
                size: bytes.len() as u64,
                sha256,
            });
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
            self.payloads.len(),
        );
        let path = out.join(GENERATED);
        write_if_changed(&path, generated.as_bytes())?;
        Ok(Embedded { payloads: embedded, generated: path })
    }
}

/// How the generated `global_asm!` places a payload's bytes in the
/// executable, by object format.
///
/// The bytes go in with the assembler's `.incbin`, not `include_bytes!`:
/// rustc keeps an `include_bytes!` static's bytes in the crate's metadata
/// and, for LTO, in its bitcode too (a 180 MB payload set made a 357 MB
/// rlib and a 178 MB rmeta that every build re-read), while `.incbin`
/// leaves them to the assembler, which reads the file once. Each payload
/// starts on a 4 KiB boundary, in a read-only section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Asm {
    /// ELF (Linux and the BSDs).
    Elf,
    /// Mach-O (macOS): symbols take a leading `_`, and read-only data
    /// lives in `__TEXT,__const`.
    MachO,
}

impl Asm {
    /// The format of the target a build script builds for
    /// (`CARGO_CFG_TARGET_VENDOR`), else of this host.
    fn for_target() -> Asm {
        let apple = match std::env::var("CARGO_CFG_TARGET_VENDOR") {
            Ok(vendor) => vendor == "apple",
            Err(_) => cfg!(target_vendor = "apple"),
        };
        if apple { Asm::MachO } else { Asm::Elf }
    }

    /// The assembly that defines `symbol` as the `len` bytes of the file at
    /// `path`, one line per item.
    fn lines(self, symbol: &str, path: &Path, len: u64) -> Result<Vec<String>, Error> {
        let path = std::path::absolute(path)
            .map_err(|source| Error::Read { path: path.to_owned(), source })?;
        let file = asm_string(&path);
        let (section, sym, visibility) = match self {
            Asm::Elf => {
                (".pushsection .rodata.stigmer_payloads,\"a\"", symbol.to_owned(), ".hidden")
            }
            Asm::MachO => (".pushsection __TEXT,__const", format!("_{symbol}"), ".private_extern"),
        };
        Ok(vec![
            section.to_owned(),
            ".p2align 12".to_owned(),
            format!(".globl {sym}"),
            format!("{visibility} {sym}"),
            format!("{sym}:"),
            format!(".incbin \"{file}\", 0, {len}"),
            // LLVM's assembler (rustc's) takes fewer bytes, silently, from a
            // file shorter than the count: the static would then run past
            // them. Whatever was read must be exactly `len` bytes.
            format!(".ifne . - {sym} - {len}"),
            format!(
                ".error \"stigmer-build: {file} is not {len} bytes long: it changed after the \
                 build script wrote it; run cargo clean and build again\""
            ),
            ".endif".to_owned(),
            ".popsection".to_owned(),
        ])
    }

    /// Appends a module whose `global_asm!` defines `symbol` as the `len`
    /// bytes of the file at `path`.
    fn push(self, out: &mut String, symbol: &str, path: &Path, len: u64) -> Result<(), Error> {
        // Each line is a format string of global_asm!, as a Rust literal.
        let lines: Vec<String> = self
            .lines(symbol, path, len)?
            .iter()
            .map(|l| format!("{:?}", l.replace('{', "{{").replace('}', "}}")))
            .collect();
        writeln!(
            out,
            "    #[allow(unsafe_code)]\n    mod {symbol} {{\n        \
             ::core::arch::global_asm!({});\n    }}",
            lines.join(", ")
        )
        .unwrap();
        Ok(())
    }
}

/// `path` as the inside of an assembler string: every byte as it is but
/// for `"` and `\\`, escaped, and what is not printable ASCII, in octal. Any
/// path, UTF-8 or not, quotes, spaces, `;` and `#` included, names exactly
/// its file.
fn asm_string(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt as _;
    let mut s = String::new();
    for &b in path.as_os_str().as_bytes() {
        match b {
            b'"' | b'\\' => {
                s.push('\\');
                s.push(b as char);
            }
            0x20..=0x7e => s.push(b as char),
            _ => write!(s, "\\{b:03o}").unwrap(),
        }
    }
    s
}

/// A path for a message: control characters (a newline, a terminal
/// escape) escaped, so that a message stays one line, and a cargo warning
/// cannot start a line that cargo would take for an instruction.
pub(crate) fn shown(path: &Path) -> String {
    path.display()
        .to_string()
        .chars()
        .map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() })
        .collect()
}

/// A prefix for the payload symbols of the package being built, unique in
/// the program that links it.
fn symbol_prefix() -> String {
    let name = std::env::var("CARGO_PKG_NAME").unwrap_or_default();
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let clean: String = format!("{name}_{version}")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("__stigmer_payload_{clean}")
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
fn is_regular(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file())
}

/// The frame lengths as the generated code and the `.lens` file hold them.
fn lens_text(lens: &[usize]) -> String {
    lens.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")
}

/// The frame lengths of the frames an earlier build kept at `zst` (and
/// `lens`), if they are the frames of `bytes`: as many as `bytes` has
/// [`FRAME_LEN`] chunks, adding up to the file, each decoding to its chunk.
#[cfg(feature = "compress")]
fn kept_frames(zst: &Path, lens: &Path, bytes: &[u8]) -> Option<Vec<usize>> {
    if !is_regular(zst) || !is_regular(lens) {
        return None;
    }
    let lens: Vec<usize> = fs::read_to_string(lens)
        .ok()?
        .split(", ")
        .map(|n| n.parse().ok().filter(|&n| n > 0))
        .collect::<Option<_>>()?;
    let frames = fs::read(zst).ok()?;
    let chunks = bytes.chunks(FRAME_LEN);
    if lens.len() != chunks.len() || lens.iter().sum::<usize>() != frames.len() {
        return None;
    }
    let mut at = 0;
    for (len, chunk) in lens.iter().zip(chunks) {
        let decoded = ::zstd::bulk::decompress(&frames[at..at + len], FRAME_LEN).ok()?;
        if decoded != chunk {
            return None;
        }
        at += len;
    }
    Some(lens)
}

#[cfg(not(feature = "compress"))]
fn kept_frames(_: &Path, _: &Path, _: &[u8]) -> Option<Vec<usize>> {
    None
}

/// Compresses `bytes` as independent frames of [`FRAME_LEN`] bytes (level
/// 19, each with its content size and checksum), on every core.
#[cfg(feature = "compress")]
pub fn zstd_frames(bytes: &[u8]) -> io::Result<Vec<Vec<u8>>> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let frame = |chunk: &[u8]| {
        let mut compressor = ::zstd::bulk::Compressor::new(19)?;
        compressor.set_parameter(::zstd::stream::raw::CParameter::ChecksumFlag(true))?;
        compressor.compress(chunk)
    };
    let chunks: Vec<&[u8]> = bytes.chunks(FRAME_LEN).collect();
    let frames = Mutex::new(vec![Vec::new(); chunks.len()]);
    let next = AtomicUsize::new(0);
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(chunks.len());
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(chunk) = chunks.get(i) else {
                            return Ok::<(), io::Error>(());
                        };
                        let compressed = frame(chunk)?;
                        frames.lock().unwrap_or_else(|e| e.into_inner())[i] = compressed;
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
    })?;
    Ok(frames.into_inner().unwrap_or_else(|e| e.into_inner()))
}

#[cfg(not(feature = "compress"))]
fn zstd_frames(_: &[u8]) -> io::Result<Vec<Vec<u8>>> {
    Err(io::Error::new(io::ErrorKind::Unsupported, Error::NoCompress))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn generates_one_entry_per_payload_and_the_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("tool");
        fs::write(&exe, b"#!/bin/sh\necho hi\n").unwrap();
        fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(dir.path().join(MANIFEST), "").unwrap();
        let out = tempfile::tempdir().unwrap();
        let embedded = Embed::folder(dir.path()).unwrap().write_to(out.path()).unwrap();
        assert_eq!(embedded.payloads.len(), 1);
        assert_eq!(embedded.payloads[0].kind, Kind::Script);
        assert_eq!(embedded.payloads[0].size, 18);
        let code = fs::read_to_string(&embedded.generated).unwrap();
        assert!(code.contains("\"tool\", ::stigmer::Kind::Script, 18,"), "{code}");
        assert!(code.contains("Some(include_bytes!("), "{code}");
        let before = fs::metadata(&embedded.generated).unwrap().modified().unwrap();
        Embed::folder(dir.path()).unwrap().write_to(out.path()).unwrap();
        let after = fs::metadata(&embedded.generated).unwrap().modified().unwrap();
        assert_eq!(before, after, "an unchanged table is not rewritten");
    }

    #[test]
    fn empty_folders_and_duplicates_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let err = Embed::folder(dir.path()).unwrap_err();
        assert!(matches!(err, Error::Empty { .. }), "{err}");
        let err = Embed::new()
            .payload("a", "/bin/true")
            .unwrap()
            .payload("a", "/bin/false")
            .unwrap_err()
            .to_string();
        assert!(err.contains("rename one"), "{err}");
        let err = Embed::new().payload("a b", "/bin/true").unwrap_err().to_string();
        assert!(err.contains("rename it"), "{err}");
    }

    /// The payload symbols assemble for every object format stigmer ships
    /// (the macOS ones cannot be linked here, but LLVM's assembler checks
    /// them), and each holds exactly the payload's bytes.
    #[test]
    #[allow(clippy::print_stderr)] // a skipped test says why
    fn payload_bytes_assemble_for_elf_and_mach_o() {
        let mc = std::process::Command::new("llvm-mc").arg("--version").output();
        if !mc.is_ok_and(|o| o.status.success()) {
            let no_skip = std::env::var_os("STIGMER_TEST_NO_SKIP").is_some_and(|v| v == "1");
            assert!(!no_skip, "llvm-mc is not installed (Debian: apt install llvm)");
            eprintln!("skipped: llvm-mc is not installed");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("payload");
        let bytes: Vec<u8> = (0..=255).cycle().take(5000).collect();
        fs::write(&file, &bytes).unwrap();
        let cases = [
            (Asm::Elf, "x86_64-linux-gnu", "p_0"),
            (Asm::Elf, "aarch64-linux-gnu", "p_0"),
            (Asm::MachO, "arm64-apple-macos", "_p_0"),
            (Asm::MachO, "x86_64-apple-macos", "_p_0"),
        ];
        for (asm, triple, symbol) in cases {
            let source = dir.path().join(format!("{triple}.s"));
            let object = dir.path().join(format!("{triple}.o"));
            let mut text = asm.lines("p_0", &file, 4000).unwrap().join("\n");
            text.push('\n');
            fs::write(&source, text).unwrap();
            let o = std::process::Command::new("llvm-mc")
                .args([&format!("-triple={triple}"), "-filetype=obj", "-o"])
                .arg(&object)
                .arg(&source)
                .output()
                .unwrap();
            assert!(o.status.success(), "{triple}: {}", String::from_utf8_lossy(&o.stderr));
            let o = std::process::Command::new("llvm-objdump")
                .args(["-t", "-h"])
                .arg(&object)
                .output()
                .unwrap();
            let listing = String::from_utf8_lossy(&o.stdout);
            assert!(
                listing.lines().any(|l| l.ends_with(&format!(" {symbol}"))),
                "{triple}: {listing}"
            );
            // The section is 4000 bytes of the file (a skip and a count),
            // found in the object as they are.
            let object = fs::read(&object).unwrap();
            assert!(
                object.windows(4000).any(|w| w == &bytes[..4000]),
                "{triple}: the bytes are not in the object"
            );
            // A file shorter than the count (changed after the build script
            // measured it) is an error, not a shorter section.
            let mut text = asm.lines("p_0", &file, 6000).unwrap().join("\n");
            text.push('\n');
            fs::write(&source, text).unwrap();
            let o = std::process::Command::new("llvm-mc")
                .args([&format!("-triple={triple}"), "-filetype=obj", "-o"])
                .arg(dir.path().join("short.o"))
                .arg(&source)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(!o.status.success(), "{triple}: a short file assembled");
            assert!(err.contains("is not 6000 bytes long"), "{triple}: {err}");
        }
    }

    /// The generated `global_asm!` names its file exactly, whatever the
    /// path holds (quotes, braces, backslashes, spaces, `;`, `#`, a tab, a
    /// newline, bytes that are not UTF-8): rustc assembles it and the object
    /// holds the payload's bytes.
    #[test]
    fn hostile_paths_are_embedded_exactly() {
        use std::os::unix::ffi::OsStrExt as _;
        let dir = tempfile::tempdir().unwrap();
        let name = std::ffi::OsStr::from_bytes(b"a \"b\" {c} \\d;e #f\tg\nh \xff}{");
        let odd = dir.path().join(name);
        fs::create_dir(&odd).unwrap();
        let file = odd.join("payload");
        let bytes: Vec<u8> = (0..5000u32).map(|i| (i * 31 % 253) as u8).collect();
        fs::write(&file, &bytes).unwrap();
        let mut code = String::new();
        Asm::for_target().push(&mut code, "p_0", &file, 5000).unwrap();
        let source = dir.path().join("asm.rs");
        fs::write(&source, &code).unwrap();
        let object = dir.path().join("asm.o");
        let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
        let o = std::process::Command::new(rustc)
            .args(["--edition=2021", "--crate-type=lib", "--crate-name=asm", "--emit=obj", "-o"])
            .arg(&object)
            .arg(&source)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}\n{code}", String::from_utf8_lossy(&o.stderr));
        let object = fs::read(&object).unwrap();
        assert!(object.windows(5000).any(|w| w == bytes), "the bytes are not in the object");
    }

    /// A copy under a sha256 name is trusted only when it holds exactly
    /// the bytes that were hashed: one of the right length but other bytes
    /// (a foreign file, a crash that left zeros) is written again.
    #[test]
    fn a_stored_copy_of_the_right_length_but_other_bytes_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("tool");
        fs::write(&exe, b"#!/bin/sh\necho hi\n").unwrap();
        let out = tempfile::tempdir().unwrap();
        let embed = || Embed::new().payload("tool", &exe).unwrap().write_to(out.path()).unwrap();
        embed();
        let stored = fs::read_dir(out.path().join("stigmer-payloads")).unwrap();
        let stored: Vec<_> = stored.map(|e| e.unwrap().path()).collect();
        assert_eq!(stored.len(), 1, "{stored:?}");
        fs::write(&stored[0], [0u8; 18]).unwrap();
        embed();
        assert_eq!(fs::read(&stored[0]).unwrap(), fs::read(&exe).unwrap());
    }

    #[cfg(feature = "compress")]
    #[test]
    fn frames_are_kept_by_sha256_and_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("big");
        fs::write(&exe, vec![7u8; FRAME_LEN + 10]).unwrap();
        let out = tempfile::tempdir().unwrap();
        let e = Embed::new().payload("big", &exe).unwrap().compress(true);
        let code = fs::read_to_string(e.write_to(out.path()).unwrap().generated).unwrap();
        assert!(code.contains("Encoding::Zstd { frame_len: 1048576"), "{code}");
        let frames = out.path().join("stigmer-payloads");
        assert_eq!(fs::read_dir(&frames).unwrap().count(), 2);
        fs::write(&exe, vec![8u8; 100]).unwrap();
        Embed::new().payload("big", &exe).unwrap().compress(true).write_to(out.path()).unwrap();
        assert_eq!(fs::read_dir(&frames).unwrap().count(), 2, "the old frames are gone");
    }

    /// Frames and their lengths are reused only when they decode to exactly
    /// the hashed bytes: a truncated or foreign `.lens` or `.zst` is made
    /// again, and no text of a `.lens` file reaches the generated code.
    #[cfg(feature = "compress")]
    #[test]
    fn wrong_or_truncated_frames_are_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("big");
        let bytes: Vec<u8> = (0..FRAME_LEN + 1000).map(|i| (i * 7 % 251) as u8).collect();
        fs::write(&exe, &bytes).unwrap();
        let out = tempfile::tempdir().unwrap();
        let embed = || {
            let e = Embed::new().payload("big", &exe).unwrap().compress(true);
            fs::read_to_string(e.write_to(out.path()).unwrap().generated).unwrap()
        };
        let good = embed();
        let stored = out.path().join("stigmer-payloads");
        let find = |ext: &str| {
            fs::read_dir(&stored)
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| p.extension().is_some_and(|x| x == ext))
                .unwrap()
        };
        let (zst, lens) = (find("zst"), find("lens"));
        let (good_zst, good_lens) = (fs::read(&zst).unwrap(), fs::read_to_string(&lens).unwrap());
        let first: usize = good_lens.split(", ").next().unwrap().parse().unwrap();
        let damage: [(&Path, Vec<u8>); 4] = [
            // A .lens cut short: one frame of two.
            (&lens, good_lens.split(", ").next().unwrap().as_bytes().to_vec()),
            // Lengths that add up but cut the frames in the wrong place.
            (&lens, format!("{}, {}", first - 1, good_zst.len() - first + 1).into_bytes()),
            // Text that is not lengths at all.
            (&lens, b"1]), compile_error!(\"injected\"), (&[1".to_vec()),
            // Frames of the right length and other bytes.
            (&zst, vec![0; good_zst.len()]),
        ];
        for (file, bad) in damage {
            fs::write(file, &bad).unwrap();
            assert_eq!(embed(), good, "{}", String::from_utf8_lossy(&bad));
            assert_eq!(fs::read(&zst).unwrap(), good_zst);
            assert_eq!(fs::read_to_string(&lens).unwrap(), good_lens);
        }
    }

    /// A payload path that is not a regular file (a FIFO, which a read
    /// would wait on forever; a folder) is an error that says so, at once.
    #[test]
    fn a_fifo_or_a_folder_given_as_a_payload_is_refused_not_waited_on() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let o = std::process::Command::new("mkfifo").arg(&fifo).output().unwrap();
        assert!(o.status.success());
        for path in [fifo, dir.path().to_owned()] {
            let out = tempfile::tempdir().unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            let p = path.clone();
            let out_path = out.path().to_owned();
            std::thread::spawn(move || {
                let e = Embed::new().payload("x", p).unwrap().write_to(&out_path);
                let _ = tx.send(e.map(|_| ()).map_err(|e| e.to_string()));
            });
            let err = rx
                .recv_timeout(std::time::Duration::from_secs(5))
                .unwrap_or_else(|_| panic!("{} was waited on", path.display()))
                .unwrap_err();
            assert!(err.contains("not a regular file") && err.contains("point"), "{err}");
        }
    }

    /// A folder, payload or manifest path with a line break is refused:
    /// printed in a cargo::rerun-if-changed line, the rest of it would be
    /// an instruction of its own.
    #[test]
    fn paths_with_line_breaks_are_refused_not_printed() {
        let dir = tempfile::tempdir().unwrap();
        let odd = dir.path().join("p\ncargo::rustc-cfg=injected");
        fs::create_dir(&odd).unwrap();
        let exe = odd.join("tool");
        fs::write(&exe, b"#!/bin/sh\n").unwrap();
        fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
        let err = Embed::folder(&odd).unwrap_err().to_string();
        assert!(err.contains("line break") && !err.contains('\n'), "{err}");
        let err = Embed::new().payload("tool", &exe).unwrap_err().to_string();
        assert!(err.contains("line break"), "{err}");
        let out = tempfile::tempdir().unwrap();
        let e = Embed::new().payload("true", "/bin/true").unwrap().manifest(odd.join(MANIFEST));
        let err = e.write_to(out.path()).unwrap_err().to_string();
        assert!(err.contains("line break"), "{err}");
    }

    /// Errors reading a payload or writing the output name the file and
    /// what to check.
    #[test]
    fn read_and_write_errors_name_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let missing = dir.path().join("gone");
        let e = Embed::new().payload("gone", &missing).unwrap();
        let err = e.write_to(out.path()).unwrap_err().to_string();
        assert!(err.contains("gone") && err.contains("check that it exists"), "{err}");
        let not_a_folder = dir.path().join("out");
        fs::write(&not_a_folder, "").unwrap();
        let e = Embed::new().payload("true", "/bin/true").unwrap();
        let err = e.write_to(&not_a_folder).unwrap_err().to_string();
        assert!(err.contains("stigmer-payloads") && err.contains("free space"), "{err}");
    }

    /// Payloads with the same bytes are one copy in the executable, each
    /// name pointing at it.
    #[test]
    fn payloads_with_the_same_bytes_share_one_copy() {
        let out = tempfile::tempdir().unwrap();
        let e = Embed::new().payload("a", "/bin/true").unwrap().payload("b", "/bin/true").unwrap();
        let embedded = e.write_to(out.path()).unwrap();
        assert_eq!(embedded.payloads[0].sha256, embedded.payloads[1].sha256);
        let code = fs::read_to_string(&embedded.generated).unwrap();
        assert_eq!(code.matches(".incbin").count(), 1, "{code}");
        assert_eq!(code.matches("&PAYLOAD_0)").count(), 2, "{code}");
    }

    /// A symlink under a sha256 name, even to the very bytes, is replaced
    /// by a copy: the assembler reads the file later, and would read
    /// whatever the link then points at.
    #[test]
    fn a_stored_symlink_is_replaced_by_a_copy() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("tool");
        fs::write(&exe, b"#!/bin/sh\necho hi\n").unwrap();
        let out = tempfile::tempdir().unwrap();
        let embed = || Embed::new().payload("tool", &exe).unwrap().write_to(out.path()).unwrap();
        embed();
        let stored = fs::read_dir(out.path().join("stigmer-payloads")).unwrap();
        let stored: Vec<_> = stored.map(|e| e.unwrap().path()).collect();
        fs::remove_file(&stored[0]).unwrap();
        std::os::unix::fs::symlink(&exe, &stored[0]).unwrap();
        embed();
        assert!(fs::symlink_metadata(&stored[0]).unwrap().file_type().is_file());
        assert_eq!(fs::read(&stored[0]).unwrap(), fs::read(&exe).unwrap());
    }
}
