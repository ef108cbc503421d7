//! A payload: an executable carried inside the stigmer binary.

use std::borrow::Cow;
use std::fmt;
use std::io::{self, Read};
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

use crate::Kind;

/// A sha256 digest: the identity of a payload and the name of its cache
/// entry.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// Hashes `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(Sha256::digest(bytes).into())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl FromStr for Digest {
    type Err = ParseDigestError;

    /// Parses 64 lower- or upper-case hex digits.
    fn from_str(s: &str) -> Result<Digest, ParseDigestError> {
        if let Some((at, found)) = s.char_indices().find(|(_, c)| !c.is_ascii_hexdigit()) {
            return Err(ParseDigestError::NotHex { at, found });
        }
        if s.len() != 64 {
            return Err(ParseDigestError::Length { len: s.len() });
        }
        let mut out = [0; 32];
        for (o, pair) in out.iter_mut().zip(s.as_bytes().chunks_exact(2)) {
            *o = (hex_value(pair[0]) << 4) | hex_value(pair[1]);
        }
        Ok(Digest(out))
    }
}

/// The value of an ASCII hex digit.
fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        _ => digit - b'A' + 10,
    }
}

/// Why a text is not a [`Digest`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseDigestError {
    /// A character that is not a hex digit.
    #[error(
        "{found:?} at byte {at} is not a hex digit: a sha256 digest is 64 hex digits (0-9, a-f)"
    )]
    NotHex {
        /// Its byte offset.
        at: usize,
        /// The character.
        found: char,
    },
    /// Hex digits, but not 64 of them.
    #[error("a sha256 digest is 64 hex digits, not {len}: give all 64")]
    Length {
        /// How many there are.
        len: usize,
    },
}

/// How a payload's bytes are stored in the binary.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Encoding {
    /// As they are.
    Raw,
    /// zstd-compressed (the `compress` feature); decompressed at launch.
    ///
    /// The stored bytes are a series of independent zstd frames, so that
    /// they can be decoded in parallel: every frame but the last decodes to
    /// `frame_len` bytes, and `frames` lists each frame's stored length in
    /// order. With no `frames`, the stored bytes are decoded as one stream.
    Zstd {
        /// What each frame but the last decodes to, in bytes.
        frame_len: u32,
        /// The stored length of each frame, in order.
        frames: Cow<'static, [u32]>,
    },
}

/// An executable carried by this build, with the sha256 and kind decided
/// when it was built.
#[derive(Clone, Debug)]
pub struct Payload {
    name: Cow<'static, str>,
    data: Cow<'static, [u8]>,
    sha256: Digest,
    kind: Kind,
    encoding: Encoding,
    len: u64,
}

impl Payload {
    /// A payload whose sha256 and kind were computed at build time.
    ///
    /// The sha256 is trusted as the payload's identity: the cache checks its
    /// entries against it, and refuses to write bytes that do not match it.
    pub fn new(
        name: impl Into<Cow<'static, str>>,
        data: impl Into<Cow<'static, [u8]>>,
        sha256: Digest,
        kind: Kind,
    ) -> Payload {
        let data = data.into();
        let len = data.len() as u64;
        Payload { name: name.into(), data, sha256, kind, encoding: Encoding::Raw, len }
    }

    /// A payload stored with `encoding`, whose bytes are `len` long and hash
    /// to `sha256` once decoded (both computed at build time).
    pub fn stored(
        name: impl Into<Cow<'static, str>>,
        data: impl Into<Cow<'static, [u8]>>,
        encoding: Encoding,
        len: u64,
        sha256: Digest,
        kind: Kind,
    ) -> Payload {
        Payload { name: name.into(), data: data.into(), sha256, kind, encoding, len }
    }

    /// A payload from bytes at hand, hashing them and deciding their kind
    /// now (this reads all of `data`).
    pub fn from_bytes(
        name: impl Into<Cow<'static, str>>,
        data: impl Into<Cow<'static, [u8]>>,
    ) -> Payload {
        let data = data.into();
        let sha256 = Digest::of(&data);
        let kind = Kind::detect(&data);
        Payload::new(name, data, sha256, kind)
    }

    /// The payload's name (its file name at build time).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bytes as stored: the executable itself when the encoding is
    /// [`Encoding::Raw`], compressed otherwise.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// How [`Payload::data`] is stored.
    pub fn encoding(&self) -> &Encoding {
        &self.encoding
    }

    /// The executable's bytes, decoded from `stored` (which must yield
    /// [`Payload::data`], read from wherever it lives).
    pub fn decode<'a>(&self, stored: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
        match self.encoding {
            Encoding::Raw => Ok(Box::new(stored)),
            #[cfg(feature = "compress")]
            Encoding::Zstd { .. } => Ok(Box::new(zstd::stream::read::Decoder::new(stored)?)),
            #[cfg(not(feature = "compress"))]
            Encoding::Zstd { .. } => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "this payload is zstd-compressed and stigmer was built without the compress feature",
            )),
        }
    }

    /// The build-time sha256 of the executable's bytes.
    pub fn sha256(&self) -> Digest {
        self.sha256
    }

    /// What kind of executable it is.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The executable's size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it has no bytes (never true of a payload `build.rs` embeds).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_hex_round_trip() {
        let d = Digest::of(b"abc");
        let hex = d.to_string();
        assert_eq!(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(hex.parse::<Digest>(), Ok(d));
        assert_eq!(hex.to_uppercase().parse::<Digest>(), Ok(d));
        assert_eq!("ba78".parse::<Digest>(), Err(ParseDigestError::Length { len: 4 }));
        assert_eq!(
            "zz".repeat(32).parse::<Digest>(),
            Err(ParseDigestError::NotHex { at: 0, found: 'z' })
        );
        // u8::from_str_radix takes a sign; a digest does not.
        let signed = "+a".repeat(32);
        assert_eq!(signed.parse::<Digest>(), Err(ParseDigestError::NotHex { at: 0, found: '+' }));
        let e = format!("{}é", &hex[..63]).parse::<Digest>().unwrap_err();
        assert_eq!(e, ParseDigestError::NotHex { at: 63, found: 'é' });
        assert_eq!(
            e.to_string(),
            "'é' at byte 63 is not a hex digit: a sha256 digest is 64 hex digits (0-9, a-f)"
        );
        assert_eq!(
            "ab".parse::<Digest>().unwrap_err().to_string(),
            "a sha256 digest is 64 hex digits, not 2: give all 64"
        );
    }

    #[test]
    fn from_bytes_hashes_and_detects() {
        let p = Payload::from_bytes("s", b"#!/bin/sh\n".as_slice());
        assert_eq!(p.kind(), Kind::Script);
        assert_eq!(p.sha256(), Digest::of(b"#!/bin/sh\n"));
        assert_eq!(p.len(), 10);
    }
}
