//! The set of payloads a build carries, its assets (files its services
//! read, never run: [`Kind::Asset`]), and its manifest.

use std::borrow::Cow;

use crate::{Digest, Encoding, Error, Kind, Payload, Result};

/// The manifest's name among the embedded files.
pub const MANIFEST: &str = stigmer_build::MANIFEST;

/// Includes the table that `stigmer_build::Embed::write` generated in this
/// package's build script: an expression of type [`Bundle`], for a
/// `static`.
///
/// ```ignore
/// static PAYLOADS: stigmer::Bundle = stigmer::include_payloads!();
/// ```
#[macro_export]
macro_rules! include_payloads {
    () => {
        include!(concat!(env!("OUT_DIR"), "/stigmer_payloads.rs"))
    };
}

/// One payload as the build found it: its bytes (the assembler's `.incbin`
/// of the copy the build hashed) and what the build decided about them, so
/// nothing is hashed or scanned at run time.
#[derive(Clone, Debug)]
pub struct Embedded {
    name: &'static str,
    kind: Kind,
    size: u64,
    sha256: [u8; 32],
    encoding: Encoding,
    data: &'static [u8],
}

impl Embedded {
    /// A payload called `name`, of `kind`, `size` bytes long and hashing to
    /// `sha256` once decoded, stored as `data` with `encoding`. Written by
    /// generated code; the sha256 is trusted as the payload's identity.
    pub const fn new(
        name: &'static str,
        kind: Kind,
        size: u64,
        sha256: [u8; 32],
        encoding: Encoding,
        data: &'static [u8],
    ) -> Embedded {
        Embedded { name, kind, size, sha256, encoding, data }
    }

    /// The payload, ready for a [`Catalog`].
    pub fn payload(&self) -> Payload {
        Payload::stored(
            self.name,
            self.data,
            self.encoding.clone(),
            self.size,
            Digest(self.sha256),
            self.kind,
        )
    }
}

/// What a build embedded: its payloads and assets (one table, told apart by
/// their kind) and its optional `services.toml`. Made by
/// [`include_payloads!`].
#[derive(Clone, Copy, Debug)]
pub struct Bundle {
    payloads: &'static [Embedded],
    manifest: Option<&'static [u8]>,
}

impl Bundle {
    /// The payloads and the manifest of one build.
    pub const fn new(payloads: &'static [Embedded], manifest: Option<&'static [u8]>) -> Bundle {
        Bundle { payloads, manifest }
    }

    /// Its catalogue. Nothing is read from disk, and no payload byte is
    /// touched.
    pub fn catalog(&self) -> Catalog {
        Catalog::new(
            self.payloads.iter().map(Embedded::payload).collect(),
            self.manifest.map(Cow::Borrowed),
        )
    }
}

/// The payloads one build carries, sorted by name, its assets, and the
/// optional `services.toml` embedded beside them.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    payloads: Vec<Payload>,
    assets: Vec<Payload>,
    manifest: Option<Cow<'static, [u8]>>,
}

impl Catalog {
    /// A catalogue of the given payloads and manifest; those of kind
    /// [`Kind::Asset`] are its assets.
    pub fn new(files: Vec<Payload>, manifest: Option<Cow<'static, [u8]>>) -> Catalog {
        let (mut assets, mut payloads): (Vec<Payload>, Vec<Payload>) =
            files.into_iter().partition(|p| p.kind() == Kind::Asset);
        payloads.sort_by(|a, b| a.name().cmp(b.name()));
        assets.sort_by(|a, b| a.name().cmp(b.name()));
        Catalog { payloads, assets, manifest }
    }

    /// The payloads (the executables), sorted by name.
    pub fn payloads(&self) -> &[Payload] {
        &self.payloads
    }

    /// The assets, sorted by name: files the services read
    /// (`${asset:NAME}` in the manifest), never run.
    pub fn assets(&self) -> &[Payload] {
        &self.assets
    }

    /// The asset called `name`, or an error that lists the assets there are.
    pub fn asset(&self, name: &str) -> Result<&Payload> {
        self.assets.iter().find(|p| p.name() == name).ok_or_else(|| Error::UnknownAsset {
            name: name.to_owned(),
            known: self.assets.iter().map(|p| p.name().to_owned()).collect(),
        })
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

    #[test]
    fn assets_are_kept_apart_from_payloads() {
        let conf = Payload::new("app.conf", &b"x = 1\n"[..], Digest::of(b"x = 1\n"), Kind::Asset);
        let c = Catalog::new(vec![conf, Payload::from_bytes("api", &b"#!/bin/sh\n"[..])], None);
        let names = |ps: &[Payload]| ps.iter().map(|p| p.name().to_owned()).collect::<Vec<_>>();
        assert_eq!(names(c.payloads()), ["api"]);
        assert_eq!(names(c.assets()), ["app.conf"]);
        assert!(c.get("app.conf").is_err(), "an asset is not a payload: it never runs");
        assert_eq!(c.asset("app.conf").unwrap().kind(), Kind::Asset);
        let err = c.asset("nope").unwrap_err().to_string();
        assert_eq!(err, "no asset named \"nope\": this stigmer carries app.conf");
    }
}
