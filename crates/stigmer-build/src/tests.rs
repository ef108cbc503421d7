//! Tests of [`Embed`](crate::Embed) and the generated table.

use std::fs;
#[cfg(feature = "compress")]
use std::path::Path;

use crate::asm::Asm;
use crate::*;
use std::os::unix::fs::PermissionsExt as _;

#[test]
fn generates_one_entry_per_payload_and_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("tool");
    fs::write(&exe, b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(dir.path().join(MANIFEST), "").unwrap();
    let out = tempfile::tempdir().unwrap();
    let embedded = Embed::folder(dir.path()).unwrap().write_to(out.path()).unwrap();
    assert_eq!(embedded.payloads.len(), 1);
    assert_eq!(embedded.payloads[0].kind, Kind::Script);
    assert_eq!(embedded.payloads[0].size, 18);
    let code = fs::read_to_string(&embedded.generated).unwrap();
    assert!(code.contains("\"tool\", ::stigmer::Kind::Script, 18,"), "{code}");
    assert!(code.contains("Some(include_bytes!("), "{code}");
    let before = fs::metadata(&embedded.generated).unwrap().modified().unwrap();
    Embed::folder(dir.path()).unwrap().write_to(out.path()).unwrap();
    let after = fs::metadata(&embedded.generated).unwrap().modified().unwrap();
    assert_eq!(before, after, "an unchanged table is not rewritten");
}

#[test]
fn a_file_that_is_not_executable_is_embedded_as_an_asset() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("tool");
    fs::write(&exe, b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(dir.path().join("app.conf"), b"port = 80\n").unwrap();
    fs::write(dir.path().join(".env"), b"SECRET=1\n").unwrap();
    let out = tempfile::tempdir().unwrap();
    let embedded = Embed::folder(dir.path()).unwrap().write_to(out.path()).unwrap();
    assert_eq!(embedded.payloads.len(), 1);
    let [asset] = &embedded.assets[..] else { panic!("{:?}", embedded.assets) };
    assert_eq!((asset.name.as_str(), asset.kind, asset.size), ("app.conf", Kind::Asset, 10));
    assert_eq!(
        asset.sha256,
        <[u8; 32]>::from(<sha2::Sha256 as sha2::Digest>::digest(b"port = 80\n"))
    );
    let code = fs::read_to_string(&embedded.generated).unwrap();
    assert!(code.contains("[::stigmer::Embedded; 2]"), "{code}");
    assert!(code.contains("\"app.conf\", ::stigmer::Kind::Asset, 10,"), "{code}");
    // A dotfile is still no asset, nor a payload.
    assert!(!code.contains(".env") && !code.contains("SECRET"), "{code}");
    // Its bytes are stored, as a payload's are, under their sha256.
    let hex: String = asset.sha256.iter().map(|b| format!("{b:02x}")).collect();
    let stored = out.path().join("stigmer-payloads").join(&hex);
    if !cfg!(feature = "compress") {
        assert_eq!(fs::read(stored).unwrap(), b"port = 80\n");
    }
    // Names are one namespace: an asset cannot take a payload's.
    let err = Embed::new()
        .payload("a", "/bin/true")
        .unwrap()
        .asset("a", dir.path().join("app.conf"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("rename one"), "{err}");
}

#[test]
fn empty_folders_and_duplicates_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let err = Embed::folder(dir.path()).unwrap_err();
    assert!(matches!(err, Error::Empty { .. }), "{err}");
    let err = Embed::new()
        .payload("a", "/bin/true")
        .unwrap()
        .payload("a", "/bin/false")
        .unwrap_err()
        .to_string();
    assert!(err.contains("rename one"), "{err}");
    let err = Embed::new().payload("a b", "/bin/true").unwrap_err().to_string();
    assert!(err.contains("rename it"), "{err}");
}

/// The payload symbols assemble for every object format stigmer ships
/// (the macOS ones cannot be linked here, but LLVM's assembler checks
/// them), and each holds exactly the payload's bytes.
#[test]
#[allow(clippy::print_stderr)] // a skipped test says why
fn payload_bytes_assemble_for_elf_and_mach_o() {
    let mc = std::process::Command::new("llvm-mc").arg("--version").output();
    if !mc.is_ok_and(|o| o.status.success()) {
        let no_skip = std::env::var_os("STIGMER_TEST_NO_SKIP").is_some_and(|v| v == "1");
        assert!(!no_skip, "llvm-mc is not installed (Debian: apt install llvm)");
        eprintln!("skipped: llvm-mc is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("payload");
    let bytes: Vec<u8> = (0..=255).cycle().take(5000).collect();
    fs::write(&file, &bytes).unwrap();
    let cases = [
        (Asm::Elf, "x86_64-linux-gnu", "p_0"),
        (Asm::Elf, "aarch64-linux-gnu", "p_0"),
        (Asm::MachO, "arm64-apple-macos", "_p_0"),
        (Asm::MachO, "x86_64-apple-macos", "_p_0"),
    ];
    for (asm, triple, symbol) in cases {
        let source = dir.path().join(format!("{triple}.s"));
        let object = dir.path().join(format!("{triple}.o"));
        let mut text = asm.lines("p_0", &file, 4000).unwrap().join("\n");
        text.push('\n');
        fs::write(&source, text).unwrap();
        let o = std::process::Command::new("llvm-mc")
            .args([&format!("-triple={triple}"), "-filetype=obj", "-o"])
            .arg(&object)
            .arg(&source)
            .output()
            .unwrap();
        assert!(o.status.success(), "{triple}: {}", String::from_utf8_lossy(&o.stderr));
        let o = std::process::Command::new("llvm-objdump")
            .args(["-t", "-h"])
            .arg(&object)
            .output()
            .unwrap();
        let listing = String::from_utf8_lossy(&o.stdout);
        assert!(listing.lines().any(|l| l.ends_with(&format!(" {symbol}"))), "{triple}: {listing}");
        // The section is 4000 bytes of the file (a skip and a count),
        // found in the object as they are.
        let object = fs::read(&object).unwrap();
        assert!(
            object.windows(4000).any(|w| w == &bytes[..4000]),
            "{triple}: the bytes are not in the object"
        );
        // A file shorter than the count (changed after the build script
        // wrote it) still makes exactly `len` bytes: the static over them
        // never runs past its section.
        let mut text = asm.lines("p_0", &file, 6000).unwrap().join("\n");
        text.push('\n');
        fs::write(&source, text).unwrap();
        let short = dir.path().join("short.o");
        let o = std::process::Command::new("llvm-mc")
            .args([&format!("-triple={triple}"), "-filetype=obj", "-o"])
            .arg(&short)
            .arg(&source)
            .output()
            .unwrap();
        assert!(o.status.success(), "{triple}: {}", String::from_utf8_lossy(&o.stderr));
        let o = std::process::Command::new("llvm-objdump").arg("-h").arg(&short).output().unwrap();
        let listing = String::from_utf8_lossy(&o.stdout);
        let section = listing
            .lines()
            .find(|l| l.contains("stigmer_payloads") || l.contains("__const"))
            .unwrap_or_else(|| panic!("{triple}: no payload section: {listing}"));
        let size = section.split_whitespace().nth(2).unwrap();
        assert_eq!(u64::from_str_radix(size, 16).unwrap(), 6000, "{triple}: {section}");
    }
}

/// The generated `global_asm!` names its file exactly, whatever the
/// path holds (quotes, braces, backslashes, spaces, `;`, `#`, a tab, a
/// newline, bytes that are not UTF-8): rustc assembles it and the object
/// holds the payload's bytes.
#[test]
fn hostile_paths_are_embedded_exactly() {
    use std::os::unix::ffi::OsStrExt as _;
    let dir = tempfile::tempdir().unwrap();
    let name = std::ffi::OsStr::from_bytes(b"a \"b\" {c} \\d;e #f\tg\nh \xff}{");
    let odd = dir.path().join(name);
    fs::create_dir(&odd).unwrap();
    let file = odd.join("payload");
    let bytes: Vec<u8> = (0..5000u32).map(|i| (i * 31 % 253) as u8).collect();
    fs::write(&file, &bytes).unwrap();
    let mut code = String::new();
    Asm::for_target().push(&mut code, "p_0", &file, 5000).unwrap();
    let source = dir.path().join("asm.rs");
    fs::write(&source, &code).unwrap();
    let object = dir.path().join("asm.o");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let o = std::process::Command::new(rustc)
        .args(["--edition=2021", "--crate-type=lib", "--crate-name=asm", "--emit=obj", "-o"])
        .arg(&object)
        .arg(&source)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}\n{code}", String::from_utf8_lossy(&o.stderr));
    let object = fs::read(&object).unwrap();
    assert!(object.windows(5000).any(|w| w == bytes), "the bytes are not in the object");
}

/// A copy under a sha256 name is trusted only when it holds exactly
/// the bytes that were hashed: one of the right length but other bytes
/// (a foreign file, a crash that left zeros) is written again.
#[test]
fn a_stored_copy_of_the_right_length_but_other_bytes_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("tool");
    fs::write(&exe, b"#!/bin/sh\necho hi\n").unwrap();
    let out = tempfile::tempdir().unwrap();
    let embed = || Embed::new().payload("tool", &exe).unwrap().write_to(out.path()).unwrap();
    embed();
    let stored = fs::read_dir(out.path().join("stigmer-payloads")).unwrap();
    let stored: Vec<_> = stored.map(|e| e.unwrap().path()).collect();
    assert_eq!(stored.len(), 1, "{stored:?}");
    fs::write(&stored[0], [0u8; 18]).unwrap();
    embed();
    assert_eq!(fs::read(&stored[0]).unwrap(), fs::read(&exe).unwrap());
}

#[cfg(feature = "compress")]
#[test]
fn frames_are_kept_by_sha256_and_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("big");
    fs::write(&exe, vec![7u8; FRAME_LEN + 10]).unwrap();
    let out = tempfile::tempdir().unwrap();
    let e = Embed::new().payload("big", &exe).unwrap().compress(true);
    let code = fs::read_to_string(e.write_to(out.path()).unwrap().generated).unwrap();
    assert!(code.contains("Encoding::Zstd { frame_len: 1048576"), "{code}");
    let frames = out.path().join("stigmer-payloads");
    assert_eq!(fs::read_dir(&frames).unwrap().count(), 2);
    fs::write(&exe, vec![8u8; 100]).unwrap();
    Embed::new().payload("big", &exe).unwrap().compress(true).write_to(out.path()).unwrap();
    assert_eq!(fs::read_dir(&frames).unwrap().count(), 2, "the old frames are gone");
}

/// Frames and their lengths are reused only when they decode to exactly
/// the hashed bytes: a truncated or foreign `.lens` or `.zst` is made
/// again, and no text of a `.lens` file reaches the generated code.
#[cfg(feature = "compress")]
#[test]
fn wrong_or_truncated_frames_are_made_again() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("big");
    let bytes: Vec<u8> = (0..FRAME_LEN + 1000).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(&exe, &bytes).unwrap();
    let out = tempfile::tempdir().unwrap();
    let embed = || {
        let e = Embed::new().payload("big", &exe).unwrap().compress(true);
        fs::read_to_string(e.write_to(out.path()).unwrap().generated).unwrap()
    };
    let good = embed();
    let stored = out.path().join("stigmer-payloads");
    let find = |ext: &str| {
        fs::read_dir(&stored)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == ext))
            .unwrap()
    };
    let (zst, lens) = (find("zst"), find("lens"));
    let (good_zst, good_lens) = (fs::read(&zst).unwrap(), fs::read_to_string(&lens).unwrap());
    let first: usize = good_lens.split(", ").next().unwrap().parse().unwrap();
    let damage: [(&Path, Vec<u8>); 4] = [
        // A .lens cut short: one frame of two.
        (&lens, good_lens.split(", ").next().unwrap().as_bytes().to_vec()),
        // Lengths that add up but cut the frames in the wrong place.
        (&lens, format!("{}, {}", first - 1, good_zst.len() - first + 1).into_bytes()),
        // Text that is not lengths at all.
        (&lens, b"1]), compile_error!(\"injected\"), (&[1".to_vec()),
        // Frames of the right length and other bytes.
        (&zst, vec![0; good_zst.len()]),
    ];
    for (file, bad) in damage {
        fs::write(file, &bad).unwrap();
        assert_eq!(embed(), good, "{}", String::from_utf8_lossy(&bad));
        assert_eq!(fs::read(&zst).unwrap(), good_zst);
        assert_eq!(fs::read_to_string(&lens).unwrap(), good_lens);
    }
}

/// A payload path that is not a regular file (a FIFO, which a read
/// would wait on forever; a folder) is an error that says so, at once.
#[test]
fn a_fifo_or_a_folder_given_as_a_payload_is_refused_not_waited_on() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let o = std::process::Command::new("mkfifo").arg(&fifo).output().unwrap();
    assert!(o.status.success());
    for path in [fifo, dir.path().to_owned()] {
        let out = tempfile::tempdir().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let p = path.clone();
        let out_path = out.path().to_owned();
        std::thread::spawn(move || {
            let e = Embed::new().payload("x", p).unwrap().write_to(&out_path);
            let _ = tx.send(e.map(|_| ()).map_err(|e| e.to_string()));
        });
        let err = rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .unwrap_or_else(|_| panic!("{} was waited on", path.display()))
            .unwrap_err();
        assert!(err.contains("not a regular file") && err.contains("point"), "{err}");
    }
}

/// A folder, payload or manifest path with a line break is refused:
/// printed in a cargo::rerun-if-changed line, the rest of it would be
/// an instruction of its own.
#[test]
fn paths_with_line_breaks_are_refused_not_printed() {
    let dir = tempfile::tempdir().unwrap();
    let odd = dir.path().join("p\ncargo::rustc-cfg=injected");
    fs::create_dir(&odd).unwrap();
    let exe = odd.join("tool");
    fs::write(&exe, b"#!/bin/sh\n").unwrap();
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
    let err = Embed::folder(&odd).unwrap_err().to_string();
    assert!(err.contains("line break") && !err.contains('\n'), "{err}");
    let err = Embed::new().payload("tool", &exe).unwrap_err().to_string();
    assert!(err.contains("line break"), "{err}");
    let out = tempfile::tempdir().unwrap();
    let e = Embed::new().payload("true", "/bin/true").unwrap().manifest(odd.join(MANIFEST));
    let err = e.write_to(out.path()).unwrap_err().to_string();
    assert!(err.contains("line break"), "{err}");
}

/// Errors reading a payload or writing the output name the file and
/// what to check.
#[test]
fn read_and_write_errors_name_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let missing = dir.path().join("gone");
    let e = Embed::new().payload("gone", &missing).unwrap();
    let err = e.write_to(out.path()).unwrap_err().to_string();
    assert!(err.contains("gone") && err.contains("check that it exists"), "{err}");
    let not_a_folder = dir.path().join("out");
    fs::write(&not_a_folder, "").unwrap();
    let e = Embed::new().payload("true", "/bin/true").unwrap();
    let err = e.write_to(&not_a_folder).unwrap_err().to_string();
    assert!(err.contains("stigmer-payloads") && err.contains("free space"), "{err}");
}

/// Payloads with the same bytes are one copy in the executable, each
/// name pointing at it.
#[test]
fn payloads_with_the_same_bytes_share_one_copy() {
    let out = tempfile::tempdir().unwrap();
    let e = Embed::new().payload("a", "/bin/true").unwrap().payload("b", "/bin/true").unwrap();
    let embedded = e.write_to(out.path()).unwrap();
    assert_eq!(embedded.payloads[0].sha256, embedded.payloads[1].sha256);
    let code = fs::read_to_string(&embedded.generated).unwrap();
    assert_eq!(code.matches(".incbin").count(), 1, "{code}");
    assert_eq!(code.matches("&PAYLOAD_0)").count(), 2, "{code}");
}

/// A symlink under a sha256 name, even to the very bytes, is replaced
/// by a copy: the assembler reads the file later, and would read
/// whatever the link then points at.
#[test]
fn a_stored_symlink_is_replaced_by_a_copy() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("tool");
    fs::write(&exe, b"#!/bin/sh\necho hi\n").unwrap();
    let out = tempfile::tempdir().unwrap();
    let embed = || Embed::new().payload("tool", &exe).unwrap().write_to(out.path()).unwrap();
    embed();
    let stored = fs::read_dir(out.path().join("stigmer-payloads")).unwrap();
    let stored: Vec<_> = stored.map(|e| e.unwrap().path()).collect();
    fs::remove_file(&stored[0]).unwrap();
    std::os::unix::fs::symlink(&exe, &stored[0]).unwrap();
    embed();
    assert!(fs::symlink_metadata(&stored[0]).unwrap().file_type().is_file());
    assert_eq!(fs::read(&stored[0]).unwrap(), fs::read(&exe).unwrap());
}
