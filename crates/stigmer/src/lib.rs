//! stigmer carries executables ("payloads") inside one binary and runs them
//! without extracting them.
//!
//! On Linux a payload runs from a sealed memfd: nothing is written to any
//! file system, so it works on a read-only root and with a `noexec` `/tmp`.
//! On macOS, and on Linux where the kernel refuses exec from memory, it runs
//! from a private, content-addressed cache under `~/.stigmer/bin/`, verified
//! against the build-time sha256 before every launch.
//!
//! The library is payload-neutral: a program embeds its own payloads with
//! the `stigmer-build` helper in its `build.rs` and includes the generated
//! table with [`include_payloads!`] (a [`Bundle`]), which becomes a
//! [`Catalog`]; or it makes a [`Payload`] from bytes at hand. It launches
//! payloads with a [`Launcher`], through the [`Launch`] trait:
//!
//! ```
//! use stigmer::{Catalog, Choice, Launch, Launcher, Payload};
//!
//! let bytes = std::fs::read("/bin/sh")?;
//! let catalog = Catalog::new(vec![Payload::from_bytes("sh", bytes)], None);
//! let home = tempfile::tempdir()?; // where the cache would live
//! let launcher = Launcher::new(Choice::Auto, Some(home.path().to_owned()));
//! let prepared = launcher.prepare(catalog.get("sh")?)?;
//! let mut cmd = prepared.command();
//! cmd.args(["-c", "exit 3"]);
//! let status = prepared.spawn(&mut cmd)?.wait()?;
//! assert_eq!(status.code(), Some(3));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A program that carries its payloads (see `examples/hello-tenant` in the
//! repository):
//!
//! ```ignore
//! // build.rs: stigmer_build::Embed::folder("payloads")?.write()?;
//! static PAYLOADS: stigmer::Bundle = stigmer::include_payloads!();
//! let catalog = PAYLOADS.catalog();
//! ```
//!
//! | platform | default backend | fallback |
//! |---|---|---|
//! | Linux | memfd (sealed, `execveat`) | the cache, when `memfd_create`/`execveat` is refused |
//! | macOS | the cache | none |
//! | any, PyInstaller one-file payloads | the cache, with a private `TMPDIR` | none |

#![deny(missing_docs)]

mod catalog;
pub mod doctor;
pub mod env;
mod error;
pub mod launch;
pub mod manifest;
mod payload;
pub mod supervise;

pub use catalog::{Bundle, Catalog, Embedded, MANIFEST};
pub use error::{CacheOp, Error, MemfdOp, Result};
pub use launch::{Backend, Choice, Launch, Launcher, Plan, Prepared, PreparedAsset};
pub use manifest::{Manifest, ManifestError};
pub use payload::{Digest, Encoding, ParseDigestError, Payload};
pub use stigmer_build::Kind;
