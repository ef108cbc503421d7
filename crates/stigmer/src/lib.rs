//! stigmer carries executables ("payloads") inside one binary and runs them
//! without extracting them.
//!
//! On Linux a payload runs from a sealed memfd: nothing is written to any
//! file system, so it works on a read-only root and with a `noexec` `/tmp`.
//! On macOS, and on Linux where the kernel refuses exec from memory, it runs
//! from a private, content-addressed cache under `~/.stigmer/bin/`, verified
//! against the build-time sha256 before every launch.
//!
//! The library is payload-neutral: a program embeds its own folder with
//! rust-embed and builds a [`Catalog`] from it, then launches payloads with a
//! [`Launcher`]:
//!
//! ```no_run
//! use stigmer::{Catalog, Choice, Launch, Launcher, Payload};
//!
//! let catalog = Catalog::new(vec![Payload::from_bytes("true", std::fs::read("/bin/true")?)], None);
//! let launcher = Launcher::new(Choice::Auto, stigmer::env::home().ok());
//! let prepared = launcher.prepare(catalog.get("true")?)?;
//! let status = prepared.spawn(&mut prepared.command())?.wait()?;
//! assert!(status.success());
//! # Ok::<(), Box<dyn std::error::Error>>(())
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
pub use launch::{Backend, Choice, Launch, Launcher, Plan, Prepared};
pub use manifest::{Manifest, ManifestError};
pub use payload::{Digest, Encoding, Payload};
pub use stigmer_build::Kind;
