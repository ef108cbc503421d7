//! zstd frames: how a compressed payload is stored.

use std::io;
use std::path::Path;

#[cfg(not(feature = "compress"))]
use crate::Error;
#[cfg(feature = "compress")]
use crate::{FRAME_LEN, embed::is_regular};
#[cfg(feature = "compress")]
use std::fs;

/// The frame lengths of the frames an earlier build kept at `zst` (and
/// `lens`), if they are the frames of `bytes`: as many as `bytes` has
/// [`FRAME_LEN`] chunks, adding up to the file, each decoding to its chunk.
#[cfg(feature = "compress")]
pub(crate) fn kept_frames(zst: &Path, lens: &Path, bytes: &[u8]) -> Option<Vec<usize>> {
    if !is_regular(zst) || !is_regular(lens) {
        return None;
    }
    let lens: Vec<usize> = fs::read_to_string(lens)
        .ok()?
        .split(", ")
        .map(|n| n.parse().ok().filter(|&n| n > 0))
        .collect::<Option<_>>()?;
    let frames = fs::read(zst).ok()?;
    let chunks = bytes.chunks(FRAME_LEN);
    if lens.len() != chunks.len() || lens.iter().sum::<usize>() != frames.len() {
        return None;
    }
    let mut at = 0;
    for (len, chunk) in lens.iter().zip(chunks) {
        let decoded = ::zstd::bulk::decompress(&frames[at..at + len], FRAME_LEN).ok()?;
        if decoded != chunk {
            return None;
        }
        at += len;
    }
    Some(lens)
}

#[cfg(not(feature = "compress"))]
pub(crate) fn kept_frames(_: &Path, _: &Path, _: &[u8]) -> Option<Vec<usize>> {
    None
}

/// Compresses `bytes` as independent frames of [`FRAME_LEN`] bytes (level
/// 19, each with its content size and checksum), on every core.
#[cfg(feature = "compress")]
pub fn zstd_frames(bytes: &[u8]) -> io::Result<Vec<Vec<u8>>> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let frame = |chunk: &[u8]| {
        let mut compressor = ::zstd::bulk::Compressor::new(19)?;
        compressor.set_parameter(::zstd::stream::raw::CParameter::ChecksumFlag(true))?;
        compressor.compress(chunk)
    };
    let chunks: Vec<&[u8]> = bytes.chunks(FRAME_LEN).collect();
    let frames = Mutex::new(vec![Vec::new(); chunks.len()]);
    let next = AtomicUsize::new(0);
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(chunks.len());
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(chunk) = chunks.get(i) else {
                            return Ok::<(), io::Error>(());
                        };
                        let compressed = frame(chunk)?;
                        frames.lock().unwrap_or_else(|e| e.into_inner())[i] = compressed;
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
    })?;
    Ok(frames.into_inner().unwrap_or_else(|e| e.into_inner()))
}

#[cfg(not(feature = "compress"))]
pub(crate) fn zstd_frames(_: &[u8]) -> io::Result<Vec<Vec<u8>>> {
    Err(io::Error::new(io::ErrorKind::Unsupported, Error::NoCompress))
}
