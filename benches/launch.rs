//! Launch speed against the alternatives: see `launch/linux.rs`.

// criterion_group! generates an undocumented public function; the sizes
// are reported on stderr, and the peak-RSS helper answers on stdout.
#![allow(missing_docs, unreachable_pub, clippy::print_stderr, clippy::print_stdout)]

#[cfg(target_os = "linux")]
#[path = "launch/linux.rs"]
mod linux;

#[cfg(target_os = "linux")]
fn main() {
    linux::main();
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("this bench measures launches from a memfd: it runs on Linux only");
}
