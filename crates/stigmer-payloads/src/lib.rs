//! The payloads the `stigmer` binary carries: the one place that embeds
//! them, apart from the command's code so that editing the command does not
//! embed them again.
//!
//! `build.rs` finds them (`platform/<target-triple>/`, `STIGMER_PAYLOAD_DIR`
//! or the demo set) and `stigmer-build` writes their table; the bytes are
//! in the binary (the assembler's `.incbin`), so debug and test builds embed
//! them too: payloads are never read from disk at run time.

use stigmer::{Bundle, Catalog};

/// The payloads and the `services.toml` this build embeds.
pub static BUNDLE: Bundle = stigmer::include_payloads!();

/// The target triple this build is for.
pub const TARGET: &str = env!("STIGMER_TARGET");

/// The catalogue of embedded payloads.
pub fn catalog() -> Catalog {
    BUNDLE.catalog()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the table says of each payload and asset (its sha256 and size)
    /// is true of the bytes in the binary, decompressed where they are
    /// compressed.
    #[test]
    fn build_time_hashes_match_the_embedded_bytes() {
        use std::io::Read as _;
        let catalog = catalog();
        for p in catalog.payloads().iter().chain(catalog.assets()) {
            let mut bytes = Vec::new();
            p.decode(p.data()).unwrap().read_to_end(&mut bytes).unwrap();
            assert_eq!(stigmer::Digest::of(&bytes), p.sha256(), "{}", p.name());
            assert_eq!(bytes.len() as u64, p.len(), "{}", p.name());
            if *p.encoding() == stigmer::Encoding::Raw {
                assert_eq!(p.data(), &bytes[..], "{}", p.name());
            }
        }
        assert!(!catalog.payloads().is_empty());
    }
}
