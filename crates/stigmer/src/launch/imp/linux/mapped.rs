//! The mapped backend (Linux): an ELF payload runs from stigmer's own file,
//! its segments mapped straight from the page cache, as the kernel maps a
//! program it execs from disk. Nothing is copied, nothing is pinned.
//!
//! # How
//!
//! Before the fork (in the parent, where allocating is fine), [`Launch`]
//! gathers everything: the payload's segments (at their offset in stigmer's
//! file, which the build places on a 64 KiB boundary), its `PT_INTERP`
//! loader opened and read, argv and the environment, a fresh `AT_RANDOM`,
//! the auxiliary vector stigmer itself got from the kernel, and where the
//! vDSO is. In the child (a `pre_exec` step: only raw system calls from
//! there on, no allocation, no lock), [`Launch::load`]:
//!
//! 1. reserves the payload's address range (an `ET_EXEC` at its own
//!    addresses, `MAP_FIXED_NOREPLACE`; a PIE at a random base above
//!    two thirds of the address space, as `binfmt_elf` puts it) and maps each
//!    `PT_LOAD` over it from stigmer's file, `MAP_PRIVATE`, zeroing the
//!    tail of the last file page and mapping anonymous pages for the rest of
//!    `p_memsz` (`.bss`); the same for the loader, at a base `mmap` picks;
//! 2. maps a new stack and lays out on it what the kernel lays out
//!    (`create_elf_tables`): argc, argv, envp, the auxiliary vector with the
//!    payload's `AT_PHDR`, `AT_ENTRY`, `AT_BASE`..., and the strings;
//! 3. tells the kernel where argv, the environment, the auxiliary vector and
//!    the heap now are (`prctl(PR_SET_MM_MAP)`, which needs no privilege
//!    when it does not change `/proc/PID/exe`), so that `/proc/PID/cmdline`
//!    shows the payload's argv and `brk(2)` starts after its image;
//! 4. undoes what `execve` undoes: glibc's rseq registration, the robust
//!    futex list, `clear_child_tid`, the alternate signal stack, signal
//!    handlers (an ignored signal stays ignored, but for SIGPIPE, which
//!    std ignored for itself), close-on-exec descriptors; names the process
//!    after the payload (`PR_SET_NAME`);
//! 5. jumps to [`jump`], which unmaps every page of stigmer's (its code,
//!    heap, stacks, libraries: everything but the payload, its loader, the
//!    new stack, the vDSO and the page [`jump`] itself is on), resets the
//!    floating-point state and the registers, and jumps to the entry point
//!    (the loader's, for a dynamic payload) with the new stack.
//!
//! Everything up to step 4 can fail, and then the error is the spawn's (or
//! `run`'s, which falls back to the memfd): what was mapped is unmapped
//! again. From step 4 on nothing can fail that would leave the process
//! half-made.
//!
//! # What differs from `execve`
//! `/proc/PID/exe` is stigmer; one page of stigmer's code stays mapped;
//! POSIX timers and System V shared memory attachments stigmer had are kept
//! (it has none); capabilities are not recomputed (stigmer is never
//! set-user-ID); the process keeps stigmer's `AT_SECURE` (0).
//!
//! # References
//! - execve(2) ("effect on process attributes"), elf(5), getauxval(3),
//!   prctl(2) `PR_SET_MM_MAP`, rseq(2), signal-safety(7)
//! - the kernel's `fs/binfmt_elf.c`: `load_elf_binary`, `elf_load` (file
//!   pages, `padzero`, anonymous `.bss`), `create_elf_tables` (stack
//!   layout and auxiliary vector), `ELF_ET_DYN_BASE` and
//!   `arch_mmap_rnd` (where a PIE goes), `arch_randomize_brk`
//! - the System V x86-64 and AArch64 ELF ABIs: the registers at the entry
//!   point (`%rdx`/`x0` = 0, no `atexit` function), a 16-byte aligned stack

#![allow(unsafe_code)]

use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, Read as _};
use std::os::fd::{AsRawFd as _, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::FileExt as _;
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command};
use std::sync::{Arc, OnceLock};

use nix::libc as c;

use super::elf::{Elf, page_down, page_up};

/// How big a stack the payload starts with, on top of its strings: it
/// grows down from there (`MAP_GROWSDOWN`) as the main thread's does, up to
/// `RLIMIT_STACK`.
const STACK: usize = 256 * 1024;

/// The most address ranges kept through [`jump`]: the payload, its loader,
/// the stack, [`jump`]'s pages, and the kernel's own (vDSO, vvar...).
const MAX_KEEP: usize = 12;

/// `struct prctl_mm_map` of `<linux/prctl.h>`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct MmMap {
    start_code: u64,
    end_code: u64,
    start_data: u64,
    end_data: u64,
    start_brk: u64,
    brk: u64,
    start_stack: u64,
    arg_start: u64,
    arg_end: u64,
    env_start: u64,
    env_end: u64,
    auxv: u64,
    auxv_size: u32,
    exe_fd: u32,
}

const PR_SET_MM_MAP: c::c_ulong = 14;

/// `RSEQ_SIG` of glibc, which the kernel checks when a registration is
/// undone.
#[cfg(target_arch = "x86_64")]
const RSEQ_SIG: u32 = 0x5305_3053;
#[cfg(target_arch = "aarch64")]
const RSEQ_SIG: u32 = 0xd428_bc00;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const RSEQ_SIG: u32 = 0;

/// What this process (stigmer) got from the kernel and shares with every
/// payload it maps, read once.
#[derive(Debug)]
pub(crate) struct Host {
    page: u64,
    /// stigmer's auxiliary vector, but for the entries a payload gets its
    /// own of.
    auxv: Vec<(u64, u64)>,
    platform: Option<CString>,
    base_platform: Option<CString>,
    /// The kernel's mappings a payload keeps: vDSO, vvar.
    special: Vec<(u64, u64)>,
    /// The end of the highest mapping of this process: [`jump`] unmaps
    /// everything below it that is not kept.
    top: u64,
    /// Where a PIE goes before randomisation (`ELF_ET_DYN_BASE`), and how
    /// many bits of pages it is randomised by (`vm.mmap_rnd_bits`; 0 when
    /// randomisation is off).
    dyn_base: u64,
    rnd_bits: u32,
    /// `arch_randomize_brk`: whether the heap's start is randomised.
    brk_rnd: bool,
    /// glibc's rseq registration: `__rseq_offset` from the thread pointer
    /// and `__rseq_size`, when glibc registered one.
    rseq: Option<(isize, u32)>,
}

impl Host {
    /// The host, or why payloads cannot be mapped here.
    pub(crate) fn get() -> Result<&'static Host, &'static str> {
        static HOST: OnceLock<Result<Host, &'static str>> = OnceLock::new();
        HOST.get_or_init(Host::read).as_ref().map_err(|e| *e)
    }

    fn read() -> Result<Host, &'static str> {
        if cfg!(not(any(target_arch = "x86_64", target_arch = "aarch64"))) {
            return Err("no mapped loader for this architecture");
        }
        let page = rustix::param::page_size() as u64;
        let auxv = read_auxv().map_err(|_| "/proc/self/auxv cannot be read")?;
        let (special, top) = read_maps().map_err(|_| "/proc/self/maps cannot be read")?;
        if x86_shadow_stack() {
            return Err("stigmer runs with a shadow stack, which a mapped payload could not keep");
        }
        let window = top.checked_next_power_of_two().ok_or("an address space of unknown size")?;
        let randomize = std::fs::read_to_string("/proc/sys/kernel/randomize_va_space")
            .ok()
            .and_then(|v| v.trim().parse::<u32>().ok())
            .unwrap_or(2);
        // SAFETY: personality(0xffffffff) only reads the persona.
        let persona = unsafe { c::personality(0xffff_ffff) };
        let no_rnd = persona != -1 && persona & c::ADDR_NO_RANDOMIZE != 0;
        let default_bits = if cfg!(target_arch = "x86_64") { 28 } else { 18 };
        let rnd_bits = std::fs::read_to_string("/proc/sys/vm/mmap_rnd_bits")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(default_bits);
        let rnd_bits = if randomize == 0 || no_rnd { 0 } else { rnd_bits };
        let host = Host {
            page,
            platform: aux_string(c::AT_PLATFORM),
            base_platform: aux_string(c::AT_BASE_PLATFORM),
            auxv: auxv.into_iter().filter(|(key, _)| !OWN.contains(key)).collect(),
            special,
            top,
            dyn_base: page_down(window / 3 * 2, page),
            rnd_bits,
            brk_rnd: randomize >= 2 && !no_rnd,
            rseq: glibc_rseq(),
        };
        if host.auxv.len() + OWN.len() > 40 {
            return Err("an auxiliary vector too long to copy");
        }
        Ok(host)
    }

    /// Asks the kernel, in a child that exits at once, for what the loader
    /// needs and not every kernel (or seccomp profile) allows:
    /// `PR_SET_MM_MAP` without privilege (Linux 3.18+, `CONFIG_CHECKPOINT_RESTORE`).
    /// `stigmer doctor` asks; a launch does not need to, since the loader's
    /// own `PR_SET_MM_MAP` comes before anything it cannot undo, and its
    /// refusal is the launch's error.
    pub(crate) fn probe(&self) -> Result<(), &'static str> {
        let now = read_mm().map_err(|_| "/proc/self/stat cannot be read")?;
        // SAFETY: the child makes only raw system calls (mmap, rseq, brk,
        // prctl, _exit) on values made before the fork and on its own
        // state, and exits; the parent waits for it.
        match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Child) => unsafe {
                // The stack the loader maps, and glibc's rseq registration
                // it takes back: a refusal of either is a refusal here.
                let stack = c::mmap(
                    std::ptr::null_mut(),
                    self.page as usize,
                    c::PROT_READ | c::PROT_WRITE,
                    c::MAP_PRIVATE | c::MAP_ANONYMOUS | c::MAP_GROWSDOWN | c::MAP_STACK,
                    -1,
                    0,
                );
                if stack == c::MAP_FAILED {
                    c::_exit(1);
                }
                if let Some((offset, size)) = self.rseq {
                    let area = thread_pointer().wrapping_add_signed(offset);
                    let gone = [size, 32]
                        .into_iter()
                        .any(|len| c::syscall(c::SYS_rseq, area, len, 1, RSEQ_SIG) == 0);
                    if !gone {
                        c::_exit(1);
                    }
                }
                let mut map = now;
                map.brk = c::syscall(c::SYS_brk, 0) as u64;
                map.exe_fd = u32::MAX;
                let ok = c::prctl(
                    c::PR_SET_MM,
                    PR_SET_MM_MAP,
                    &map as *const MmMap,
                    size_of::<MmMap>(),
                    0,
                ) == 0;
                c::_exit(if ok { 0 } else { 1 })
            },
            Ok(nix::unistd::ForkResult::Parent { child }) => {
                match nix::sys::wait::waitpid(child, None) {
                    Ok(nix::sys::wait::WaitStatus::Exited(_, 0)) => Ok(()),
                    _ => Err(
                        "the kernel refuses what the loader needs here (prctl(PR_SET_MM_MAP), a MAP_GROWSDOWN stack or rseq)",
                    ),
                }
            }
            Err(_) => Err("cannot fork to ask the kernel"),
        }
    }
}

/// The auxiliary vector entries a payload gets of its own, not stigmer's.
const OWN: [u64; 10] = [
    c::AT_PHDR,
    c::AT_PHENT,
    c::AT_PHNUM,
    c::AT_BASE,
    c::AT_ENTRY,
    c::AT_EXECFN,
    c::AT_RANDOM,
    c::AT_PLATFORM,
    c::AT_BASE_PLATFORM,
    2, // AT_EXECFD
];

/// `PR_GET_AUXV` (Linux 6.4): the auxiliary vector without a trip through
/// `/proc`.
const PR_GET_AUXV: c::c_int = 0x4155_5856;

fn read_auxv() -> io::Result<Vec<(u64, u64)>> {
    let mut buf = [0u8; 1024];
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`, and
    // returns the vector's whole size.
    let size = unsafe { c::prctl(PR_GET_AUXV, buf.as_mut_ptr(), buf.len(), 0, 0) };
    let bytes = match usize::try_from(size) {
        Ok(size) if size > 0 && size <= buf.len() => buf[..size].to_vec(),
        // An older kernel (EINVAL), or a vector bigger than any seen.
        _ => std::fs::read("/proc/self/auxv")?,
    };
    let word = |b: &[u8]| u64::from_ne_bytes(b.try_into().unwrap_or([0; 8]));
    Ok(bytes
        .chunks_exact(16)
        .map(|pair| (word(&pair[..8]), word(&pair[8..])))
        .take_while(|&(key, _)| key != c::AT_NULL)
        .collect())
}

/// The string an auxiliary vector entry points to.
fn aux_string(key: u64) -> Option<CString> {
    // SAFETY: getauxval only reads the vector the kernel gave this process.
    let ptr = unsafe { c::getauxval(key) } as *const c::c_char;
    // SAFETY: for AT_PLATFORM and AT_BASE_PLATFORM the kernel puts a
    // NUL-terminated string on the initial stack, which lives as long as
    // the process and is never written.
    (!ptr.is_null()).then(|| unsafe { CStr::from_ptr(ptr) }.to_owned())
}

/// The kernel's own mappings (vDSO, vvar) and the end of the highest
/// user mapping, from `/proc/self/maps`.
fn read_maps() -> io::Result<(Vec<(u64, u64)>, u64)> {
    let mut text = String::new();
    File::open("/proc/self/maps")?.read_to_string(&mut text)?;
    let mut special = Vec::new();
    let mut top = 0;
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let Some((start, end)) = fields.next().and_then(|r| r.split_once('-')) else { continue };
        let (Ok(start), Ok(end)) = (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16))
        else {
            continue;
        };
        let name = fields.nth(4).unwrap_or("");
        // [vsyscall] is in the kernel's half, and cannot be unmapped.
        if start >= 1 << 63 || name == "[vsyscall]" {
            continue;
        }
        top = top.max(end);
        if name.starts_with("[v") && name != "[stack]" {
            special.push((start, end));
        }
    }
    Ok((special, top))
}

/// Whether this process has a user shadow stack (x86 CET), which would
/// outlive the stack it shadows: `ARCH_SHSTK_STATUS` (Linux 6.6; before,
/// or built without it, `EINVAL`: none).
#[cfg(target_arch = "x86_64")]
fn x86_shadow_stack() -> bool {
    const ARCH_SHSTK_STATUS: c::c_long = 0x5005;
    const ARCH_SHSTK_SHSTK: u64 = 1;
    let mut features: u64 = 0;
    // SAFETY: the kernel writes one u64 of feature bits into `features`.
    let r = unsafe { c::syscall(c::SYS_arch_prctl, ARCH_SHSTK_STATUS, &mut features as *mut u64) };
    r == 0 && features & ARCH_SHSTK_SHSTK != 0
}

/// No x86 shadow stack elsewhere.
#[cfg(not(target_arch = "x86_64"))]
fn x86_shadow_stack() -> bool {
    false
}

/// glibc's rseq registration of this thread, as the fork copies it to the
/// child: `__rseq_offset` and `__rseq_size` (glibc 2.35+; 0 when it did not
/// register). musl registers none.
fn glibc_rseq() -> Option<(isize, u32)> {
    // SAFETY: dlsym with RTLD_DEFAULT only looks the names up; the symbols,
    // where they exist, are glibc's read-only `ptrdiff_t` and `unsigned int`.
    unsafe {
        let offset = c::dlsym(c::RTLD_DEFAULT, c"__rseq_offset".as_ptr()) as *const isize;
        let size = c::dlsym(c::RTLD_DEFAULT, c"__rseq_size".as_ptr()) as *const u32;
        if offset.is_null() || size.is_null() || *size == 0 {
            return None;
        }
        Some((*offset, *size))
    }
}

/// This process's `prctl_mm_map` now, from `/proc/self/stat` (proc(5)):
/// what the probe sets again.
fn read_mm() -> io::Result<MmMap> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    // Field 3 (state) is the first after the name.
    let fields: Vec<u64> = after.split_ascii_whitespace().map(|f| f.parse().unwrap_or(0)).collect();
    let field = |n: usize| fields.get(n - 3).copied().unwrap_or(0);
    Ok(MmMap {
        start_code: field(26),
        end_code: field(27),
        start_stack: field(28),
        start_data: field(45),
        end_data: field(46),
        start_brk: field(47),
        arg_start: field(48),
        arg_end: field(49),
        env_start: field(50),
        env_end: field(51),
        ..MmMap::default()
    })
}

/// A payload that can be mapped: where its bytes are in stigmer's file and
/// what its headers say.
#[derive(Clone, Debug)]
pub(crate) struct MappedImage {
    /// stigmer's own executable, open.
    exe: &'static File,
    /// The payload's offset in it, and its length.
    offset: u64,
    len: u64,
    /// Its name: the process's, and what [`marker`] says.
    name: Arc<str>,
    elf: Arc<Elf>,
    /// Whether a spawned child that cannot load it runs it from a memfd it
    /// makes instead (see [`MappedImage::with_fallback`]).
    fallback: bool,
}

impl MappedImage {
    /// The image of a payload whose bytes are `data`, at `offset` in
    /// stigmer's file `exe`; or why it cannot be mapped.
    pub(crate) fn new(
        exe: &'static File,
        offset: u64,
        data: &[u8],
        name: &str,
    ) -> Result<MappedImage, &'static str> {
        let host = Host::get()?;
        if offset % host.page != 0 {
            return Err("it is not on a page boundary in stigmer's file");
        }
        let elf = Elf::parse(data, data.len() as u64, host.page)?;
        // Its loader is opened and read at each launch (as the kernel does,
        // so that a glibc upgraded meanwhile comes whole); whether this user
        // can open it for reading, as the loader must and the kernel need
        // not, is known now.
        if let Some(path) = &elf.interp {
            File::open(OsStr::from_bytes(path.to_bytes())).map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => "its loader (PT_INTERP) is missing",
                io::ErrorKind::PermissionDenied => {
                    "its loader (PT_INTERP) cannot be read by this user (exec alone is allowed)"
                }
                _ => "its loader (PT_INTERP) cannot be opened",
            })?;
        }
        Ok(MappedImage {
            exe,
            offset,
            len: data.len() as u64,
            name: name.into(),
            elf: Arc::new(elf),
            fallback: false,
        })
    }

    /// This image, such that a spawned child whose [`Launch::load`] fails
    /// (which undid what it did) runs the payload from a sealed memfd it
    /// fills from the same bytes of stigmer's file, as the memfd backend
    /// would: what `auto` wants, where a child cannot hand the choice back.
    pub(crate) fn with_fallback(mut self) -> MappedImage {
        self.fallback = true;
        self
    }

    /// Spawns `cmd` so that its child becomes the payload, with `argv[0]` =
    /// `argv0`, then `cmd`'s arguments, and this process's environment with
    /// `cmd`'s changes. Everything else `cmd` was given (stdio, working
    /// folder, process group, its own `pre_exec` steps) applies first.
    pub(crate) fn spawn(&self, cmd: &mut Command, argv0: &OsStr) -> io::Result<Child> {
        let argv: Vec<OsString> =
            std::iter::once(argv0.to_owned()).chain(cmd.get_args().map(OsStr::to_owned)).collect();
        let changes: Vec<(OsString, Option<OsString>)> =
            cmd.get_envs().map(|(k, v)| (k.to_owned(), v.map(OsStr::to_owned))).collect();
        let envp = super::spawn::environment(changes.iter().cloned().chain([marker(&self.name)]))?;
        let fallback = match self.fallback {
            true => Some(Fallback::new(self, &argv, changes)?),
            false => None,
        };
        // What cannot be made ready here (the payload's loader unreadable by
        // this user, say) is, with a fallback, a child that runs the memfd.
        let launch = match Launch::new(self, &argv, envp) {
            Ok(launch) => Some(launch),
            Err(e) if fallback.is_some() => {
                tracing::debug!(payload = &*self.name, "cannot map it ({e}): its memfd instead");
                None
            }
            Err(e) => return Err(e),
        };
        // SAFETY: the closure runs in the child between fork and its end
        // (it never returns when it succeeds). `Launch::load` and
        // `Fallback::exec` make only raw system calls on memory made before
        // the fork, allocate nothing and take no lock (see their SAFETY
        // notes); on failure the closure returns an io::Error built from
        // errno, which is the spawn's error.
        unsafe {
            cmd.pre_exec(move || {
                let failed = match &launch {
                    Some(launch) => launch.load(false),
                    None => io::Error::from_raw_os_error(c::ENOEXEC),
                };
                match &fallback {
                    Some(fallback) => Err(fallback.exec()),
                    None => Err(failed),
                }
            });
        }
        cmd.spawn()
    }

    /// Replaces this process with the payload, as `execve` would: `argv`,
    /// this process's environment. Returns only on failure, having undone
    /// what it did, so that the caller may exec the payload another way.
    /// The process must have one thread.
    pub(crate) fn exec(&self, argv: &[OsString]) -> io::Error {
        if std::fs::read_dir("/proc/self/task").map_or(true, |d| d.count() != 1) {
            return io::Error::other("a mapped payload replaces a process of one thread only");
        }
        let envp = match super::spawn::environment([marker(&self.name)].into_iter()) {
            Ok(envp) => envp,
            Err(e) => return e,
        };
        match Launch::new(self, argv, envp) {
            // SAFETY: this process has one thread, so nothing else runs
            // while `load` remaps it; see `Launch::load`.
            Ok(launch) => unsafe { launch.load(true) },
            Err(e) => e,
        }
    }
}

/// What a child runs when it cannot load a mapped payload: a sealed memfd,
/// made and filled in the child, only then.
struct Fallback {
    /// The memfd's name (the payload's), so the process is `memfd:NAME` as
    /// with the memfd backend.
    name: CString,
    /// The payload's argv, and the environment without [`marker`]: run
    /// from a memfd, the payload's `/proc/self/exe` is itself. Only read
    /// through `argv_ptrs` and `envp_ptrs`.
    _argv: Vec<CString>,
    _envp: Vec<CString>,
    argv_ptrs: super::spawn::Ptrs,
    envp_ptrs: super::spawn::Ptrs,
    /// stigmer's file, and where the payload's bytes are in it.
    exe: RawFd,
    offset: u64,
    len: u64,
}

impl Fallback {
    fn new(
        image: &MappedImage,
        argv: &[OsString],
        changes: Vec<(OsString, Option<OsString>)>,
    ) -> io::Result<Fallback> {
        let envp = super::spawn::environment(changes.into_iter())?;
        let c_string = super::spawn::c_string;
        let name = c_string(image.name.as_bytes())?;
        let argv = argv.iter().map(|a| c_string(a.as_bytes())).collect::<io::Result<Vec<_>>>()?;
        Ok(Fallback {
            name,
            argv_ptrs: super::spawn::Ptrs::new(&argv),
            envp_ptrs: super::spawn::Ptrs::new(&envp),
            _argv: argv,
            _envp: envp,
            exe: image.exe.as_raw_fd(),
            offset: image.offset,
            len: image.len,
        })
    }

    /// Makes a memfd, fills it with the payload's bytes from stigmer's file
    /// (`sendfile`), seals it as the memfd backend does and execs it.
    /// Returns only on failure, with the memfd closed.
    ///
    /// Where `execveat` is refused, the same open file is exec'd through
    /// `/proc/self/fd/N`, as [`super::spawn::spawn_fd`] does.
    ///
    /// # Safety
    /// As [`Launch::load`]: in the child, after a `load` that failed. It
    /// makes only raw memfd_create, sendfile, fcntl, execveat, execve and
    /// close calls on descriptors and arrays made before the fork
    /// (`argv_ptrs` and `envp_ptrs` point into `_argv` and `_envp`), and
    /// writes the path into a buffer on its own stack.
    unsafe fn exec(&self) -> io::Error {
        let flags = c::MFD_CLOEXEC | c::MFD_ALLOW_SEALING;
        // SAFETY (the whole block): raw system calls on a NUL-terminated
        // name, descriptors this process holds and arrays made before the
        // fork, which live as long as `launch` and `self`.
        unsafe {
            let mut exec_flag = true;
            let mut fd = c::memfd_create(self.name.as_ptr(), flags | c::MFD_EXEC);
            if fd < 0 && *c::__errno_location() == c::EINVAL {
                // Before Linux 6.3, which does not know MFD_EXEC.
                exec_flag = false;
                fd = c::memfd_create(self.name.as_ptr(), flags);
            }
            if fd < 0 {
                return io::Error::last_os_error();
            }
            let fail = |fd: c::c_int| {
                let e = io::Error::last_os_error();
                c::close(fd);
                e
            };
            let mut offset = self.offset as c::off_t;
            let end = offset + self.len as c::off_t;
            while offset < end {
                // sendfile moves at most 0x7ffff000 bytes per call.
                let chunk = ((end - offset) as usize).min(0x7fff_f000);
                if c::sendfile(fd, self.exe, &mut offset, chunk) <= 0 {
                    return fail(fd);
                }
            }
            let seals = c::F_SEAL_SHRINK | c::F_SEAL_GROW | c::F_SEAL_WRITE | c::F_SEAL_SEAL;
            let exec_seal = if exec_flag { c::F_SEAL_EXEC } else { 0 };
            if c::fcntl(fd, c::F_ADD_SEALS, seals | exec_seal) == -1 {
                return fail(fd);
            }
            c::syscall(
                c::SYS_execveat,
                fd,
                c"".as_ptr(),
                self.argv_ptrs.as_ptr(),
                self.envp_ptrs.as_ptr(),
                c::AT_EMPTY_PATH,
            );
            let refused = io::Error::last_os_error();
            let path = proc_fd_path(fd);
            c::execve(path.as_ptr().cast(), self.argv_ptrs.as_ptr(), self.envp_ptrs.as_ptr());
            c::close(fd);
            refused
        }
    }
}

/// `/proc/self/fd/N`, NUL-terminated, in a buffer of its own: made without
/// allocating, for a forked child.
fn proc_fd_path(fd: c::c_int) -> [u8; 32] {
    let mut path = [0u8; 32];
    let prefix = b"/proc/self/fd/";
    path[..prefix.len()].copy_from_slice(prefix);
    let mut digits = [0u8; 10];
    let mut n = fd.unsigned_abs();
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for (i, d) in digits[..len].iter().rev().enumerate() {
        path[prefix.len() + i] = *d;
    }
    path
}

/// The variable a mapped payload gets: its `/proc/self/exe` is stigmer,
/// and this tells a re-exec through it which payload to run (see
/// [`crate::env::STIGMER_MAPPED`]).
fn marker(name: &str) -> (OsString, Option<OsString>) {
    (crate::env::STIGMER_MAPPED.into(), Some(name.into()))
}

/// An ELF file to map: its headers, the descriptor its bytes are read from
/// and where they start in it.
struct Object {
    elf: Arc<Elf>,
    fd: RawFd,
    offset: u64,
}

/// Everything the child needs, made before the fork.
struct Launch {
    host: &'static Host,
    payload: Object,
    /// The loader, open (`PT_INTERP`).
    interp: Option<(OwnedFd, Object)>,
    argv: Vec<CString>,
    envp: Vec<CString>,
    /// `AT_EXECFN` and the process name (`comm`, at most 15 bytes).
    execfn: CString,
    comm: [u8; 16],
    /// `AT_RANDOM`, then the randomisation of the PIE base and of the heap.
    random: [u8; 16],
    pie_rnd: u64,
    brk_rnd: u64,
    /// The address range of [`jump`], kept mapped through it.
    jump: (u64, u64),
}

impl Launch {
    fn new(image: &MappedImage, argv: &[OsString], envp: Vec<CString>) -> io::Result<Launch> {
        let name = &*image.name;
        let host = Host::get().map_err(io::Error::other)?;
        let c_string = super::spawn::c_string;
        let argv = argv.iter().map(|a| c_string(a.as_bytes())).collect::<io::Result<Vec<_>>>()?;
        let interp = match &image.elf.interp {
            None => None,
            Some(path) => Some(open_interp(path, host.page)?),
        };
        let mut random = [0u8; 32];
        rustix::rand::getrandom(&mut random, rustix::rand::GetRandomFlags::empty())?;
        let word = |b: &[u8]| u64::from_ne_bytes(b.try_into().unwrap_or([0; 8]));
        let mut comm = [0u8; 16];
        let short = &name.as_bytes()[..name.len().min(15)];
        comm[..short.len()].copy_from_slice(short);
        let page = host.page;
        let at = jump as *const () as u64;
        Ok(Launch {
            host,
            payload: Object {
                elf: Arc::clone(&image.elf),
                fd: image.exe.as_raw_fd(),
                offset: image.offset,
            },
            interp,
            argv,
            envp,
            execfn: c_string(name.as_bytes())?,
            comm,
            random: random[..16].try_into().unwrap_or([0; 16]),
            pie_rnd: word(&random[16..24]),
            brk_rnd: word(&random[24..32]),
            // The jump is a few dozen bytes: two pages hold it wherever it
            // starts.
            jump: (page_down(at, page), page_down(at, page) + 2 * page),
        })
    }

    /// Turns this process into the payload (see the module's notes).
    /// Returns only on failure, with everything it mapped unmapped again;
    /// `in_place`: this is stigmer's own process (`run`), not a child.
    ///
    /// # Safety
    /// The process must have one thread (a child after `fork`, or a
    /// single-threaded process), and nothing may run in it while this does
    /// but signal handlers. It makes only raw system calls and writes only
    /// into memory it maps itself, with values computed before the fork.
    unsafe fn load(&self, in_place: bool) -> io::Error {
        let host = self.host;
        let page = host.page;
        let mut keep = Ranges::new();
        let fail = |keep: &Ranges, err: io::Error| {
            for &(start, end) in keep.as_slice() {
                // SAFETY: these are ranges this function mapped.
                unsafe { c::munmap(start as *mut c::c_void, (end - start) as usize) };
            }
            err
        };
        // 1. The payload and its loader.
        let pie_base = {
            let (lo, hi) = self.payload.elf.span(page);
            let rnd = if host.rnd_bits == 0 {
                0
            } else {
                (self.pie_rnd & ((1u64 << host.rnd_bits.min(40)) - 1)) * page
            };
            let base = page_down(host.dyn_base.saturating_add(rnd), page);
            // Fall back to a place mmap picks if that would not fit.
            if base.saturating_add(hi - lo) < host.top.next_power_of_two() {
                Some(base)
            } else {
                None
            }
        };
        // SAFETY: see `map`.
        let base = match unsafe { map(&self.payload, pie_base, page) } {
            Ok((base, range)) => {
                keep.push(range);
                base
            }
            Err(e) => return fail(&keep, e),
        };
        let (entry, interp_base) = match &self.interp {
            None => (base + self.payload.elf.entry, 0),
            // SAFETY: see `map`.
            Some((_, interp)) => match unsafe { map(interp, None, page) } {
                Ok((ibase, range)) => {
                    keep.push(range);
                    (ibase + interp.elf.entry, ibase)
                }
                Err(e) => return fail(&keep, e),
            },
        };
        // 2. The stack.
        let strings: usize =
            self.argv.iter().chain(&self.envp).map(|s| s.as_bytes().len() + 1).sum();
        let words = 3 + self.argv.len() + self.envp.len() + 2 * (host.auxv.len() + OWN.len() + 1);
        let size = page_up((STACK + strings + 8 * words + 256) as u64, page) as usize;
        let prot = c::PROT_READ
            | c::PROT_WRITE
            | if self.payload.elf.exec_stack { c::PROT_EXEC } else { 0 };
        // SAFETY: a new anonymous mapping where the kernel chooses.
        let stack = unsafe {
            c::mmap(
                std::ptr::null_mut(),
                size,
                prot,
                c::MAP_PRIVATE | c::MAP_ANONYMOUS | c::MAP_GROWSDOWN | c::MAP_STACK,
                -1,
                0,
            )
        };
        if stack == c::MAP_FAILED {
            return fail(&keep, io::Error::last_os_error());
        }
        let (stack_lo, stack_hi) = (stack as u64, stack as u64 + size as u64);
        keep.push((stack_lo, stack_hi));
        let image = Image { base, interp_base, entry: base + self.payload.elf.entry };
        // SAFETY: the stack was just mapped, writable, `size` bytes, which
        // `words` and `strings` fit in with room to spare.
        let frame = unsafe { self.lay_out(stack_hi, &image) };
        // 3. What execve resets, checked.
        // SAFETY: raw system calls on this thread's own state, as execve
        // would reset it; see `reset`.
        let rseq = match unsafe { self.reset(in_place) } {
            Ok(rseq) => rseq,
            Err(e) => return fail(&keep, e),
        };
        // 4. Where things are, for /proc/PID/cmdline and brk(2).
        let mut mm = self.mm_map(&image, &frame);
        // SAFETY: PR_SET_MM_MAP reads the struct, and the auxiliary vector
        // it points to, which lie in memory this function owns.
        let r = unsafe {
            c::prctl(c::PR_SET_MM, PR_SET_MM_MAP, &mut mm as *mut MmMap, size_of::<MmMap>(), 0)
        };
        if r != 0 {
            let e = io::Error::last_os_error();
            // SAFETY: puts back the registration `reset` took away.
            unsafe { register_rseq(rseq) };
            return fail(&keep, e);
        }
        // From here on, nothing fails.
        // SAFETY: see `finish_reset`.
        unsafe { self.finish_reset() };
        // 5. What stays mapped through the jump.
        keep.push(self.jump);
        for &range in &host.special {
            keep.push(range);
        }
        let gaps = keep.gaps(host.top.max(keep.end()));
        // The gaps go at the bottom of the new stack, which stays mapped
        // and which the payload has not used yet.
        let table = stack_lo as *mut [u64; 2];
        for (i, gap) in gaps.as_slice().iter().enumerate() {
            // SAFETY: MAX_KEEP + 1 pairs fit many times in the stack's
            // lowest STACK bytes, below anything `lay_out` wrote.
            unsafe { table.add(i).write([gap.0, gap.1 - gap.0]) };
        }
        close_on_exec_descriptors();
        // SAFETY: see `jump`: everything it keeps is mapped, the stack
        // frame is laid out, and the entry point is the payload's (or its
        // loader's), mapped executable.
        unsafe { jump(table as *const [u64; 2], gaps.len(), frame.sp, entry) }
    }

    /// Writes the initial stack below `top`, as `create_elf_tables` does:
    /// from the top down, the execfn string, the environment strings, the
    /// argument strings, the platform strings, the 16 random bytes; then,
    /// 16-byte aligned, argc, argv, NULL, envp, NULL, the auxiliary vector.
    ///
    /// # Safety
    /// `[top - size, top)` must be writable memory of this process, big
    /// enough for what it writes.
    unsafe fn lay_out(&self, top: u64, image: &Image) -> Frame {
        let host = self.host;
        let mut p = top - 16;
        /// Puts `bytes` and a NUL right below `*p`, moving `*p` down.
        ///
        /// # Safety
        /// The bytes below `*p` must be the caller's to write.
        unsafe fn put(p: &mut u64, bytes: &[u8]) -> u64 {
            *p -= bytes.len() as u64 + 1;
            // SAFETY: as the function says.
            unsafe {
                std::ptr::copy_nonoverlapping(bytes.as_ptr(), *p as *mut u8, bytes.len());
                (*p as *mut u8).add(bytes.len()).write(0);
            }
            *p
        }
        // SAFETY (every `put` below): into the caller's stack, each below
        // the last, far above its bottom.
        let execfn = unsafe { put(&mut p, self.execfn.as_bytes()) };
        // Strings go in reverse so that they lie in order, argv below envp,
        // contiguous: /proc/PID/cmdline reads [arg_start, arg_end).
        let env_end = execfn;
        for s in self.envp.iter().rev() {
            unsafe { put(&mut p, s.as_bytes()) };
        }
        let env_start = p;
        for s in self.argv.iter().rev() {
            unsafe { put(&mut p, s.as_bytes()) };
        }
        let arg_start = p;
        let platform = host.platform.as_ref().map(|s| unsafe { put(&mut p, s.as_bytes()) });
        let base_platform =
            host.base_platform.as_ref().map(|s| unsafe { put(&mut p, s.as_bytes()) });
        p = (p - 16) & !15;
        let random = p;
        // SAFETY: 16 bytes below the strings.
        unsafe { std::ptr::copy_nonoverlapping(self.random.as_ptr(), p as *mut u8, 16) };

        let mut auxv = [(0u64, 0u64); 64];
        let mut n = 0;
        let mut aux = |key: u64, value: u64| {
            if n < auxv.len() - 1 {
                auxv[n] = (key, value);
                n += 1;
            }
        };
        for &(key, value) in &host.auxv {
            aux(key, value);
        }
        let elf = &self.payload.elf;
        aux(c::AT_PHDR, image.base + elf.phdr);
        aux(c::AT_PHENT, 56);
        aux(c::AT_PHNUM, elf.phnum);
        aux(c::AT_BASE, image.interp_base);
        aux(c::AT_ENTRY, image.entry);
        aux(c::AT_RANDOM, random);
        aux(c::AT_EXECFN, execfn);
        if let Some(platform) = platform {
            aux(c::AT_PLATFORM, platform);
        }
        if let Some(base_platform) = base_platform {
            aux(c::AT_BASE_PLATFORM, base_platform);
        }
        // AT_NULL ends it: auxv[n] is (0, 0).
        let pairs = n + 1;
        let words = 1 + self.argv.len() + 1 + self.envp.len() + 1 + 2 * pairs;
        let sp = (p - 8 * words as u64) & !15;
        let base = sp as *mut u64;
        let mut i = 0;
        // SAFETY: `words` words from `sp`, below the random bytes.
        let mut push = |value: u64| {
            unsafe { base.add(i).write(value) };
            i += 1;
        };
        push(self.argv.len() as u64);
        let mut s = arg_start;
        for a in &self.argv {
            push(s);
            s += a.as_bytes().len() as u64 + 1;
        }
        push(0);
        let mut s = env_start;
        for e in &self.envp {
            push(s);
            s += e.as_bytes().len() as u64 + 1;
        }
        push(0);
        let auxv_at = sp + 8 * (self.argv.len() + self.envp.len() + 3) as u64;
        for &(key, value) in &auxv[..pairs] {
            push(key);
            push(value);
        }
        Frame {
            sp,
            arg_start,
            arg_end: env_start,
            env_start,
            env_end,
            auxv: auxv_at,
            auxv_len: pairs,
        }
    }

    /// The `prctl_mm_map` of the payload: its code, data, heap, stack,
    /// argv and environment.
    fn mm_map(&self, image: &Image, frame: &Frame) -> MmMap {
        let page = self.host.page;
        let loads = &self.payload.elf.loads;
        let code = loads.iter().filter(|l| l.prot & c::PROT_EXEC != 0);
        let start_code = code.clone().map(|l| l.vaddr).min().unwrap_or(0) + image.base;
        let end_code = code.map(|l| l.vaddr + l.filesz).max().unwrap_or(0) + image.base;
        let data = loads.iter().filter(|l| l.prot & c::PROT_WRITE != 0);
        let start_data = data.clone().map(|l| l.vaddr + image.base).min().unwrap_or(end_code);
        let end_data = data.map(|l| l.vaddr + l.filesz + image.base).max().unwrap_or(end_code);
        let (_, end) = self.payload.elf.span(page);
        // arch_randomize_brk: up to 32 MiB above the image.
        let rnd = if self.host.brk_rnd { (self.brk_rnd % (32 << 20)) & !(page - 1) } else { 0 };
        let brk = image.base + end + rnd;
        MmMap {
            start_code,
            end_code,
            start_data,
            end_data: end_data.max(start_data),
            start_brk: brk,
            brk,
            start_stack: frame.sp,
            arg_start: frame.arg_start,
            arg_end: frame.arg_end,
            env_start: frame.env_start,
            env_end: frame.env_end,
            auxv: frame.auxv,
            auxv_size: (frame.auxv_len * 16) as u32,
            exe_fd: u32::MAX,
        }
    }

    /// Undoes, for this thread, what `execve` undoes and a mapped payload
    /// would otherwise inherit and could die of: glibc's rseq registration
    /// (in stigmer's TLS, about to be unmapped: the kernel would write to
    /// it, rseq(2)), the alternate signal stack and the caught signals'
    /// handlers (both in stigmer's memory). Each refusal is an error, with
    /// the rseq registration put back; what was reset before it stays
    /// reset, as harmless to a process about to exec the payload from a
    /// memfd instead.
    ///
    /// # Safety
    /// Only raw system calls on this thread's own state; after it, no code
    /// of stigmer may rely on its signal handlers or alternate stack.
    unsafe fn reset(&self, in_place: bool) -> io::Result<Rseq> {
        // SAFETY (the whole block): each call below is one async-signal-safe
        // system call on this thread's own registration or disposition.
        unsafe {
            let rseq = match self.host.rseq {
                None => None,
                Some((offset, size)) => {
                    let area = thread_pointer().wrapping_add_signed(offset);
                    // A kernel older than glibc registered 32 bytes.
                    let unregistered = [size, 32]
                        .into_iter()
                        .find(|&len| c::syscall(c::SYS_rseq, area, len, 1, RSEQ_SIG) == 0);
                    match unregistered {
                        Some(len) => Some((area, len)),
                        None => return Err(io::Error::last_os_error()),
                    }
                }
            };
            let undo = |err: io::Error| {
                register_rseq(rseq);
                err
            };
            let disable =
                c::stack_t { ss_sp: std::ptr::null_mut(), ss_flags: c::SS_DISABLE, ss_size: 0 };
            if c::sigaltstack(&disable, std::ptr::null_mut()) != 0 {
                return Err(undo(io::Error::last_os_error()));
            }
            // Caught signals go back to their default; ignored ones stay
            // ignored, as across execve, but for SIGPIPE, which std ignores
            // for itself at start (a spawned child has had it reset already).
            for sig in 1..=64 {
                if sig == c::SIGKILL || sig == c::SIGSTOP {
                    continue;
                }
                let mut old = [0usize; 4];
                let got = c::syscall(
                    c::SYS_rt_sigaction,
                    sig,
                    std::ptr::null::<u8>(),
                    old.as_mut_ptr(),
                    8,
                );
                if got != 0 {
                    // A signal number this kernel does not have.
                    if *c::__errno_location() == c::EINVAL {
                        continue;
                    }
                    return Err(undo(io::Error::last_os_error()));
                }
                if old[0] > 1 || (in_place && sig == c::SIGPIPE) {
                    let default = [0usize; 4];
                    let set = c::syscall(
                        c::SYS_rt_sigaction,
                        sig,
                        default.as_ptr(),
                        std::ptr::null_mut::<u8>(),
                        8,
                    );
                    if set != 0 {
                        return Err(undo(io::Error::last_os_error()));
                    }
                }
            }
            Ok(rseq)
        }
    }

    /// What is left to undo once nothing can fail: the robust futex list
    /// and `clear_child_tid` (a refusal of either costs at most a write the
    /// kernel makes at exit, into memory it then finds unmapped or the
    /// payload's), and the process's name.
    ///
    /// # Safety
    /// As [`Launch::reset`].
    unsafe fn finish_reset(&self) {
        // SAFETY: raw system calls on this thread's own state and a
        // NUL-terminated name made before the fork.
        unsafe {
            c::syscall(c::SYS_set_robust_list, 0usize, 24usize);
            c::syscall(c::SYS_set_tid_address, 0usize);
            c::prctl(c::PR_SET_NAME, self.comm.as_ptr(), 0, 0, 0);
        }
    }
}

/// An rseq registration taken away by [`Launch::reset`]: the area and its
/// length.
type Rseq = Option<(usize, u32)>;

/// Registers `rseq` again (after a load that failed).
///
/// # Safety
/// `rseq` must be what [`Launch::reset`] unregistered on this thread, whose
/// TLS is still mapped.
unsafe fn register_rseq(rseq: Rseq) {
    if let Some((area, len)) = rseq {
        // SAFETY: as the function says; one system call.
        unsafe { c::syscall(c::SYS_rseq, area, len, 0, RSEQ_SIG) };
    }
}

/// Where an image was placed.
struct Image {
    base: u64,
    interp_base: u64,
    entry: u64,
}

/// What [`Launch::lay_out`] wrote.
struct Frame {
    sp: u64,
    arg_start: u64,
    arg_end: u64,
    env_start: u64,
    env_end: u64,
    auxv: u64,
    auxv_len: usize,
}

/// Opens the dynamic loader at `path` and reads its headers.
fn open_interp(path: &CStr, page: u64) -> io::Result<(OwnedFd, Object)> {
    let file = File::open(OsStr::from_bytes(path.to_bytes()))?;
    let len = file.metadata()?.len();
    let mut head = vec![0; len.min(64 * 1024) as usize];
    file.read_exact_at(&mut head, 0)?;
    let elf = Elf::parse(&head, len, page)
        .map_err(|why| io::Error::other(format!("the loader {}: {why}", path.to_string_lossy())))?;
    if elf.interp.is_some() {
        return Err(io::Error::other("the loader itself asks for a loader"));
    }
    let fd = OwnedFd::from(file);
    let object = Object { elf: Arc::new(elf), fd: fd.as_raw_fd(), offset: 0 };
    Ok((fd, object))
}

/// Maps `object`'s segments: at its own addresses (`ET_EXEC`), else at
/// `base` if given and free, else where the kernel picks. Returns the base
/// added to its addresses and the range it reserved.
///
/// # Safety
/// Only creates mappings: over nothing of this process's (the range is
/// reserved first, with `MAP_FIXED_NOREPLACE` where an address is asked for)
/// and then over that reservation, `MAP_FIXED`.
unsafe fn map(object: &Object, base: Option<u64>, page: u64) -> io::Result<(u64, (u64, u64))> {
    let (lo, hi) = object.elf.span(page);
    let len = (hi - lo) as usize;
    let reserve = |at: u64, flags: c::c_int| {
        // SAFETY: a new PROT_NONE anonymous mapping; with
        // MAP_FIXED_NOREPLACE it fails rather than replace anything.
        let got = unsafe {
            c::mmap(
                at as *mut c::c_void,
                len,
                c::PROT_NONE,
                c::MAP_PRIVATE | c::MAP_ANONYMOUS | flags,
                -1,
                0,
            )
        };
        if got == c::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        if flags != 0 && got as u64 != at {
            // A kernel before 4.17 took the address as a hint.
            // SAFETY: unmaps what was just mapped.
            unsafe { c::munmap(got, len) };
            return Err(io::Error::from_raw_os_error(c::EEXIST));
        }
        Ok(got as u64)
    };
    let start = if !object.elf.relocatable {
        reserve(lo, c::MAP_FIXED_NOREPLACE)?
    } else {
        match base.map(|b| reserve(b + lo, c::MAP_FIXED_NOREPLACE)) {
            Some(Ok(start)) => start,
            _ => reserve(0, 0)?,
        }
    };
    let bias = start - lo;
    for load in &object.elf.loads {
        let at = bias + load.vaddr;
        let map_start = page_down(at, page);
        let file_end = at + load.filesz;
        let mem_end = at + load.memsz;
        let fixed = c::MAP_PRIVATE | c::MAP_FIXED;
        if load.filesz > 0 {
            let off = object.offset + load.offset - (at - map_start);
            // SAFETY: over the reservation made above.
            let got = unsafe {
                c::mmap(
                    map_start as *mut c::c_void,
                    (page_up(file_end, page) - map_start) as usize,
                    load.prot,
                    fixed,
                    object.fd,
                    off as c::off_t,
                )
            };
            if got == c::MAP_FAILED {
                let err = io::Error::last_os_error();
                // SAFETY: the reservation, ours.
                unsafe { c::munmap(start as *mut c::c_void, len) };
                return Err(err);
            }
            // padzero: the rest of the last file page is zeroes, as the
            // kernel leaves it (ld.so's first allocations live there).
            if load.prot & c::PROT_WRITE != 0 {
                let zero = (page_up(file_end, page) - file_end) as usize;
                // SAFETY: inside the writable mapping just made.
                unsafe { std::ptr::write_bytes(file_end as *mut u8, 0, zero) };
            }
        }
        let anon_start = if load.filesz > 0 { page_up(file_end, page) } else { map_start };
        let anon_end = page_up(mem_end, page);
        if anon_end > anon_start {
            // SAFETY: over the reservation made above.
            let got = unsafe {
                c::mmap(
                    anon_start as *mut c::c_void,
                    (anon_end - anon_start) as usize,
                    load.prot,
                    fixed | c::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if got == c::MAP_FAILED {
                let err = io::Error::last_os_error();
                // SAFETY: the reservation, ours.
                unsafe { c::munmap(start as *mut c::c_void, len) };
                return Err(err);
            }
        }
    }
    Ok((bias, (start, start + len as u64)))
}

/// Closes every close-on-exec descriptor, as `execve` does (std's own
/// pipe among them, which tells the parent that the "exec" succeeded).
fn close_on_exec_descriptors() {
    // SAFETY (the whole function): raw open, getdents64, fcntl and close
    // on this process's descriptors, into a buffer on the stack.
    unsafe {
        let dir = c::open(c"/proc/self/fd".as_ptr(), c::O_RDONLY | c::O_DIRECTORY | c::O_CLOEXEC);
        let close_if_cloexec = |fd: c::c_int| {
            let flags = c::fcntl(fd, c::F_GETFD);
            if flags != -1 && flags & c::FD_CLOEXEC != 0 {
                c::close(fd);
            }
        };
        if dir < 0 {
            for fd in 0..4096 {
                close_if_cloexec(fd);
            }
            return;
        }
        let mut buf = [0u8; 4096];
        loop {
            let n = c::syscall(c::SYS_getdents64, dir, buf.as_mut_ptr(), buf.len());
            if n <= 0 {
                break;
            }
            let mut at = 0usize;
            while at + 19 < n as usize {
                // struct linux_dirent64: d_ino, d_off (8 bytes each),
                // d_reclen (2), d_type (1), d_name.
                let reclen = u16::from_ne_bytes([buf[at + 16], buf[at + 17]]) as usize;
                if reclen == 0 {
                    break;
                }
                let mut fd: c::c_int = 0;
                let mut digits = 0;
                for &b in &buf[at + 19..(at + reclen).min(n as usize)] {
                    if !b.is_ascii_digit() {
                        break;
                    }
                    fd = fd.saturating_mul(10).saturating_add((b - b'0') as c::c_int);
                    digits += 1;
                }
                if digits > 0 && fd != dir {
                    close_if_cloexec(fd);
                }
                at += reclen;
            }
        }
        c::close(dir);
    }
}

/// The address ranges kept through [`jump`], in a fixed array (no
/// allocation after the fork).
struct Ranges {
    ranges: [(u64, u64); MAX_KEEP],
    len: usize,
}

impl Ranges {
    fn new() -> Ranges {
        Ranges { ranges: [(0, 0); MAX_KEEP], len: 0 }
    }

    fn push(&mut self, range: (u64, u64)) {
        if self.len < MAX_KEEP {
            self.ranges[self.len] = range;
            self.len += 1;
        }
    }

    fn as_slice(&self) -> &[(u64, u64)] {
        &self.ranges[..self.len]
    }

    fn len(&self) -> usize {
        self.len
    }

    fn end(&self) -> u64 {
        self.as_slice().iter().map(|r| r.1).max().unwrap_or(0)
    }

    /// What lies between the ranges, from address 0 to `top`: what [`jump`]
    /// unmaps.
    fn gaps(&self, top: u64) -> Ranges {
        let mut sorted = self.ranges;
        let n = self.len;
        sorted[..n].sort_unstable();
        let mut gaps = Ranges::new();
        let mut at = 0;
        for &(start, end) in &sorted[..n] {
            if start > at {
                gaps.push((at, start));
            }
            at = at.max(end);
        }
        if top > at {
            gaps.push((at, top));
        }
        gaps
    }
}

/// This thread's thread pointer, which glibc's `__rseq_offset` is from.
fn thread_pointer() -> usize {
    let tp: usize;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: reads %fs:0, which glibc and musl point at the thread's
    // control block itself (its `self` field): the thread pointer.
    unsafe {
        std::arch::asm!("mov {}, qword ptr fs:[0]", out(reg) tp, options(nostack, readonly, preserves_flags));
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: reads the thread pointer register.
    unsafe {
        std::arch::asm!("mrs {}, tpidr_el0", out(reg) tp, options(nostack, nomem, preserves_flags));
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        tp = 0;
    }
    tp
}

/// Unmaps the `n` ranges of `gaps` (start, length), then starts the
/// payload: the stack pointer at `sp`, every other register zero (`%rdx` /
/// `x0` = 0 means no `atexit` function, per the ABIs), the floating-point
/// state at its defaults, and a jump to `entry`.
///
/// It uses no stack and no memory but `gaps` while it unmaps (its own code
/// and `gaps` are kept), so it can unmap the stack it was called on.
///
/// # Safety
/// Never returns: whatever this process was is gone. `gaps` must not cover
/// this function's code or the table itself; `sp` and `entry` must be a
/// laid-out initial stack and a mapped entry point.
#[inline(never)]
unsafe fn jump(gaps: *const [u64; 2], n: usize, sp: u64, entry: u64) -> ! {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: as the function says.
    unsafe {
        std::arch::asm!(
            "mov r12, rdi",
            "mov r13, rsi",
            "mov r14, rdx",
            "mov r15, rcx",
            "2:",
            "test r13, r13",
            "jz 3f",
            "mov rdi, [r12]",
            "mov rsi, [r12 + 8]",
            "mov eax, 11", // munmap
            "syscall",
            "add r12, 16",
            "dec r13",
            "jmp 2b",
            "3:",
            "mov rsp, r14",
            "mov dword ptr [rsp - 8], 0x1f80",
            "ldmxcsr [rsp - 8]",
            "fninit",
            "cld",
            "xor eax, eax",
            "xor ebx, ebx",
            "xor ecx, ecx",
            "xor edx, edx",
            "xor esi, esi",
            "xor edi, edi",
            "xor ebp, ebp",
            "xor r8d, r8d",
            "xor r9d, r9d",
            "xor r10d, r10d",
            "xor r11d, r11d",
            "xor r12d, r12d",
            "xor r13d, r13d",
            "xor r14d, r14d",
            "jmp r15",
            in("rdi") gaps,
            in("rsi") n,
            in("rdx") sp,
            in("rcx") entry,
            options(noreturn, nostack),
        )
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: as the function says.
    unsafe {
        std::arch::asm!(
            "mov x19, x0",
            "mov x20, x1",
            "mov x21, x2",
            "mov x22, x3",
            "2:",
            "cbz x20, 3f",
            "ldp x0, x1, [x19], #16",
            "mov x8, #215", // munmap
            "svc #0",
            "sub x20, x20, #1",
            "b 2b",
            "3:",
            "mov sp, x21",
            "msr fpcr, xzr",
            "mov x16, x22",
            "mov x0, xzr",
            "mov x1, xzr",
            "mov x2, xzr",
            "mov x3, xzr",
            "mov x4, xzr",
            "mov x5, xzr",
            "mov x6, xzr",
            "mov x7, xzr",
            "mov x8, xzr",
            "mov x9, xzr",
            "mov x10, xzr",
            "mov x11, xzr",
            "mov x12, xzr",
            "mov x13, xzr",
            "mov x14, xzr",
            "mov x15, xzr",
            "mov x17, xzr",
            "mov x18, xzr",
            "mov x19, xzr",
            "mov x20, xzr",
            "mov x21, xzr",
            "mov x22, xzr",
            "mov x23, xzr",
            "mov x24, xzr",
            "mov x25, xzr",
            "mov x26, xzr",
            "mov x27, xzr",
            "mov x28, xzr",
            "mov x29, xzr",
            "mov x30, xzr",
            "br x16",
            in("x0") gaps,
            in("x1") n,
            in("x2") sp,
            in("x3") entry,
            options(noreturn, nostack),
        )
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let _ = (gaps, n, sp, entry);
        // SAFETY: unreachable: Host::get refuses other architectures.
        unsafe { c::_exit(127) }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_auxiliary_vector_is_the_one_proc_shows() {
        let proc: Vec<(u64, u64)> = std::fs::read("/proc/self/auxv")
            .unwrap()
            .chunks_exact(16)
            .map(|p| {
                let word = |b: &[u8]| u64::from_ne_bytes(b.try_into().unwrap());
                (word(&p[..8]), word(&p[8..]))
            })
            .take_while(|&(key, _)| key != 0)
            .collect();
        assert_eq!(super::read_auxv().unwrap(), proc);
    }

    #[test]
    fn proc_fd_paths_are_written_without_allocating() {
        for (fd, want) in [
            (0, "/proc/self/fd/0"),
            (7, "/proc/self/fd/7"),
            (1234567890, "/proc/self/fd/1234567890"),
        ] {
            let path = super::proc_fd_path(fd);
            let got = std::ffi::CStr::from_bytes_until_nul(&path).unwrap();
            assert_eq!(got.to_str().unwrap(), want);
        }
    }

    use super::*;

    #[test]
    fn gaps_cover_everything_but_what_is_kept() {
        let mut keep = Ranges::new();
        keep.push((0x5000, 0x6000));
        keep.push((0x1000, 0x2000));
        keep.push((0x1800, 0x3000));
        let gaps = keep.gaps(0x9000);
        assert_eq!(gaps.as_slice(), &[(0, 0x1000), (0x3000, 0x5000), (0x6000, 0x9000)]);
    }

    #[test]
    fn the_host_can_map() {
        let host = Host::get().unwrap();
        assert!(host.top > 0 && host.dyn_base > 0 && host.dyn_base < host.top);
        assert!(!host.special.is_empty(), "no vDSO found");
    }
}
