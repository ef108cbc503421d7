//! Builds the example's payload from `payloads/greet.rs` and embeds it with
//! `stigmer-build`: a payload folder of prebuilt executables needs only
//! `stigmer_build::Embed::folder("payloads")?.write()?`.

use std::path::PathBuf;
use std::process::Command;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?);
    let source = PathBuf::from("payloads/greet.rs");
    println!("cargo::rerun-if-changed={}", source.display());
    let exe = out.join("greet");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let mut cmd = Command::new(rustc);
    cmd.args(["--edition=2021", "-Copt-level=2", "-Cstrip=symbols", "-o"]).arg(&exe).arg(&source);
    let target = std::env::var("TARGET")?;
    if target != std::env::var("HOST")? {
        cmd.arg(format!("--target={target}"));
    }
    let status = cmd.status()?;
    if !status.success() {
        return Err(format!("cannot build {} ({status})", source.display()).into());
    }
    stigmer_build::Embed::new().payload("greet", exe)?.write()?;
    Ok(())
}
