//! An example tenant: a program of its own that carries one payload and runs
//! it the way `stigmer` runs its services.
//!
//! `build.rs` embeds the payload with `stigmer-build`; here the table it
//! generated becomes a catalogue, with the sha256 and kind decided at build
//! time (nothing is hashed or scanned now), and the payload runs as a child
//! from a sealed memfd on Linux, filled with `sendfile` straight from this
//! executable's file (from the verified cache elsewhere).
//!
//! ```text
//! cargo run -p hello-tenant -- Ada
//! ```

// An example writes to its terminal directly; it has no logger.
#![allow(clippy::print_stderr)]

use std::process::ExitCode;

use stigmer::launch::Launch as _;
use stigmer::{Bundle, Choice, Launcher};

/// The payloads `build.rs` embedded.
static PAYLOADS: Bundle = stigmer::include_payloads!();

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hello-tenant: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<ExitCode, Box<dyn std::error::Error>> {
    let catalog = PAYLOADS.catalog();
    let greet = catalog.get("greet")?;
    let launcher = Launcher::new(Choice::Auto, stigmer::env::home().ok());
    let prepared = launcher.prepare(greet)?;
    eprintln!(
        "hello-tenant: running {} ({}, sha256 {}) from {}",
        greet.name(),
        greet.kind(),
        greet.sha256(),
        prepared.backend()
    );
    let mut cmd = prepared.command();
    cmd.args(std::env::args_os().skip(1));
    let status = prepared.spawn(&mut cmd)?.wait()?;
    Ok(stigmer::launch::exit_code(status))
}
