//! What kind of executable a payload is, decided from its bytes (or, for
//! an asset, from its mode: not executable).
//!
//! The kind decides how a payload can be launched: an ELF runs from a sealed
//! memfd, a `#!` script needs its memfd to stay open across exec for the
//! interpreter, and a PyInstaller one-file binary needs a real path and an
//! exec-capable `TMPDIR`, so it always goes through the cache.
//!
//! Kinds are decided once, at build time, by [`Kind::detect`]; the runtime
//! library re-exports this type and reads the kind from the build's table.

use std::fmt;

/// The kind of executable a payload is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Kind {
    /// An ELF executable (Linux).
    Elf,
    /// A Mach-O executable, thin or universal (macOS).
    MachO,
    /// A script starting with `#!`, run by the interpreter it names.
    Script,
    /// A PyInstaller one-file executable: it reopens its own file by path
    /// and unpacks itself into `TMPDIR`.
    PyInstaller,
    /// Anything else; the kernel decides whether it can run.
    Other,
    /// Not an executable: a file shipped beside the payloads for them to
    /// read (a config file), never run. The build decides this from the
    /// file's mode (not executable), never [`Kind::detect`].
    Asset,
}

/// The magic that starts PyInstaller's archive cookie, which its bootloader
/// looks for at the end of its own file.
const PYINSTALLER_MAGIC: &[u8; 8] = b"MEI\x0c\x0b\x0a\x0b\x0e";

/// The size of the cookie: magic, archive length, table-of-contents offset
/// and length, Python version (four big-endian `u32`s), then a 64-byte
/// library name.
const PYINSTALLER_COOKIE_LEN: usize = 8 + 4 * 4 + 64;

impl Kind {
    /// Decides the kind of a whole executable file.
    ///
    /// This scans the file's tail for PyInstaller's cookie, so it reads up to
    /// the whole file: call it at build time, not on the launch path.
    pub fn detect(bytes: &[u8]) -> Kind {
        if bytes.starts_with(b"#!") {
            return Kind::Script;
        }
        if is_pyinstaller(bytes) {
            return Kind::PyInstaller;
        }
        if bytes.starts_with(b"\x7fELF") {
            return Kind::Elf;
        }
        const MACHO_MAGICS: [[u8; 4]; 5] = [
            [0xfe, 0xed, 0xfa, 0xce],
            [0xfe, 0xed, 0xfa, 0xcf],
            [0xce, 0xfa, 0xed, 0xfe],
            [0xcf, 0xfa, 0xed, 0xfe],
            [0xca, 0xfe, 0xba, 0xbe],
        ];
        if MACHO_MAGICS.iter().any(|m| bytes.starts_with(m)) {
            return Kind::MachO;
        }
        Kind::Other
    }

    /// The stable lower-case name used in `stigmer list` and its JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Elf => "elf",
            Kind::MachO => "mach-o",
            Kind::Script => "script",
            Kind::PyInstaller => "pyinstaller",
            Kind::Other => "other",
            Kind::Asset => "asset",
        }
    }

    /// The inverse of [`Kind::as_str`].
    pub fn from_name(name: &str) -> Option<Kind> {
        [Kind::Elf, Kind::MachO, Kind::Script, Kind::PyInstaller, Kind::Other, Kind::Asset]
            .into_iter()
            .find(|k| k.as_str() == name)
    }

    /// Whether the payload must run from a real file path (the cache), on
    /// every platform.
    pub fn needs_real_path(self) -> bool {
        self == Kind::PyInstaller
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether `bytes` ends with a PyInstaller archive, found the way its
/// bootloader finds it: the last occurrence of the cookie magic whose
/// archive length fits inside the file.
fn is_pyinstaller(bytes: &[u8]) -> bool {
    let mut end = bytes.len();
    while let Some(pos) = rfind(&bytes[..end], PYINSTALLER_MAGIC) {
        let cookie = &bytes[pos..];
        if cookie.len() >= PYINSTALLER_COOKIE_LEN {
            let field = |i: usize| {
                let at = 8 + 4 * i;
                u32::from_be_bytes(cookie[at..at + 4].try_into().unwrap()) as usize
            };
            let (archive_len, toc_offset, toc_len) = (field(0), field(1), field(2));
            let cookie_end = pos + PYINSTALLER_COOKIE_LEN;
            if archive_len >= PYINSTALLER_COOKIE_LEN
                && archive_len <= cookie_end
                && toc_offset.checked_add(toc_len).is_some_and(|e| e <= archive_len)
            {
                return true;
            }
        }
        end = pos + PYINSTALLER_MAGIC.len() - 1;
    }
    false
}

fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::rfind(haystack, needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cookie(archive_len: u32, toc_offset: u32, toc_len: u32) -> Vec<u8> {
        let mut c = PYINSTALLER_MAGIC.to_vec();
        for v in [archive_len, toc_offset, toc_len, 312] {
            c.extend_from_slice(&v.to_be_bytes());
        }
        c.extend_from_slice(&[0; 64]);
        c
    }

    #[test]
    fn magic_numbers() {
        assert_eq!(Kind::detect(b"\x7fELF\x02\x01\x01"), Kind::Elf);
        assert_eq!(Kind::detect(b"#!/bin/sh\necho hi\n"), Kind::Script);
        assert_eq!(Kind::detect(&[0xcf, 0xfa, 0xed, 0xfe, 7]), Kind::MachO);
        assert_eq!(Kind::detect(&[0xca, 0xfe, 0xba, 0xbe, 0]), Kind::MachO);
        assert_eq!(Kind::detect(b"MZ\x90\x00"), Kind::Other);
        assert_eq!(Kind::detect(b""), Kind::Other);
    }

    #[test]
    fn pyinstaller_cookie_at_the_end() {
        let mut file = b"\x7fELF".to_vec();
        file.extend_from_slice(&[0; 1000]);
        let archive_len = 200 + PYINSTALLER_COOKIE_LEN as u32;
        file.extend_from_slice(&[1; 200]);
        file.extend_from_slice(&cookie(archive_len, 100, 50));
        assert_eq!(Kind::detect(&file), Kind::PyInstaller);
    }

    #[test]
    fn bare_magic_is_not_a_cookie() {
        // The bootloader's own code holds the magic as a constant; without a
        // plausible archive behind it, the file is a plain ELF.
        let mut file = b"\x7fELF".to_vec();
        file.extend_from_slice(PYINSTALLER_MAGIC);
        file.extend_from_slice(&[0xff; 200]);
        assert_eq!(Kind::detect(&file), Kind::Elf);
        let mut file = b"\x7fELF".to_vec();
        file.extend_from_slice(&cookie(u32::MAX, 0, 0));
        assert_eq!(Kind::detect(&file), Kind::Elf);
    }

    #[test]
    fn names_round_trip() {
        for k in [Kind::Elf, Kind::MachO, Kind::Script, Kind::PyInstaller, Kind::Other, Kind::Asset]
        {
            assert_eq!(Kind::from_name(k.as_str()), Some(k));
        }
    }
}
