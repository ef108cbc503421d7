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
        if target == std::env::var("HOST")? {
            return Err(format!("cannot build {} ({status})", source.display()).into());
        }
        // Checking the example for a target whose std this machine lacks
        // (CI checks macOS from Linux): embed a script that says the same.
        println!(
            "cargo::warning=cannot build {} for {target} ({status}): embedding a script instead",
            source.display()
        );
        std::fs::write(&exe, "#!/bin/sh\necho \"hello, ${*:-world} (from $0, pid $$)\"\n")?;
        let mut perms = std::fs::metadata(&exe)?.permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(&exe, perms)?;
    }
    stigmer_build::Embed::new().payload("greet", exe)?.write()?;
    Ok(())
}
