//! Decoding a zstd-compressed payload into its memfd on every core.
//!
//! `build.rs` stores a compressed payload as independent zstd frames of
//! [`Encoding::Zstd`](crate::Encoding::Zstd)`::frame_len` bytes each, with
//! each frame's stored length in the build's table. So frame `i` is read at
//! a known offset of the stored bytes and decoded to a known offset of the
//! memfd, by whichever thread takes it next: a 60 MB payload decodes in
//! about half the time on two cores, and each thread holds one frame in and
//! one frame out (2 MiB for 1 MiB frames), whatever the payload's size.
//!
//! Every frame carries its content size and a checksum, which the decoder
//! checks; a frame that decodes to anything but its expected length is an
//! error, never a short memfd.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt as _;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;

use super::Failure;
use crate::launch::buf::AlignedBuf;

/// At most this many threads decode one payload (the calling thread is one
/// of them), so a launch holds at most `2 * MAX_THREADS` frames of buffers.
const MAX_THREADS: usize = 4;

/// The frames of one compressed payload.
pub(crate) struct Frames<'a> {
    /// What each frame but the last decodes to.
    pub(crate) frame_len: usize,
    /// Each frame's stored length, in order.
    pub(crate) stored: &'a [u32],
    /// The payload's decoded length.
    pub(crate) len: u64,
}

impl Frames<'_> {
    /// Decodes every frame into `out` (sized to the payload first).
    /// `read_at(buf, pos)` fills `buf` from the stored bytes at `pos`.
    pub(crate) fn decode_into(
        &self,
        read_at: &(dyn Fn(&mut [u8], u64) -> io::Result<()> + Sync),
        out: &File,
    ) -> Result<(), Failure> {
        let invalid = |why: String| Failure::Read(io::Error::new(io::ErrorKind::InvalidData, why));
        let expected = self.len.div_ceil(self.frame_len.max(1) as u64);
        if self.frame_len == 0 || self.stored.len() as u64 != expected {
            return Err(invalid(format!(
                "{} frames of {} bytes cannot hold {} bytes",
                self.stored.len(),
                self.frame_len,
                self.len
            )));
        }
        let starts: Vec<u64> = self
            .stored
            .iter()
            .scan(0u64, |at, &n| {
                let start = *at;
                *at += u64::from(n);
                Some(start)
            })
            .collect();
        out.set_len(self.len).map_err(Failure::Write)?;

        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let work = || {
            let result = self.worker(&starts, &next, &failed, read_at, out);
            if result.is_err() {
                failed.store(true, Ordering::Relaxed);
            }
            result
        };
        let threads = thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(MAX_THREADS)
            .min(self.stored.len());
        thread::scope(|scope| {
            // A helper that cannot be created (a thread limit, a seccomp
            // policy) is not needed: this thread decodes whatever is left.
            let helpers: Vec<_> = (1..threads)
                .filter_map(|_| thread::Builder::new().spawn_scoped(scope, work).ok())
                .collect();
            let mut result = work();
            for helper in helpers {
                let joined = helper.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                result = result.and(joined);
            }
            result
        })
    }

    /// Takes frames until none is left or another thread failed.
    fn worker(
        &self,
        starts: &[u64],
        next: &AtomicUsize,
        failed: &AtomicBool,
        read_at: &(dyn Fn(&mut [u8], u64) -> io::Result<()> + Sync),
        out: &File,
    ) -> Result<(), Failure> {
        let mut decoder = zstd::bulk::Decompressor::new().map_err(Failure::Read)?;
        let largest = self.stored.iter().max().map_or(0, |&n| n as usize);
        let mut input = AlignedBuf::new(largest);
        let mut output = AlignedBuf::new(self.frame_len.min(self.len as usize));
        while !failed.load(Ordering::Relaxed) {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let (Some(&stored), Some(&start)) = (self.stored.get(i), starts.get(i)) else {
                break;
            };
            let at = i as u64 * self.frame_len as u64;
            let want = (self.len - at).min(self.frame_len as u64) as usize;
            let (input, output) = (input.get(stored as usize), output.get(want));
            read_at(input, start).map_err(Failure::Read)?;
            let n = decoder
                .decompress_to_buffer(input, output)
                .map_err(|e| Failure::Read(io::Error::new(e.kind(), format!("frame {i}: {e}"))))?;
            if n != want {
                return Err(Failure::Read(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("frame {i} decoded to {n} bytes, not {want}"),
                )));
            }
            out.write_all_at(output, at).map_err(Failure::Write)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames the way `build.rs` makes them, at a faster level.
    fn compress(bytes: &[u8], frame_len: usize) -> (Vec<u8>, Vec<u32>) {
        let mut compressor = zstd::bulk::Compressor::new(3).unwrap();
        compressor.set_parameter(zstd::stream::raw::CParameter::ChecksumFlag(true)).unwrap();
        let frames: Vec<Vec<u8>> =
            bytes.chunks(frame_len).map(|c| compressor.compress(c).unwrap()).collect();
        let lens = frames.iter().map(|f| f.len() as u32).collect();
        (frames.concat(), lens)
    }

    fn decode(stored: &[u8], frames: &Frames<'_>) -> Result<Vec<u8>, Failure> {
        let out = tempfile::tempfile().unwrap();
        let read_at = |buf: &mut [u8], pos: u64| {
            let pos = pos as usize;
            let src = stored.get(pos..pos + buf.len()).ok_or(io::ErrorKind::UnexpectedEof)?;
            buf.copy_from_slice(src);
            Ok(())
        };
        frames.decode_into(&read_at, &out)?;
        let mut back = vec![0; frames.len as usize];
        out.read_exact_at(&mut back, 0).unwrap();
        assert_eq!(out.metadata().unwrap().len(), frames.len);
        Ok(back)
    }

    #[test]
    fn frames_land_at_their_offsets() {
        // Distinct content per frame, and a short last frame.
        let bytes: Vec<u8> =
            (0..(10 * 4096 + 123)).map(|i: u32| (i / 4096 * 7 + i % 13) as u8).collect();
        let (stored, lens) = compress(&bytes, 4096);
        let frames = Frames { frame_len: 4096, stored: &lens, len: bytes.len() as u64 };
        assert_eq!(decode(&stored, &frames).unwrap(), bytes);
    }

    #[test]
    fn a_corrupt_or_mislabelled_frame_is_an_error() {
        let bytes: Vec<u8> = (0..3 * 4096).map(|i: u32| ((i % 251) ^ (i / 97)) as u8).collect();
        let (mut stored, lens) = compress(&bytes, 4096);
        // Claimed longer than it is.
        let frames = Frames { frame_len: 4096, stored: &lens, len: 3 * 4096 - 1 };
        assert!(matches!(decode(&stored, &frames), Err(Failure::Read(_))));
        // A table that does not cover the payload.
        let frames = Frames { frame_len: 4096, stored: &lens[..2], len: 3 * 4096 };
        assert!(matches!(decode(&stored, &frames), Err(Failure::Read(_))));
        // A flipped byte in the middle of the second frame.
        let frames = Frames { frame_len: 4096, stored: &lens, len: 3 * 4096 };
        let mid = lens[0] as usize + lens[1] as usize / 2;
        stored[mid] ^= 0xff;
        assert!(matches!(decode(&stored, &frames), Err(Failure::Read(_))));
    }
}
