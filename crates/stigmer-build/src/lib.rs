//! The build side of a stigmer fat binary: find the payloads (and the
//! assets: the folder's files that are not executable, which services
//! read), decide their kinds, hash them, compress them, and generate the
//! table that embeds them.
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

mod asm;
mod embed;
mod error;
mod frames;
mod kind;
mod scan;
#[cfg(test)]
mod tests;

pub use embed::{Embed, Embedded, EmbeddedPayload};
pub use error::{Error, NameError};
#[cfg(feature = "compress")]
pub use frames::zstd_frames;
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
