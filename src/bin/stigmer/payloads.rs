//! The payloads this build carries: the one place that embeds them.
//!
//! `build.rs` stages the payload folder in `$OUT_DIR/payloads/` and writes
//! the kind of each payload to `$OUT_DIR/payloads.rs`. rust-embed's
//! `debug-embed` makes debug and test builds embed too: payloads are never
//! read from disk at run time.

use stigmer::Catalog;

include!(concat!(env!("OUT_DIR"), "/payloads.rs"));

#[derive(rust_embed::Embed)]
#[folder = "$STIGMER_EMBED_DIR"]
struct Payloads;

/// The catalogue of embedded payloads.
pub(crate) fn catalog() -> Catalog {
    Catalog::from_embed::<Payloads>(KINDS)
}
