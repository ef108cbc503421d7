//! What the mapped backend needs to know of an ELF file, read from its
//! headers (elf(5)) with the `object` crate, and checked the way the
//! kernel's loader (`fs/binfmt_elf.c`) checks it, and a little more: every
//! byte a segment maps must lie inside the payload, since the file mapped is
//! stigmer's own, not the payload's.
//!
//! Nothing here maps anything or needs `unsafe`; `mapped.rs` does that.

use std::ffi::CString;

use object::elf;
use object::read::elf::{FileHeader as _, ProgramHeader as _};

/// An ELF executable, as a loader maps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Elf {
    /// `ET_DYN` (PIE, or a shared object such as `ld.so`): mapped at a base
    /// of the loader's choosing; `ET_EXEC`: at its own addresses.
    pub(crate) relocatable: bool,
    /// `e_entry`, before the base is added.
    pub(crate) entry: u64,
    /// The address of the program headers in memory (`AT_PHDR`), before the
    /// base is added.
    pub(crate) phdr: u64,
    /// `AT_PHNUM`.
    pub(crate) phnum: u64,
    /// The `PT_LOAD` segments, in address order.
    pub(crate) loads: Vec<Load>,
    /// `PT_INTERP`: the dynamic loader's path.
    pub(crate) interp: Option<CString>,
    /// `PT_GNU_STACK` asks for an executable stack.
    pub(crate) exec_stack: bool,
}

/// One `PT_LOAD` segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Load {
    pub(crate) vaddr: u64,
    pub(crate) memsz: u64,
    /// The offset of its bytes in the ELF file (not in stigmer's).
    pub(crate) offset: u64,
    pub(crate) filesz: u64,
    /// `PROT_*` bits.
    pub(crate) prot: i32,
}

/// The `e_machine` of this build's target: payloads of another
/// architecture are not mapped.
#[cfg(target_arch = "x86_64")]
const MACHINE: u16 = elf::EM_X86_64;
#[cfg(target_arch = "aarch64")]
const MACHINE: u16 = elf::EM_AARCH64;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const MACHINE: u16 = elf::EM_NONE;

/// The most address space one image may span: far more than any program,
/// far less than the address space, so that no sum below can overflow.
const MAX_SPAN: u64 = 1 << 40;

/// The most program headers an image may have (the kernel's limit is 64 KiB
/// of them).
const MAX_PHNUM: usize = 1024;

impl Elf {
    /// Reads the headers of the ELF file whose first bytes are `data` (the
    /// whole file, or at least its headers) and whose length is `len`, for
    /// pages of `page` bytes. The error says, in a few words, why it cannot
    /// be mapped (what `stigmer list` shows).
    pub(crate) fn parse(data: &[u8], len: u64, page: u64) -> Result<Elf, &'static str> {
        type Header = elf::FileHeader64<object::NativeEndian>;
        if cfg!(not(target_pointer_width = "64")) || MACHINE == elf::EM_NONE {
            return Err("no mapped loader for this architecture");
        }
        let header = Header::parse(data).map_err(|_| "not a 64-bit ELF file")?;
        let endian = header.endian().map_err(|_| "an ELF file of unknown byte order")?;
        if header.is_big_endian() != cfg!(target_endian = "big") {
            return Err("an ELF file of the other byte order");
        }
        if header.e_machine(endian) != MACHINE {
            return Err("an ELF file for another architecture");
        }
        let relocatable = match header.e_type(endian) {
            elf::ET_EXEC => false,
            elf::ET_DYN => true,
            _ => return Err("an ELF file that is not an executable"),
        };
        let headers = header
            .program_headers(endian, data)
            .map_err(|_| "its program headers are not within its first bytes")?;
        if headers.is_empty() || headers.len() > MAX_PHNUM {
            return Err("an ELF file without a sane number of program headers");
        }
        let phoff = header.e_phoff(endian);
        let mut loads: Vec<Load> = Vec::new();
        let mut interp = None;
        let mut exec_stack = false;
        let mut phdr = None;
        for ph in headers {
            match ph.p_type(endian) {
                elf::PT_LOAD => {
                    let load = Load {
                        vaddr: ph.p_vaddr(endian),
                        memsz: ph.p_memsz(endian),
                        offset: ph.p_offset(endian),
                        filesz: ph.p_filesz(endian),
                        prot: prot(ph.p_flags(endian)),
                    };
                    check_load(&load, loads.last(), len, page)?;
                    loads.push(load);
                }
                elf::PT_INTERP => {
                    let path = ph
                        .interpreter(endian, data)
                        .ok()
                        .flatten()
                        .ok_or("its PT_INTERP is not within its first bytes")?;
                    if interp.is_some() || path.first() != Some(&b'/') {
                        return Err("its PT_INTERP is not one absolute path");
                    }
                    interp = Some(CString::new(path).map_err(|_| "a NUL in its PT_INTERP")?);
                }
                elf::PT_GNU_STACK => exec_stack = ph.p_flags(endian) & elf::PF_X != 0,
                elf::PT_PHDR => phdr = Some(ph.p_vaddr(endian)),
                _ => {}
            }
        }
        let first = loads.first().ok_or("an ELF file without a PT_LOAD segment")?;
        let last = loads.last().unwrap_or(first);
        if last.vaddr + last.memsz - page_down(first.vaddr, page) > MAX_SPAN {
            return Err("an ELF file whose segments span too much address space");
        }
        // The program headers in memory: PT_PHDR's address, or where the
        // segment that holds them maps them (as binfmt_elf does).
        let phdr = match phdr {
            Some(phdr) => phdr,
            None => loads
                .iter()
                .find(|l| l.offset <= phoff && phoff < l.offset + l.filesz)
                .map(|l| l.vaddr + (phoff - l.offset))
                .ok_or("its program headers are not in a PT_LOAD segment")?,
        };
        let entry = header.e_entry(endian);
        let runs = |l: &&Load| l.prot & nix::libc::PROT_EXEC != 0;
        if !loads.iter().filter(runs).any(|l| l.vaddr <= entry && entry < l.vaddr + l.memsz) {
            return Err("its entry point is not in an executable segment");
        }
        Ok(Elf { relocatable, entry, phdr, phnum: headers.len() as u64, loads, interp, exec_stack })
    }

    /// The lowest page and the end (page-rounded) of what its segments
    /// map, before the base is added.
    pub(crate) fn span(&self, page: u64) -> (u64, u64) {
        let first = self.loads.first().map_or(0, |l| l.vaddr);
        let end = self.loads.last().map_or(0, |l| l.vaddr + l.memsz);
        (page_down(first, page), page_up(end, page))
    }
}

/// Checks one `PT_LOAD` against the file's length, the page size and the
/// segment before it.
fn check_load(load: &Load, before: Option<&Load>, len: u64, page: u64) -> Result<(), &'static str> {
    let Load { vaddr, memsz, offset, filesz, .. } = *load;
    if filesz > memsz {
        return Err("a segment with more file bytes than memory");
    }
    if memsz > MAX_SPAN || vaddr > MAX_SPAN * 64 || offset > len || filesz > len - offset {
        return Err("a segment outside the file or the address space");
    }
    // mmap(2) maps whole pages: a segment's file offset and address must
    // agree within a page.
    if offset % page != vaddr % page {
        return Err("a segment whose file offset and address disagree within a page");
    }
    // elf(5): PT_LOAD entries are sorted by address; the kernel also wants
    // them not to overlap, or the later mapping would replace the earlier.
    if let Some(before) = before {
        if page_up(before.vaddr + before.memsz, page) > page_down(vaddr, page) {
            return Err("PT_LOAD segments that overlap or are out of order");
        }
    }
    Ok(())
}

/// `PROT_*` from `PF_*`.
fn prot(flags: u32) -> i32 {
    let mut prot = nix::libc::PROT_NONE;
    if flags & elf::PF_R != 0 {
        prot |= nix::libc::PROT_READ;
    }
    if flags & elf::PF_W != 0 {
        prot |= nix::libc::PROT_WRITE;
    }
    if flags & elf::PF_X != 0 {
        prot |= nix::libc::PROT_EXEC;
    }
    prot
}

pub(crate) fn page_down(x: u64, page: u64) -> u64 {
    x & !(page - 1)
}

pub(crate) fn page_up(x: u64, page: u64) -> u64 {
    x.saturating_add(page - 1) & !(page - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This test binary's own file: a real ELF of this architecture.
    fn own() -> Vec<u8> {
        std::fs::read("/proc/self/exe").unwrap()
    }

    #[test]
    fn reads_a_real_executable() {
        let data = own();
        let elf = Elf::parse(&data, data.len() as u64, 4096).unwrap();
        assert!(!elf.loads.is_empty());
        assert!(elf.loads.iter().any(|l| l.prot & nix::libc::PROT_EXEC != 0));
        let (lo, hi) = elf.span(4096);
        assert!(lo < hi && lo % 4096 == 0 && hi % 4096 == 0);
    }

    #[test]
    fn refuses_what_it_cannot_map() {
        let data = own();
        let len = data.len() as u64;
        assert_eq!(Elf::parse(b"#!/bin/sh\n", 10, 4096), Err("not a 64-bit ELF file"));
        // One byte shorter than a segment says: the segment would map bytes
        // that are not the payload's.
        let elf = Elf::parse(&data, len, 4096).unwrap();
        let end = elf.loads.iter().map(|l| l.offset + l.filesz).max().unwrap();
        assert_eq!(
            Elf::parse(&data, end - 1, 4096),
            Err("a segment outside the file or the address space")
        );
        assert!(Elf::parse(&data, end, 4096).is_ok());
        // Another architecture.
        let mut other = data.clone();
        let machine = if MACHINE == elf::EM_X86_64 { elf::EM_AARCH64 } else { elf::EM_X86_64 };
        other[18..20].copy_from_slice(&machine.to_ne_bytes());
        assert_eq!(Elf::parse(&other, len, 4096), Err("an ELF file for another architecture"));
        // A relocatable object, not an executable.
        let mut object = data.clone();
        object[16..18].copy_from_slice(&elf::ET_REL.to_ne_bytes());
        assert_eq!(Elf::parse(&object, len, 4096), Err("an ELF file that is not an executable"));
    }
}
