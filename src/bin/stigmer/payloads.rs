//! The payloads this build carries: the one place that embeds them.
//!
//! `build.rs` stages the payload folder in `$OUT_DIR/payloads/` and writes
//! each payload's kind, size and sha256 to `$OUT_DIR/payloads.rs`. rust-embed's
//! `debug-embed` makes debug and test builds embed too: payloads are never
//! read from disk at run time.

use stigmer::Catalog;

include!(concat!(env!("OUT_DIR"), "/payloads.rs"));

#[derive(rust_embed::Embed)]
#[folder = "$STIGMER_EMBED_DIR"]
struct Payloads;

/// The catalogue of embedded payloads.
pub(crate) fn catalog() -> Catalog {
    Catalog::from_embed::<Payloads>(PAYLOADS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_time_hashes_match_rust_embed() {
        for e in PAYLOADS {
            let file = <Payloads as rust_embed::RustEmbed>::get(e.name).unwrap();
            if e.encoding == stigmer::Encoding::Raw {
                assert_eq!(file.metadata.sha256_hash(), e.sha256, "{}", e.name);
                assert_eq!(file.data.len() as u64, e.size);
            }
        }
        assert_eq!(catalog().payloads().len(), PAYLOADS.len());
    }
}
