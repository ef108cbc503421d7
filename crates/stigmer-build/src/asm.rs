//! The assembly that places each payload's bytes in the executable.

use std::fmt::Write as _;
use std::path::Path;

use crate::Error;

/// How the generated `global_asm!` places a payload's bytes in the
/// executable, by object format.
///
/// The bytes go in with the assembler's `.incbin`, not `include_bytes!`:
/// rustc keeps an `include_bytes!` static's bytes in the crate's metadata
/// and, for LTO, in its bitcode too (a 180 MB payload set made a 357 MB
/// rlib and a 178 MB rmeta that every build re-read), while `.incbin`
/// leaves them to the assembler, which reads the file once. Each payload
/// starts on a 64 KiB boundary (ELF; 4 KiB in Mach-O, where nothing maps
/// payloads), in a read-only section: the mapped backend maps a payload's
/// segments from stigmer's file at the payload's offset, which must be a
/// multiple of the page size of any kernel it runs on (4, 16 or 64 KiB).
/// In the file the offset is the address modulo the linker's
/// `max-page-size` (4 KiB on x86_64, 64 KiB on aarch64: each at least the
/// page size there). It costs up to 64 KiB of padding per payload, 32 KiB
/// on average.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Asm {
    /// ELF (Linux and the BSDs).
    Elf,
    /// Mach-O (macOS): symbols take a leading `_`, and read-only data
    /// lives in `__TEXT,__const`.
    MachO,
}

impl Asm {
    /// The format of the target a build script builds for
    /// (`CARGO_CFG_TARGET_VENDOR`), else of this host.
    pub(crate) fn for_target() -> Asm {
        let apple = match std::env::var("CARGO_CFG_TARGET_VENDOR") {
            Ok(vendor) => vendor == "apple",
            Err(_) => cfg!(target_vendor = "apple"),
        };
        if apple { Asm::MachO } else { Asm::Elf }
    }

    /// The assembly that defines `symbol` as the `len` bytes of the file at
    /// `path`, one line per item.
    pub(crate) fn lines(self, symbol: &str, path: &Path, len: u64) -> Result<Vec<String>, Error> {
        let path = std::path::absolute(path)
            .map_err(|source| Error::Read { path: path.to_owned(), source })?;
        let file = asm_string(&path);
        let (section, sym, visibility, align) = match self {
            Asm::Elf => (
                ".pushsection .rodata.stigmer_payloads,\"a\"",
                symbol.to_owned(),
                ".hidden",
                ".p2align 16",
            ),
            Asm::MachO => (
                ".pushsection __TEXT,__const",
                format!("_{symbol}"),
                ".private_extern",
                ".p2align 12",
            ),
        };
        Ok(vec![
            section.to_owned(),
            align.to_owned(),
            format!(".globl {sym}"),
            format!("{visibility} {sym}"),
            format!("{sym}:"),
            format!(".incbin \"{file}\", 0, {len}"),
            // LLVM's assembler (rustc's) takes fewer bytes, silently, from a
            // file shorter than the count: the section is then padded to
            // exactly `len` bytes, so the static over it never runs past
            // them. (An `.if` on `. - sym` cannot check it: when LTO reads
            // the module's symbols, that is not yet a number.) The build
            // script wrote and checked the file; only someone rewriting
            // `OUT_DIR` during the build could shorten it.
            format!(".org {sym} + {len}"),
            ".popsection".to_owned(),
        ])
    }

    /// Appends a module whose `global_asm!` defines `symbol` as the `len`
    /// bytes of the file at `path`.
    pub(crate) fn push(
        self,
        out: &mut String,
        symbol: &str,
        path: &Path,
        len: u64,
    ) -> Result<(), Error> {
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

/// A prefix for the payload symbols of the package being built, unique in
/// the program that links it.
pub(crate) fn symbol_prefix() -> String {
    let name = std::env::var("CARGO_PKG_NAME").unwrap_or_default();
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let clean: String = format!("{name}_{version}")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("__stigmer_payload_{clean}")
}
