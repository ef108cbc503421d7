//! An example tenant: a program of its own that carries one payload and runs
//! it the way `stigmer` runs its services.
//!
//! `build.rs` embeds the payload with `stigmer-build`; here the table it
//! generated becomes a catalogue, with the sha256 and kind decided at build
//! time (nothing is hashed or scanned now), and the payload runs as a child:
//! on Linux mapped straight from this executable's file (an ELF payload;
//! `STIGMER_BACKEND=memfd` runs it from a sealed memfd filled with
//! `sendfile` from the same bytes), from the verified cache elsewhere.
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
    let choice = match std::env::var(stigmer::env::STIGMER_BACKEND) {
        Ok(v) if !v.is_empty() => v.parse()?,
        _ => Choice::Auto,
    };
    let launcher = Launcher::new(choice, stigmer::env::home().ok());
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
