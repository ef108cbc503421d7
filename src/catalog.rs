//! The set of payloads a build carries, and its manifest.

use std::borrow::Cow;

use rust_embed::RustEmbed;

use crate::{Digest, Encoding, Error, Kind, Payload, Result};

/// The manifest's name among the embedded files.
pub const MANIFEST: &str = "services.toml";

/// A payload as a build script found it: what the binary's generated table
/// holds for each embedded file.
#[derive(Clone, Debug)]
pub struct Embedded {
    /// The payload's name, also its file name in the embedded folder.
    pub name: &'static str,
    /// Its kind, decided from its bytes.
    pub kind: Kind,
    /// Its size, uncompressed.
    pub size: u64,
    /// The sha256 of its uncompressed bytes: its identity.
    pub sha256: [u8; 32],
    /// How the embedded file stores it.
    pub encoding: Encoding,
}

/// The payloads one build carries, sorted by name, and the optional
/// `services.toml` embedded beside them.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    payloads: Vec<Payload>,
    manifest: Option<Cow<'static, [u8]>>,
}

impl Catalog {
    /// A catalogue of the given payloads and manifest.
    pub fn new(mut payloads: Vec<Payload>, manifest: Option<Cow<'static, [u8]>>) -> Catalog {
        payloads.sort_by(|a, b| a.name().cmp(b.name()));
        Catalog { payloads, manifest }
    }

    /// The payloads of a rust-embed folder.
    ///
    /// `entries` describes every payload as the build found it; a file of
    /// the folder that is not listed there is not a payload (the manifest,
    /// for one). Nothing is read from disk, and no payload byte is touched.
    pub fn from_embed<E: RustEmbed>(entries: &[Embedded]) -> Catalog {
        let payloads = entries
            .iter()
            .filter_map(|e| {
                let file = E::get(e.name)?;
                Some(Payload::stored(
                    e.name,
                    file.data,
                    e.encoding.clone(),
                    e.size,
                    Digest(e.sha256),
                    e.kind,
                ))
            })
            .collect();
        Catalog::new(payloads, E::get(MANIFEST).map(|f| f.data))
    }

    /// The payloads, sorted by name.
    pub fn payloads(&self) -> &[Payload] {
        &self.payloads
    }

    /// The payload called `name`, if there is one.
    pub fn find(&self, name: &str) -> Option<&Payload> {
        self.payloads.iter().find(|p| p.name() == name)
    }

    /// The payload called `name`, or an error that lists the names there are.
    pub fn get(&self, name: &str) -> Result<&Payload> {
        self.find(name).ok_or_else(|| Error::UnknownPayload {
            name: name.to_owned(),
            known: self.payloads.iter().map(|p| p.name().to_owned()).collect(),
        })
    }

    /// The embedded `services.toml`, if the build had one.
    pub fn manifest(&self) -> Option<&[u8]> {
        self.manifest.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_lists_known_names() {
        let c = Catalog::new(
            vec![Payload::from_bytes("b", &b"x"[..]), Payload::from_bytes("a", &b"y"[..])],
            None,
        );
        assert_eq!(c.payloads()[0].name(), "a");
        assert!(c.get("a").is_ok());
        let err = c.get("nope").unwrap_err().to_string();
        assert!(err.contains("a, b"), "{err}");
    }
}
