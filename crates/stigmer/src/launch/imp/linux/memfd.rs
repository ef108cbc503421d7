//! The memfd backend (Linux): payloads run from sealed anonymous memory.
//!
//! For each payload, once per process: `memfd_create` with `MFD_CLOEXEC |
//! MFD_ALLOW_SEALING | MFD_EXEC` (retried without `MFD_EXEC` on kernels
//! before 6.3, which reject it with `EINVAL`), filled with `sendfile` from
//! stigmer's own executable at the payload's offset (or `write` from the
//! embedded bytes when that offset cannot be found), then sealed with
//! `F_SEAL_EXEC` where the kernel knows it and `F_SEAL_SHRINK | F_SEAL_GROW |
//! F_SEAL_WRITE | F_SEAL_SEAL`. Nothing touches a file system.
//!
//! Exec, in place or in a spawned child, is `execveat(fd, "", argv, envp,
//! AT_EMPTY_PATH)` on the close-on-exec memfd (see [`super::spawn`]), so the
//! payload inherits no memfd and its process name is `memfd:NAME`.
//!
//! A `#!` script is the exception: its interpreter opens `/dev/fd/N` after
//! the exec, so that one descriptor is made inheritable in the child (and
//! only there) right before the exec.
//!
//! An asset (a file services read, never run) gets a memfd of its own,
//! once per process: `MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_NOEXEC_SEAL`
//! (6.3+; before, without the last, which kernels before 6.3 reject), filled
//! the same way, `fchmod` to `0444`, sealed the same way. A service that
//! names it gets its descriptor inheritable, in its child only, and opens
//! it as `/proc/self/fd/N`.
//!
//! # References
//! - memfd_create(2), execveat(2), fcntl(2) "File Sealing", sendfile(2)
//! - Documentation/admin-guide/sysctl/vm.rst, `memfd_noexec`

#![allow(unsafe_code)]

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufRead as _, Read, Write as _};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{FileExt as _, MetadataExt as _};
use std::os::unix::process::CommandExt as _;
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use memfd::{FileSeal, Memfd};
use rustix::fs::{MemfdFlags, SealFlags};
use tracing::debug;

use crate::launch::buf::AlignedBuf;
use crate::{Digest, Encoding, Error, Kind, MemfdOp, Payload, Result};

#[cfg(feature = "compress")]
mod frames;

/// Creates, fills and seals one memfd per payload, the first time any
/// launcher asks for it.
///
/// The memfds live in one table for the whole process, keyed by sha256, and
/// are never closed: every spawn and restart of a payload, from every
/// launcher, shares one copy, and a [`Command`] naming `/proc/self/fd/N` can
/// never reach a closed or reused descriptor. A spawn forks (the exec by
/// descriptor is a `pre_exec` step), which copies the page tables: measured
/// 0.5 ms from a small process, 10 ms from one with 270 MB resident.
#[derive(Debug, Default)]
pub struct MemfdLauncher {
    _private: (),
}

/// A payload sealed in a memfd, ready to exec any number of times.
#[derive(Clone, Debug)]
pub(crate) struct Image {
    fd: Arc<OwnedFd>,
    script: bool,
}

/// An asset in a sealed memfd that is not executable: a service that names
/// it opens `/proc/self/fd/N`, N being this very descriptor, which stays
/// open across the exec of that service only ([`AssetImage::pass_to`]).
#[derive(Clone, Debug)]
pub(crate) struct AssetImage {
    fd: Arc<OwnedFd>,
}

/// One slot per payload, so payloads are prepared in parallel while two
/// threads asking for the same payload wait for one memfd.
type Slot<T = Image> = Arc<Mutex<Option<T>>>;

/// The memfd in `table` for `payload`'s bytes, made by `make` on first use.
fn once<T: Clone>(
    table: &'static OnceLock<Mutex<HashMap<Digest, Slot<T>>>>,
    payload: &Payload,
    make: impl FnOnce() -> Result<T>,
) -> Result<T> {
    let slot = {
        let mut table =
            table.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(table.entry(payload.sha256()).or_default())
    };
    let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(made) = &*slot {
        return Ok(made.clone());
    }
    let made = make()?;
    *slot = Some(made.clone());
    Ok(made)
}

impl MemfdLauncher {
    /// A launcher; memfds already made by this process are reused.
    pub fn new() -> MemfdLauncher {
        MemfdLauncher::default()
    }

    /// The sealed memfd of `payload`, made on first use.
    pub(crate) fn image(&self, payload: &Payload) -> Result<Image> {
        static IMAGES: OnceLock<Mutex<HashMap<Digest, Slot>>> = OnceLock::new();
        once(&IMAGES, payload, || {
            Ok(Image {
                fd: Arc::new(seal(fill(create(payload)?, payload)?, payload)?),
                script: payload.kind() == Kind::Script,
            })
        })
    }

    /// The sealed, non-executable memfd of `asset`, made on first use and
    /// kept for the life of the process (every start of every service that
    /// reads it shares it). Its mode is `0444`, and it is sealed against
    /// writes, growing, shrinking and new seals; `MFD_NOEXEC_SEAL` (6.3+)
    /// also seals its exec bits off.
    pub(crate) fn asset(&self, asset: &Payload) -> Result<AssetImage> {
        static ASSETS: OnceLock<Mutex<HashMap<Digest, Slot<AssetImage>>>> = OnceLock::new();
        once(&ASSETS, asset, || {
            let memfd = data_memfd_create(asset.name())
                .map_err(op_err(asset, MemfdOp::Create))
                .and_then(|memfd| fill(memfd, asset))?;
            // Read-only for everyone: no exec bit where MFD_NOEXEC_SEAL is
            // unknown (its memfds start at 0777), no write bit either way.
            rustix::fs::fchmod(memfd.as_file(), rustix::fs::Mode::from_raw_mode(0o444))
                .map_err(|e| op_err(asset, MemfdOp::Chmod)(e.into()))?;
            Ok(AssetImage { fd: Arc::new(seal(memfd, asset)?) })
        })
        .map_err(|e| match e {
            Error::Memfd { name, op, source } => Error::AssetMemfd { name, op, source },
            other => other,
        })
    }
}

/// `memfd_create` for an asset: close-on-exec, sealable, and never
/// executable (`MFD_NOEXEC_SEAL`) where the kernel knows the flag (6.3+;
/// before, it says `EINVAL`, and the mode is set to `0444` instead). Under
/// `vm.memfd_noexec=2`, which refuses exec from memory, such a memfd is
/// still allowed.
fn data_memfd_create(name: &str) -> io::Result<Memfd> {
    let flags = MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING;
    let fd = match rustix::fs::memfd_create(name, flags | MemfdFlags::NOEXEC_SEAL) {
        Err(rustix::io::Errno::INVAL) => rustix::fs::memfd_create(name, flags)?,
        other => other?,
    };
    Memfd::try_from_fd(fd).map_err(|fd| match rustix::fs::fcntl_get_seals(&fd) {
        Err(e) => io::Error::from(e),
        Ok(_) => io::Error::other("memfd_create gave a descriptor that is not a memfd"),
    })
}

impl AssetImage {
    /// The path a service opens it by: `/proc/self/fd/N`.
    pub(crate) fn path(&self) -> std::path::PathBuf {
        format!("/proc/self/fd/{}", self.fd.as_raw_fd()).into()
    }

    /// Keeps the descriptor open across the exec of `cmd`'s child, and only
    /// there: its close-on-exec flag is cleared in the child, after the
    /// fork, so every other process stigmer starts still closes it.
    pub(crate) fn pass_to(&self, cmd: &mut Command) {
        let fd = Arc::clone(&self.fd);
        // SAFETY: the closure runs in the child between fork and exec and
        // makes only one raw fcntl(2) system call, which is
        // async-signal-safe; it allocates nothing and takes no lock. `fd`
        // is kept open by the Arc the closure owns.
        unsafe {
            cmd.pre_exec(move || {
                rustix::io::fcntl_setfd(fd.as_fd(), rustix::io::FdFlags::empty())?;
                Ok(())
            });
        }
    }
}

fn op_err<'a>(payload: &'a Payload, op: MemfdOp) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Memfd { name: payload.name().to_owned(), op, source }
}

/// `memfd_create`, asking for an executable memfd where the kernel knows
/// `MFD_EXEC` (6.3+). Under `vm.memfd_noexec=2` this fails with `EACCES`,
/// which the caller treats as "use the cache".
fn create(payload: &Payload) -> Result<Memfd> {
    let (memfd, _) = memfd_create(payload.name()).map_err(op_err(payload, MemfdOp::Create))?;
    Ok(memfd)
}

/// The one `memfd_create` of stigmer, for payloads and `doctor`'s probe
/// alike: close-on-exec, sealable, and executable (`MFD_EXEC`) where the
/// kernel knows the flag. Returns the memfd and whether it did (kernels
/// before 6.3 reject `MFD_EXEC` with `EINVAL`: asked again without it).
pub(super) fn memfd_create(name: &str) -> io::Result<(Memfd, bool)> {
    let flags = MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING;
    let (fd, exec_flag) = match rustix::fs::memfd_create(name, flags | MemfdFlags::EXEC) {
        Err(rustix::io::Errno::INVAL) => (rustix::fs::memfd_create(name, flags)?, false),
        other => (other?, true),
    };
    // The memfd crate checks the descriptor with F_GET_SEALS, which a
    // seccomp profile may refuse: that is a refusal like any other.
    let memfd = Memfd::try_from_fd(fd).map_err(|fd| match rustix::fs::fcntl_get_seals(&fd) {
        Err(e) => io::Error::from(e),
        Ok(_) => io::Error::other("memfd_create gave a descriptor that is not a memfd"),
    })?;
    Ok((memfd, exec_flag))
}

/// Runs this process's own executable from a sealed memfd made exactly as a
/// payload's is (the same flags, `sendfile` and seals), both ways stigmer
/// launches payloads: `execveat` on the descriptor (`stigmer run`, here in a
/// child) and exec of `/proc/self/fd/N` (spawned services); the memfd is
/// named `name`, so the process runs as `memfd:NAME`. `env` is set in
/// its environment; the executable must exit at once with status 0 when it
/// sees it ([`crate::doctor::answer_probe`]). The memfd is closed after.
/// Returns the first failure, naming the way that failed.
pub(super) fn run_self_sealed(name: &str, env: &str) -> io::Result<()> {
    let exe =
        SelfExe::get().map_or_else(|| File::open("/proc/self/exe"), |e| e.file.try_clone())?;
    let (memfd, _) = memfd_create(name)?;
    let len = exe.metadata()?.len();
    if !send(memfd.as_file(), &exe, 0, len)? {
        io::copy(&mut &exe, &mut memfd.as_file())?;
    }
    try_seal(&memfd)?;
    let fd = OwnedFd::from(memfd.into_file());
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let probe = || {
        let mut cmd = Command::new(&path);
        cmd.env(env, "1")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        cmd
    };
    let check = |how: &str, status: io::Result<std::process::ExitStatus>| match status {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(io::Error::other(format!("{how}: the probe {status}"))),
        Err(e) => Err(io::Error::new(e.kind(), format!("{how}: {e}"))),
    };

    // execveat alone, as `stigmer run` and services exec a payload.
    let mut cmd = probe();
    let status = super::spawn::spawn_fd(&mut cmd, fd.as_fd(), OsStr::new(name), Default::default())
        .and_then(|mut child| child.wait());
    check("execveat", status)?;
    check(&format!("exec {path}"), probe().status())
}

fn fill(memfd: Memfd, payload: &Payload) -> Result<Memfd> {
    let file = memfd.as_file();
    let located = SelfExe::get().and_then(|exe| exe.locate(payload.data()));
    if *payload.encoding() != Encoding::Raw {
        decode(file, payload, located)?;
        return Ok(memfd);
    }
    let sent = match located {
        Some((exe, offset)) => send(file, exe, offset, payload.len()),
        None => Ok(false),
    }
    .map_err(op_err(payload, MemfdOp::Sendfile))?;
    if sent {
        debug!(payload = payload.name(), "filled the memfd with sendfile() from the executable");
    } else {
        debug!(payload = payload.name(), "filling the memfd with write()");
        let mut file = file;
        file.write_all(payload.data()).map_err(op_err(payload, MemfdOp::Write))?;
    }
    Ok(memfd)
}

/// Decodes a compressed payload straight into the memfd, reading the stored
/// bytes from the executable's file where they are found (so they never
/// become resident in stigmer): frame by frame on every core when the build
/// recorded its frames, as one stream otherwise. No buffer of payload size.
fn decode(file: &File, payload: &Payload, located: Option<(&File, u64)>) -> Result<()> {
    let decode_err = |source| Error::Decode { name: payload.name().to_owned(), source };
    // A write error is the memfd's; a read error is the decoder's.
    let failure = |e| match e {
        Failure::Read(e) => decode_err(e),
        Failure::Write(e) => op_err(payload, MemfdOp::Write)(e),
    };
    #[cfg(feature = "compress")]
    if let Encoding::Zstd { frame_len, frames } = payload.encoding() {
        if !frames.is_empty() {
            let stored = payload.data();
            let read_at = |buf: &mut [u8], pos: u64| match located {
                Some((exe, offset)) => exe.read_exact_at(buf, offset + pos),
                None => {
                    let from = stored
                        .get(pos as usize..)
                        .and_then(|s| s.get(..buf.len()))
                        .ok_or(io::ErrorKind::UnexpectedEof)?;
                    buf.copy_from_slice(from);
                    Ok(())
                }
            };
            let frames = frames::Frames {
                frame_len: *frame_len as usize,
                stored: frames,
                len: payload.len(),
            };
            frames.decode_into(&read_at, file).map_err(failure)?;
            debug!(
                payload = payload.name(),
                frames = frames.stored.len(),
                "decompressed into the memfd"
            );
            return Ok(());
        }
    }
    let stored: Box<dyn Read + '_> = match located {
        Some((exe, offset)) => {
            Box::new(ReadAt { file: exe, offset, end: offset + payload.data().len() as u64 })
        }
        None => Box::new(payload.data()),
    };
    let mut decoded = payload.decode(stored).map_err(decode_err)?;
    let written = copy(&mut decoded, file).map_err(failure)?;
    if written != payload.len() {
        let why = format!("{written} bytes decoded, {} expected", payload.len());
        return Err(decode_err(io::Error::other(why)));
    }
    debug!(payload = payload.name(), "decompressed into the memfd as one stream");
    Ok(())
}

/// What went wrong while copying, and on which side.
#[derive(Debug)]
enum Failure {
    /// Reading or decoding the stored bytes.
    Read(io::Error),
    /// Writing into the memfd.
    Write(io::Error),
}

/// Copies `from` to `to` through one buffer; returns the bytes copied.
fn copy(from: &mut dyn Read, mut to: &File) -> Result<u64, Failure> {
    let mut buf = AlignedBuf::new(crate::launch::IO_BUF);
    let buf = buf.all();
    let mut total = 0;
    loop {
        let n = match from.read(buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Failure::Read(e)),
        };
        to.write_all(&buf[..n]).map_err(Failure::Write)?;
        total += n as u64;
    }
}

/// Reads `offset..end` of a file with `pread`, leaving the file's position
/// alone (other threads share the descriptor).
struct ReadAt<'a> {
    file: &'a File,
    offset: u64,
    end: u64,
}

impl Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf.len().min((self.end - self.offset) as usize);
        let n = self.file.read_at(&mut buf[..want], self.offset)?;
        self.offset += n as u64;
        Ok(n)
    }
}

/// Copies `len` bytes at `offset` of `exe` into `out` inside the kernel.
/// `Ok(false)` when `sendfile` is not available for these files.
fn send(out: &File, exe: &File, mut offset: u64, len: u64) -> io::Result<bool> {
    let (start, end) = (offset, offset + len);
    while offset < end {
        // sendfile moves at most 0x7ffff000 bytes per call.
        let chunk = (end - offset).min(0x7fff_f000) as usize;
        match rustix::fs::sendfile(out, exe, Some(&mut offset), chunk) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) if offset == start => {
                return Ok(false);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}

fn seal(memfd: Memfd, payload: &Payload) -> Result<OwnedFd> {
    // Sealing fails with EBUSY while something holds a writable mapping of
    // the memfd or an extra reference to one of its pages; the kernel waits
    // ~150 ms for pins to go, and under memory activity (compaction, LRU
    // batches) it was seen to give up once in a benchmark run. A failed call
    // adds no seal, so try again a little later, for about a second.
    let mut delay = Duration::from_millis(10);
    loop {
        let e = match try_seal(&memfd) {
            Ok(()) => return Ok(memfd.into_file().into()),
            Err(e) => e,
        };
        if e.kind() != io::ErrorKind::ResourceBusy || delay > Duration::from_secs(1) {
            return Err(op_err(payload, MemfdOp::AddSeals)(e));
        }
        debug!(payload = payload.name(), "sealing: the memfd is still busy, retrying");
        std::thread::sleep(delay);
        delay *= 2;
    }
}

fn try_seal(memfd: &Memfd) -> io::Result<()> {
    // F_SEAL_EXEC (6.3+) keeps the exec bits as they are (and, on an
    // executable memfd, implies the write seals); older kernels say EINVAL,
    // and their memfds have no exec bit policy to protect.
    match rustix::fs::fcntl_add_seals(memfd.as_file(), SealFlags::EXEC) {
        Ok(()) | Err(rustix::io::Errno::INVAL) => {}
        Err(e) => return Err(e.into()),
    }
    let seals = [FileSeal::SealShrink, FileSeal::SealGrow, FileSeal::SealWrite, FileSeal::SealSeal];
    memfd.add_seals(&seals).map_err(|e| match e {
        memfd::Error::AddSeals(e) | memfd::Error::GetSeals(e) | memfd::Error::Create(e) => e,
    })
}

impl Image {
    /// A command naming the payload's memfd by path; [`Image::spawn`] runs
    /// it from the descriptor itself.
    pub(crate) fn command(&self, argv0: &OsStr) -> Command {
        let mut cmd = Command::new(format!("/proc/self/fd/{}", self.fd.as_raw_fd()));
        cmd.arg0(argv0);
        if self.script {
            let fd = Arc::clone(&self.fd);
            // SAFETY: the closure runs in the child between fork and exec and
            // makes only one raw fcntl(2) system call, which is
            // async-signal-safe; it allocates nothing and takes no lock.
            unsafe {
                cmd.pre_exec(move || {
                    rustix::io::fcntl_setfd(fd.as_fd(), rustix::io::FdFlags::empty())?;
                    Ok(())
                });
            }
        }
        cmd
    }

    /// Spawns `cmd` (see [`super::spawn::spawn_fd`]) from the memfd. A `#!`
    /// script's interpreter reads it through `/dev/fd/N`, so its memfd (and
    /// only its) is made inheritable, in the child.
    pub(crate) fn spawn(
        &self,
        cmd: &mut Command,
        argv0: &OsStr,
    ) -> io::Result<std::process::Child> {
        let inherit: &[std::os::fd::RawFd] = if self.script { &[self.fd.as_raw_fd()] } else { &[] };
        let how = super::spawn::How { inherit, by_path: true, ..Default::default() };
        super::spawn::spawn_fd(cmd, self.fd.as_fd(), argv0, how)
    }

    /// Replaces this process with the payload, with `argv[0]` set to
    /// `name`, then `args`, and this process's environment. Returns only on
    /// failure.
    pub(crate) fn exec<I, S>(&self, argv0: &OsStr, args: I) -> io::Error
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let argv: Vec<std::ffi::OsString> = std::iter::once(argv0.to_owned())
            .chain(args.into_iter().map(|a| a.as_ref().to_owned()))
            .collect();
        let inherit: &[std::os::fd::RawFd] = if self.script { &[self.fd.as_raw_fd()] } else { &[] };
        // A refusal here means "use the cache" (see `Launcher::exec`).
        super::spawn::exec_fd(
            self.fd.as_fd(),
            &argv,
            super::spawn::How { inherit, ..Default::default() },
        )
    }
}

/// stigmer's own executable and the offset of `data` in it, when all of
/// `data` lies in a file-backed mapping of it (what the mapped backend maps
/// from, and what `sendfile` fills a memfd from).
pub(super) fn locate_in_self(data: &[u8]) -> Option<(&'static File, u64)> {
    SelfExe::get().and_then(|exe| exe.locate(data))
}

/// stigmer's own executable, opened once, and where its file-backed
/// mappings are, to find the file offset of an embedded payload.
struct SelfExe {
    file: File,
    mappings: Vec<Mapping>,
}

/// One line of `/proc/self/maps` that maps the executable file.
#[derive(Debug, PartialEq)]
struct Mapping {
    start: usize,
    end: usize,
    offset: u64,
}

impl SelfExe {
    fn get() -> Option<&'static SelfExe> {
        static SELF: OnceLock<Option<SelfExe>> = OnceLock::new();
        SELF.get_or_init(|| match SelfExe::open() {
            Ok(exe) => Some(exe),
            Err(e) => {
                debug!(
                    "cannot map payloads to /proc/self/exe ({e}): memfds are filled with write()"
                );
                None
            }
        })
        .as_ref()
    }

    fn open() -> io::Result<SelfExe> {
        let file = File::open("/proc/self/exe")?;
        let meta = file.metadata()?;
        let maps = io::BufReader::new(File::open("/proc/self/maps")?);
        let mut mappings = Vec::new();
        for line in maps.lines() {
            if let Some((mapping, dev_ino)) = parse_maps_line(&line?) {
                // Trust a line only if it maps the very file we opened.
                if dev_ino == (meta.dev(), meta.ino()) {
                    mappings.push(mapping);
                }
            }
        }
        if mappings.is_empty() {
            return Err(io::Error::other("the executable is not mapped from its file"));
        }
        Ok(SelfExe { file, mappings })
    }

    /// The executable and the file offset of `data`, when all of `data` lies
    /// in file-backed mappings of it (payloads are in `.rodata`).
    fn locate(&self, data: &[u8]) -> Option<(&File, u64)> {
        let start = data.as_ptr() as usize;
        let offset = locate(&self.mappings, start, data.len())?;
        let size = self.file.metadata().ok()?.len();
        (offset + data.len() as u64 <= size).then_some((&self.file, offset))
    }
}

/// Finds the file offset of the `len` bytes at address `start`, requiring
/// the whole range to be covered by mappings that are contiguous in both
/// memory and file.
fn locate(mappings: &[Mapping], start: usize, len: usize) -> Option<u64> {
    let first = mappings.iter().position(|m| m.start <= start && start < m.end)?;
    let offset = mappings[first].offset + (start - mappings[first].start) as u64;
    let end = start + len;
    let mut covered = mappings[first].end;
    let mut next_offset =
        mappings[first].offset + (mappings[first].end - mappings[first].start) as u64;
    for m in &mappings[first + 1..] {
        if covered >= end {
            break;
        }
        if m.start != covered || m.offset != next_offset {
            return None;
        }
        covered = m.end;
        next_offset += (m.end - m.start) as u64;
    }
    (covered >= end).then_some(offset)
}

/// Parses `start-end perms offset major:minor inode path` into the mapping
/// and the `(dev, inode)` it maps, for lines that map a file.
fn parse_maps_line(line: &str) -> Option<(Mapping, (u64, u64))> {
    let mut fields = line.split_ascii_whitespace();
    let (start, end) = fields.next()?.split_once('-')?;
    let _perms = fields.next()?;
    let offset = u64::from_str_radix(fields.next()?, 16).ok()?;
    let (major, minor) = fields.next()?.split_once(':')?;
    let inode: u64 = fields.next()?.parse().ok()?;
    if inode == 0 {
        return None;
    }
    let (major, minor) =
        (u64::from_str_radix(major, 16).ok()?, u64::from_str_radix(minor, 16).ok()?);
    let mapping = Mapping {
        start: usize::from_str_radix(start, 16).ok()?,
        end: usize::from_str_radix(end, 16).ok()?,
        offset,
    };
    Some((mapping, (makedev(major, minor), inode)))
}

/// glibc's `makedev` encoding, which `st_dev` uses.
fn makedev(major: u64, minor: u64) -> u64 {
    ((major & 0xffff_f000) << 32)
        | ((major & 0x0000_0fff) << 8)
        | ((minor & 0xffff_ff00) << 12)
        | (minor & 0x0000_00ff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_line() {
        let (m, dev_ino) = parse_maps_line(
            "5581e4a00000-5581e4b23000 r--p 00002000 fd:01 1835043   /usr/bin/stigmer (deleted)",
        )
        .unwrap();
        assert_eq!(m, Mapping { start: 0x5581e4a00000, end: 0x5581e4b23000, offset: 0x2000 });
        assert_eq!(dev_ino, (makedev(0xfd, 1), 1835043));
        assert!(parse_maps_line("7ffd1000-7ffd2000 rw-p 00000000 00:00 0   [stack]").is_none());
    }

    #[test]
    fn locate_spans_contiguous_mappings() {
        let maps = [
            Mapping { start: 0x1000, end: 0x3000, offset: 0 },
            Mapping { start: 0x3000, end: 0x5000, offset: 0x2000 },
            Mapping { start: 0x9000, end: 0xa000, offset: 0x4000 },
        ];
        assert_eq!(locate(&maps, 0x1800, 0x100), Some(0x800));
        assert_eq!(locate(&maps, 0x2800, 0x2000), Some(0x1800), "across two mappings");
        assert_eq!(locate(&maps, 0x4800, 0x1000), None, "runs into a gap");
        assert_eq!(locate(&maps, 0x8000, 1), None, "not mapped");
    }

    #[test]
    fn sealing_waits_out_a_busy_memfd() {
        let payload = Payload::from_bytes("busy", vec![1u8; 4096]);
        let memfd = fill(create(&payload).unwrap(), &payload).unwrap();
        // A writable shared mapping makes F_SEAL_WRITE fail with EBUSY, as
        // pinned pages do; it goes away after 50 ms.
        // SAFETY: a fresh shared mapping of a 4 KiB memfd, unmapped once by
        // the thread below and never dereferenced.
        let map = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                4096,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::SHARED,
                memfd.as_file(),
                0,
            )
        }
        .unwrap() as usize;
        let unmap = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            // SAFETY: unmaps exactly the mapping made above, once.
            unsafe { rustix::mm::munmap(map as *mut _, 4096) }.unwrap();
        });
        let fd = seal(memfd, &payload).expect("sealing succeeds once the mapping is gone");
        unmap.join().unwrap();
        let seals = rustix::fs::fcntl_get_seals(&fd).unwrap();
        assert!(seals.contains(SealFlags::WRITE | SealFlags::SEAL));
    }

    #[test]
    fn the_real_executable_is_found() {
        static DATA: [u8; 4096] = [7; 4096];
        let exe = SelfExe::get().expect("/proc/self/exe is readable in tests");
        let (file, offset) = exe.locate(&DATA).expect("a static lives in a file mapping");
        let mut buf = [0; 4096];
        std::os::unix::fs::FileExt::read_exact_at(file, &mut buf, offset).unwrap();
        assert_eq!(buf, DATA);
    }
}
