//! A byte buffer that starts on a page boundary.
//!
//! The kernel copies between the page cache (or a memfd's pages) and user
//! memory with `rep movsb`, which on this project's AMD EPYC machines runs
//! four to five times slower when the user buffer is not aligned like the
//! pages it copies: reading a warm 60 MB file through a 128 KiB buffer took
//! 6-7 ms at a page-aligned address and 24-37 ms at page + 16 bytes, which
//! is where glibc's malloc puts every allocation of 128 KiB or more. So
//! every buffer stigmer moves a payload through comes from here.

/// Where buffers start.
const ALIGN: usize = 4096;

/// A zeroed buffer of up to `capacity` bytes whose first byte is
/// page-aligned.
pub(crate) struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    capacity: usize,
}

impl AlignedBuf {
    /// A buffer that can hold `capacity` bytes.
    pub(crate) fn new(capacity: usize) -> AlignedBuf {
        let raw = vec![0; capacity + ALIGN];
        let start = (ALIGN - raw.as_ptr().addr() % ALIGN) % ALIGN;
        AlignedBuf { raw, start, capacity }
    }

    /// The first `len` bytes (at most the capacity).
    pub(crate) fn get(&mut self, len: usize) -> &mut [u8] {
        let len = len.min(self.capacity);
        &mut self.raw[self.start..self.start + len]
    }

    /// The whole buffer.
    pub(crate) fn all(&mut self) -> &mut [u8] {
        self.get(self.capacity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_on_a_page_and_holds_its_capacity() {
        for capacity in [1, 4095, 128 * 1024, (1 << 20) + 3] {
            let mut buf = AlignedBuf::new(capacity);
            assert_eq!(buf.all().as_ptr().addr() % ALIGN, 0);
            assert_eq!(buf.all().len(), capacity);
            assert_eq!(buf.get(capacity + 1).len(), capacity);
            assert_eq!(buf.get(7).len(), 7.min(capacity));
        }
    }
}
