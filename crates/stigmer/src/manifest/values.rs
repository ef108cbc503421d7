//! The values of `args` and `env` once checked ([`Text`]), and what a
//! manifest is checked against ([`Context`]): the payloads and assets a
//! build carries, and the environment `${VAR}` expands from.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fmt;

use super::problem::{Place, ProblemKind};
use super::vars::{self, Lookup, Piece, VarError};

/// What a manifest is checked against: the payloads and assets this build
/// carries, and the environment its `${VAR}`s expand from (stigmer's own,
/// unless a lookup is given).
#[derive(Clone, Copy)]
pub struct Context<'a> {
    pub(super) payloads: &'a [&'a str],
    pub(super) assets: &'a [&'a str],
    pub(super) vars: Lookup<'a>,
}

impl fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("payloads", &self.payloads)
            .field("assets", &self.assets)
            .finish_non_exhaustive()
    }
}

/// A variable of stigmer's own environment.
fn process_var(name: &str) -> Option<OsString> {
    std::env::var_os(name)
}

impl<'a> Context<'a> {
    /// Checks against `payloads` and no asset, expanding from stigmer's
    /// environment.
    pub fn new(payloads: &'a [&'a str]) -> Context<'a> {
        Context { payloads, assets: &[], vars: &process_var }
    }

    /// The assets the build carries, which `${asset:NAME}` may name.
    pub fn assets(self, assets: &'a [&'a str]) -> Context<'a> {
        Context { assets, ..self }
    }

    /// Expands `${VAR}` with `vars` instead: the value of a variable,
    /// `None` when it is unset.
    pub fn vars(self, vars: &'a dyn Fn(&str) -> Option<OsString>) -> Context<'a> {
        Context { vars, ..self }
    }
}

/// A value of `args` or of `env` as checked: its variables expanded, and,
/// where it said `${asset:NAME}`, the asset whose path is put there when
/// the service starts ([`Text::with_paths`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Text {
    /// Never two `Text` pieces in a row, never an empty one.
    pieces: Vec<Piece>,
}

impl Text {
    /// The value, when it names no asset.
    pub fn as_str(&self) -> Option<&str> {
        match self.pieces.as_slice() {
            [] => Some(""),
            [Piece::Text(text)] => Some(text),
            _ => None,
        }
    }

    /// The assets it names, in order (an asset named twice comes twice).
    pub fn assets(&self) -> impl Iterator<Item = &str> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Asset(name) => Some(name.as_str()),
            Piece::Text(_) => None,
        })
    }

    /// The value with `path(NAME)` for each asset it names.
    pub fn with_paths(&self, mut path: impl FnMut(&str) -> OsString) -> OsString {
        let mut out = OsString::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.push(text),
                Piece::Asset(name) => out.push(path(name)),
            }
        }
        out
    }

    /// Whether its text holds a NUL byte (an asset's path never does).
    fn has_nul(&self) -> bool {
        self.pieces.iter().any(|p| matches!(p, Piece::Text(t) if t.contains('\0')))
    }
}

impl fmt::Display for Text {
    /// The value, with `${asset:NAME}` where an asset's path goes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => f.write_str(text)?,
                Piece::Asset(name) => write!(f, "${{asset:{name}}}")?,
            }
        }
        Ok(())
    }
}

impl PartialEq<&str> for Text {
    /// Equal when it names no asset and is that text.
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == Some(*other)
    }
}

/// What every service is checked against.
pub(super) struct Known<'a> {
    pub(super) payloads: HashSet<&'a str>,
    /// The payloads, sorted, for messages.
    pub(super) carried: Vec<String>,
    assets: HashSet<&'a str>,
    /// The assets, sorted, for messages.
    assets_carried: Vec<String>,
    vars: Lookup<'a>,
}

impl<'a> Known<'a> {
    pub(super) fn new(context: &Context<'a>) -> Known<'a> {
        let sorted = |names: &HashSet<&str>| {
            let mut names: Vec<String> = names.iter().map(|&n| n.to_owned()).collect();
            names.sort_unstable();
            names
        };
        let payloads: HashSet<&str> = context.payloads.iter().copied().collect();
        let assets: HashSet<&str> = context.assets.iter().copied().collect();
        Known {
            carried: sorted(&payloads),
            assets_carried: sorted(&assets),
            payloads,
            assets,
            vars: context.vars,
        }
    }

    /// `written`, the value at `place`, with its variables expanded and its
    /// assets checked, then checked as if written so (no NUL); `None`
    /// after a problem, each one pushed to `problems`. In `cwd`, which
    /// names a folder, no asset can be.
    pub(super) fn expand(
        &self,
        place: Place,
        written: &str,
        problems: &mut Vec<ProblemKind>,
    ) -> Option<Text> {
        let pieces = match vars::expand(written, self.vars) {
            Ok(pieces) => pieces,
            Err(errors) => {
                problems.extend(errors.into_iter().map(|e| {
                    let place = place.clone();
                    match e {
                        VarError::Unset { name } => ProblemKind::UnsetVariable { place, name },
                        VarError::NotUtf8 { name } => ProblemKind::VariableNotUtf8 { place, name },
                        VarError::BadName { written } => {
                            ProblemKind::BadVariable { place, written }
                        }
                        VarError::Unclosed => {
                            ProblemKind::UnclosedVariable { place, value: written.to_owned() }
                        }
                    }
                }));
                return None;
            }
        };
        let before = problems.len();
        for piece in &pieces {
            let Piece::Asset(name) = piece else { continue };
            if place == Place::Cwd {
                problems.push(ProblemKind::AssetInCwd { name: name.clone() });
            } else if !self.assets.contains(name.as_str()) {
                problems.push(ProblemKind::UnknownAsset {
                    place: place.clone(),
                    name: name.clone(),
                    carried: self.assets_carried.clone(),
                });
            }
        }
        let text = Text { pieces };
        if text.has_nul() {
            problems.push(match &place {
                Place::Arg(index) => ProblemKind::NulInArg { index: *index, arg: text.to_string() },
                Place::Env(name) => {
                    ProblemKind::NulInEnvValue { name: name.clone(), value: text.to_string() }
                }
                Place::Cwd => ProblemKind::NulInCwd { cwd: written.to_owned() },
            });
        }
        (problems.len() == before).then_some(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_puts_asset_paths_in_their_place() {
        let text = Text {
            pieces: vec![
                Piece::Text("--config=".into()),
                Piece::Asset("app.conf".into()),
                Piece::Text(",".into()),
                Piece::Asset("b".into()),
            ],
        };
        assert_eq!(text.as_str(), None);
        assert_eq!(text.assets().collect::<Vec<_>>(), ["app.conf", "b"]);
        assert_eq!(text.with_paths(|n| format!("/p/{n}").into()), "--config=/p/app.conf,/p/b");
        assert_eq!(text.to_string(), "--config=${asset:app.conf},${asset:b}");
        assert_ne!(text, "--config=${asset:app.conf},${asset:b}");
        let plain = Text { pieces: vec![Piece::Text("x".into())] };
        assert_eq!((plain.as_str(), plain == "x"), (Some("x"), true));
        assert_eq!(Text { pieces: vec![] }, "");
    }
}
