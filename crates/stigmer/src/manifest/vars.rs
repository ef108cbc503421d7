//! `${VAR}` in a service's `args`, `env` values and `cwd`: expanded from
//! stigmer's own environment when the manifest is checked, so a problem
//! (an unset variable, a typo in the syntax) is reported before anything
//! starts, with every other problem of the file.
//!
//! The syntax, and nothing more:
//!
//! - `${NAME}`: the value of `NAME` (letters, digits and `_`, not starting
//!   with a digit). Unset is a problem; set and empty gives empty text.
//! - `${NAME:-default}`: the default when `NAME` is unset *or* empty (the
//!   shell's and compose's `:-`). The default is literal text up to the
//!   first `}`: it is not expanded itself, and cannot hold a `}`.
//! - `${asset:NAME}`: the path of the asset `NAME`, which the supervisor
//!   fills in when the service starts (see [`Piece::Asset`]).
//! - `$$`: one literal `$` (so `$${HOME}` is the text `${HOME}`).
//! - Any other `$` is left as written: `$HOME`, `$1`, a `$` at the end. So
//!   `sh -c 'echo $1'` keeps working; a shell's own `$$` (its pid) is
//!   written `$$$$`.
//!
//! A variable's value is inserted as it is: a `$` in it is not expanded
//! again.
//!
//! The lookup is a parameter, so tests never change the process's
//! environment.

use std::ffi::OsString;

/// One part of a value after expansion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Piece {
    /// Text, variables already put in.
    Text(String),
    /// `${asset:NAME}`: the path of this asset, put in at start.
    Asset(String),
}

/// What is wrong with one `${...}` of a value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum VarError {
    /// `${NAME}` without a default, and `NAME` is not set.
    Unset {
        /// The variable.
        name: String,
    },
    /// `NAME`'s value is not UTF-8.
    NotUtf8 {
        /// The variable.
        name: String,
    },
    /// `${}`, or a name that is not one: `${1X}`, `${A-b}`, `${A B}`.
    BadName {
        /// The whole `${...}` as written.
        written: String,
    },
    /// A `${` with no `}` after it.
    Unclosed,
}

/// How a variable is looked up: its value, `None` when unset.
pub(super) type Lookup<'a> = &'a dyn Fn(&str) -> Option<OsString>;

/// The prefix of an asset reference, inside `${...}`.
const ASSET: &str = "asset:";

/// Expands `text`: its pieces (adjacent text joined; none empty), or every
/// problem found in it, in order. Text without `$` comes back unchanged.
pub(super) fn expand(text: &str, lookup: Lookup<'_>) -> Result<Vec<Piece>, Vec<VarError>> {
    let mut pieces = Vec::new();
    let mut errors = Vec::new();
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
            continue;
        }
        let Some(inner) = after.strip_prefix('{') else {
            // `$HOME`, `$1`, a final `$`: as written.
            out.push('$');
            rest = after;
            continue;
        };
        let Some(close) = inner.find('}') else {
            // Everything after it would be inside: nothing more to read.
            errors.push(VarError::Unclosed);
            rest = "";
            break;
        };
        let body = &inner[..close];
        rest = &inner[close + 1..];
        if let Some(asset) = body.strip_prefix(ASSET) {
            if !out.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut out)));
            }
            pieces.push(Piece::Asset(asset.to_owned()));
            continue;
        }
        let (name, default) = match body.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (body, None),
        };
        if !is_name(name) {
            errors.push(VarError::BadName { written: format!("${{{body}}}") });
            continue;
        }
        match (lookup(name).map(OsString::into_string), default) {
            (Some(Ok(value)), None) => out.push_str(&value),
            (Some(Ok(value)), Some(_)) if !value.is_empty() => out.push_str(&value),
            (Some(Ok(_)) | None, Some(default)) => out.push_str(default),
            (Some(Err(_)), _) => errors.push(VarError::NotUtf8 { name: name.to_owned() }),
            (None, None) => errors.push(VarError::Unset { name: name.to_owned() }),
        }
    }
    out.push_str(rest);
    if !out.is_empty() {
        pieces.push(Piece::Text(out));
    }
    if errors.is_empty() { Ok(pieces) } else { Err(errors) }
}

/// Whether `name` can name a variable here: `[A-Za-z_][A-Za-z0-9_]*`.
pub(super) fn is_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::os::unix::ffi::OsStringExt as _;

    use proptest::prelude::*;

    use super::*;

    /// The environment of these tests: `PORT=8080`, `EMPTY=`, `DOLLAR=$X`,
    /// `BAD` not UTF-8; nothing else is set.
    fn env(name: &str) -> Option<OsString> {
        let vars: HashMap<&str, OsString> = [
            ("PORT", OsString::from("8080")),
            ("EMPTY", OsString::new()),
            ("DOLLAR", OsString::from("${PORT}$$")),
            ("BAD", OsString::from_vec(vec![b'a', 0xff])),
        ]
        .into_iter()
        .collect();
        vars.get(name).cloned()
    }

    fn text(s: &str) -> String {
        match expand(s, &env).unwrap().as_slice() {
            [] => String::new(),
            [Piece::Text(t)] => t.clone(),
            other => panic!("{s:?} gave {other:?}"),
        }
    }

    fn errors(s: &str) -> Vec<VarError> {
        expand(s, &env).expect_err(s)
    }

    #[test]
    fn variables_and_defaults() {
        assert_eq!(text("--port=${PORT}"), "--port=8080");
        assert_eq!(text("${PORT}${PORT}"), "80808080");
        assert_eq!(text("${UNSET:-7000}"), "7000");
        assert_eq!(text("${PORT:-7000}"), "8080");
        // `:-` also stands in for an empty value; without it, empty is empty.
        assert_eq!(text("[${EMPTY:-d}]"), "[d]");
        assert_eq!(text("[${EMPTY}]"), "[]");
        assert_eq!(text("[${UNSET:-}]"), "[]");
        // The default is literal, up to the first `}`.
        assert_eq!(text("${UNSET:-$$ ${x:-y}"), "$$ ${x:-y");
        assert_eq!(text("${UNSET:-a:-b}"), "a:-b");
        // A value is not expanded again.
        assert_eq!(text("${DOLLAR}"), "${PORT}$$");
    }

    #[test]
    fn other_dollars_are_left_as_written() {
        for s in ["$HOME", "echo $1", "$", "a$", "$ {PORT}", "$(date)", "$-", "{PORT}"] {
            assert_eq!(text(s), s);
        }
        assert_eq!(text("$$"), "$");
        assert_eq!(text("$${PORT}"), "${PORT}");
        assert_eq!(text("$$$${PORT}"), "$${PORT}");
        assert_eq!(text("$$$$${PORT}"), "$$8080");
        assert_eq!(text("$$$"), "$$");
        assert_eq!(text("$$$$"), "$$");
        assert_eq!(text("$$${PORT}"), "$8080");
    }

    #[test]
    fn assets_are_pieces_of_their_own() {
        let got = expand("--config=${asset:app.conf}:${PORT}", &env).unwrap();
        assert_eq!(
            got,
            [
                Piece::Text("--config=".into()),
                Piece::Asset("app.conf".into()),
                Piece::Text(":8080".into())
            ]
        );
        assert_eq!(expand("${asset:a}", &env).unwrap(), [Piece::Asset("a".into())]);
        assert_eq!(expand("$${asset:a}", &env).unwrap(), [Piece::Text("${asset:a}".into())]);
        assert_eq!(expand("", &env).unwrap(), []);
    }

    #[test]
    fn every_problem_of_a_value_is_reported() {
        assert_eq!(errors("${NOPE}"), [VarError::Unset { name: "NOPE".into() }]);
        assert_eq!(errors("${BAD}"), [VarError::NotUtf8 { name: "BAD".into() }]);
        assert_eq!(errors("${BAD:-x}"), [VarError::NotUtf8 { name: "BAD".into() }]);
        assert_eq!(errors("a ${PORT"), [VarError::Unclosed]);
        assert_eq!(errors("${"), [VarError::Unclosed]);
        for bad in ["${}", "${:-x}", "${1X}", "${A-b}", "${A B}", "${A:b}", "${é}", "${$X}"] {
            assert_eq!(errors(bad), [VarError::BadName { written: bad.into() }], "{bad}");
        }
        assert_eq!(
            errors("${A}-${1}-${PORT}-${B:-ok}-${C}-${"),
            [
                VarError::Unset { name: "A".into() },
                VarError::BadName { written: "${1}".into() },
                VarError::Unset { name: "C".into() },
                VarError::Unclosed,
            ]
        );
    }

    #[test]
    fn names() {
        for good in ["A", "_", "a1", "_9", "DATABASE_URL"] {
            assert!(is_name(good), "{good}");
        }
        for bad in ["", "1", "A-B", "A.B", "A B", "é", "A=B"] {
            assert!(!is_name(bad), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn text_without_a_dollar_is_unchanged(s in "[^$]{0,64}") {
            prop_assert_eq!(text(&s), s);
        }

        #[test]
        fn doubled_dollars_round_trip(s in ".{0,64}") {
            // Any text, written with every `$` doubled, comes back as is:
            // `$${PORT}` is the text `${PORT}`, never the variable.
            prop_assert_eq!(text(&s.replace('$', "$$")), s);
        }

        #[test]
        fn any_text_expands_or_fails_without_panicking(s in "[${}:A-Z_a-z0-9-]{0,32}") {
            let _ = expand(&s, &env);
        }

        #[test]
        fn a_set_value_goes_in_verbatim(value in "\\PC{0,32}") {
            let lookup = |name: &str| (name == "V").then(|| OsString::from(value.clone()));
            prop_assert_eq!(
                expand("<${V}>", &lookup).unwrap(),
                vec![Piece::Text(format!("<{value}>"))]
            );
        }
    }
}
