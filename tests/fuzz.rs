//! Property tests for what users type: the manifest and payload names.
//! Whatever the input, stigmer answers with a value or one clear line,
//! never a panic.

use proptest::prelude::*;
use stigmer::manifest::{
    Check, Condition, MAX_DURATION, MAX_HEALTH_RETRIES, MAX_RESTARTS, MIN_HEALTH_INTERVAL,
    MIN_HEALTH_TIMEOUT, MIN_READY_TIMEOUT, Restart,
};
use stigmer::{Catalog, Manifest, ManifestError, Payload};

const PAYLOADS: &[&str] = &["api", "worker", "hello"];

/// Every reported problem is one non-empty line with no control character
/// (no ESC, CR, LF, NUL, C1...), so a message cannot move the cursor, recolour
/// the terminal or forge a second line.
fn clean_line(line: &str) {
    assert!(!line.is_empty());
    assert!(!line.chars().any(char::is_control), "{line:?}");
    for reorder in ['\u{2028}', '\u{2029}', '\u{202e}', '\u{2066}'] {
        assert!(!line.contains(reorder), "{line:?}");
    }
}

/// Every problem of a manifest is a clean line, and printing the error
/// gives exactly those lines.
fn clean_problems(e: &ManifestError) {
    assert!(!e.problems().is_empty());
    for p in e.problems() {
        clean_line(p);
        assert!(p.starts_with("fuzz.toml: "), "{p:?}");
    }
    assert_eq!(e.to_string().lines().collect::<Vec<_>>(), e.problems());
}

/// Characters that break terminals and parsers: line breaks, ESC, other C0
/// and C1 controls, DEL, NUL, text-reordering marks, non-ASCII, and TOML's
/// own punctuation; the rest any character.
fn nasty_char() -> impl Strategy<Value = char> {
    const NASTY: &[char] = &[
        '\n', '\r', '\t', '\x1b', '\0', '\x07', '\x08', '\x7f', '\u{85}', '\u{9b}', '\u{9d}',
        '\u{2028}', '\u{2029}', '\u{202e}', '\u{2066}', '\u{feff}', 'é', '日', '🦀', '"', '\\',
        '[', ']', '=', '.', ':', '/', ' ', 'a', '1',
    ];
    prop_oneof![3 => prop::sample::select(NASTY), 1 => any::<char>()]
}

/// A string of [`nasty_char`]s, sometimes around an ESC sequence.
fn nasty_string(max: usize) -> impl Strategy<Value = String> {
    let chars = move || prop::collection::vec(nasty_char(), 0..max).prop_map(String::from_iter);
    prop_oneof![
        3 => chars(),
        1 => (chars(), chars()).prop_map(|(a, b)| format!("{a}\x1b[31m{b}\x1b]0;title\x07")),
    ]
}

/// `s` as a TOML basic string: what TOML cannot hold raw is escaped, so the
/// value reaches stigmer with its control characters.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c != '\t' && (c < ' ' || c == '\x7f') => {
                out.push_str(&format!("\\u{:04X}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A line a service may hold: mostly ones that are valid on their own (so
/// that many generated manifests parse and their result is checked), the
/// rest any known or unknown key with a value of any TOML type.
fn service_line() -> impl Strategy<Value = String> {
    const VALID: &[&str] = &[
        "payload = \"worker\"",
        "args = [\"--port\", \"80\"]",
        "env = { A = \"1\" }",
        "cwd = \"/tmp\"",
        "depends_on = [\"api\"]",
        "depends_on = [\"worker\"]",
        "depends_on = { api = \"started\" }",
        "depends_on = { worker = \"completed_successfully\", api = \"healthy\" }",
        "depends_on = { api = \"completed_successfully\" }",
        "restart = \"on-failure\"",
        "restart = \"always\"",
        "max_restarts = 3",
        "restart_window = \"10s\"",
        "stop_signal = \"SIGINT\"",
        "stop_timeout = \"2s\"",
        "ready = { tcp = \"127.0.0.1:80\" }",
        "ready = { http = \"http://127.0.0.1:80/\", timeout = \"5s\" }",
        "ready = { log = \"up\" }",
        "ready = { exec = [\"true\"], timeout = \"1s\" }",
        "health = { tcp = \"127.0.0.1:80\", retries = 2 }",
        "health = { http = \"http://127.0.0.1:80/\", interval = \"1s\", timeout = \"1s\" }",
        "health = { exec = [\"true\", \"x\"], start_period = \"5s\" }",
        "health = { log = \"up\" }",
    ];
    prop_oneof![
        6 => prop::sample::select(VALID).prop_map(str::to_owned),
        2 => any_line(),
        // Any key or value, with control characters escaped into it...
        1 => (nasty_string(12), nasty_string(16))
            .prop_map(|(k, v)| format!("{} = {}", toml_string(&k), toml_string(&v))),
        1 => nasty_string(16).prop_map(|v| format!("args = [{}]", toml_string(&v))),
        1 => (nasty_string(8), nasty_string(8))
            .prop_map(|(k, v)| format!("env = {{ {} = {} }}", toml_string(&k), toml_string(&v))),
        1 => (prop::sample::select(STRING_KEYS), nasty_string(16))
            .prop_map(|(k, v)| format!("{k} = {}", toml_string(&v))),
        // ...or raw, which TOML refuses in its own words.
        1 => nasty_string(24),
    ]
}

/// The keys whose value is a string.
const STRING_KEYS: &[&str] = &[
    "payload",
    "cwd",
    "restart",
    "restart_window",
    "stop_signal",
    "stop_timeout",
    "reload_signal",
    "ready.http",
    "ready.tcp",
    "ready.log",
    "ready.timeout",
    "depends_on",
    "health.http",
    "health.tcp",
    "health.interval",
    "health.timeout",
    "health.start_period",
];

/// Keys a service knows, some it does not, and values of every TOML type.
fn any_line() -> impl Strategy<Value = String> {
    const KEYS: &[&str] = &[
        "payload",
        "args",
        "env",
        "cwd",
        "depends_on",
        "restart",
        "max_restarts",
        "restart_window",
        "stop_signal",
        "stop_timeout",
        "ready",
        "ready.http",
        "ready.tcp",
        "ready.log",
        "ready.timeout",
        "ready.exec",
        "health",
        "health.http",
        "health.tcp",
        "health.exec",
        "health.log",
        "health.interval",
        "health.timeout",
        "health.retries",
        "health.start_period",
    ];
    let key = prop_oneof![prop::sample::select(KEYS).prop_map(str::to_owned), "[a-z_.]{1,12}"];
    let value = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        "[a-zA-Z0-9 ._:/-]{0,16}".prop_map(|s| format!("{s:?}")),
        Just("\"api\"".to_owned()),
        Just("\"worker\"".to_owned()),
        Just("[\"api\", \"worker\"]".to_owned()),
        Just("\"1.5s\"".to_owned()),
        Just("\"SIGTERM\"".to_owned()),
        Just("\"on-failure\"".to_owned()),
        Just("true".to_owned()),
        Just("{ A = \"1\" }".to_owned()),
        Just("[1, \"x\"]".to_owned()),
        Just("1979-05-27".to_owned()),
        ".{0,12}",
    ];
    (key, value).prop_map(|(k, v)| format!("{k} = {v}"))
}

fn manifest() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        12 => prop::sample::select(PAYLOADS).prop_map(str::to_owned),
        2 => "[a-zA-Z0-9_.-]{0,20}",
        2 => ".{0,8}".prop_map(|s| format!("{s:?}")),
        2 => nasty_string(10).prop_map(|s| toml_string(&s)),
        1 => nasty_string(10),
    ];
    let service = (name, prop::collection::vec(service_line(), 0..4))
        .prop_map(|(name, lines)| format!("[services.{name}]\n{}\n", lines.join("\n")));
    prop::collection::vec(service, 0..4).prop_map(|s| s.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_text_is_a_manifest_or_clean_lines(
        text in prop_oneof![".{0,200}", nasty_string(200)],
    ) {
        if let Err(e) = Manifest::parse(&text, "fuzz.toml", PAYLOADS) {
            clean_problems(&e);
        }
    }

    #[test]
    fn any_bytes_are_a_manifest_or_clean_lines(
        bytes in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        if let Err(e) = Manifest::parse_bytes(&bytes, "fuzz.toml", PAYLOADS) {
            clean_problems(&e);
        }
    }

    #[test]
    fn manifest_shaped_text_is_a_manifest_or_clean_lines(text in manifest()) {
        match Manifest::parse(&text, "fuzz.toml", PAYLOADS) {
            Ok(m) => {
                // What parses is safe to run with: every service runs a
                // payload this build carries, depends on services that
                // exist and come before it, holds no NUL for exec to refuse,
                // and has bounded durations and an absolute cwd.
                for (i, s) in m.services.iter().enumerate() {
                    prop_assert!(PAYLOADS.contains(&s.payload.as_str()), "{text}");
                    for d in &s.depends_on {
                        let at = m.services.iter().position(|x| x.name == d.name);
                        prop_assert!(at.is_some_and(|at| at < i), "{text}");
                        if d.condition == Condition::CompletedSuccessfully {
                            let dep = &m.services[at.unwrap()];
                            prop_assert!(dep.restart != Restart::Always, "{text}");
                        }
                    }
                    prop_assert!(!s.args.iter().any(|a| a.to_string().contains('\0')), "{text}");
                    prop_assert!(!s.env.iter().any(|(k, v)| k.is_empty()
                        || k.contains(['=', '\0']) || v.to_string().contains('\0')), "{text}");
                    prop_assert!(s.cwd.as_ref().is_none_or(|c| c.is_absolute() && c.is_dir()));
                    prop_assert!(s.stop_timeout <= MAX_DURATION && s.restart_window <= MAX_DURATION);
                    prop_assert!(s.max_restarts <= MAX_RESTARTS);
                    if let Some(r) = &s.ready {
                        prop_assert!(r.timeout >= MIN_READY_TIMEOUT && r.timeout <= MAX_DURATION);
                    }
                    if let Some(h) = &s.health {
                        prop_assert!(!matches!(h.check, Check::Log(_)), "{text}");
                        prop_assert!(h.interval >= MIN_HEALTH_INTERVAL && h.interval <= MAX_DURATION);
                        prop_assert!(h.timeout >= MIN_HEALTH_TIMEOUT && h.timeout <= MAX_DURATION);
                        prop_assert!(h.start_period <= MAX_DURATION);
                        prop_assert!((1..=MAX_HEALTH_RETRIES).contains(&h.retries));
                    }
                    for check in s.ready.iter().map(|r| &r.check).chain(s.health.iter().map(|h| &h.check)) {
                        if let Check::Exec { argv, program } = check {
                            prop_assert!(!argv.is_empty() && program.is_absolute(), "{text}");
                            prop_assert!(!argv.iter().any(|a| a.contains('\0')), "{text}");
                        }
                    }
                }
            }
            Err(e) => clean_problems(&e),
        }
    }

    #[test]
    fn any_payload_name_is_found_or_one_clean_line(
        name in prop_oneof!["\\PC{0,40}|.{0,40}", nasty_string(40)],
    ) {
        let catalog = Catalog::new(
            PAYLOADS.iter().map(|n| Payload::from_bytes(*n, &b"#!/bin/sh\n"[..])).collect(),
            None,
        );
        match catalog.get(&name) {
            Ok(p) => prop_assert_eq!(p.name(), name.as_str()),
            Err(e) => clean_line(&e.to_string()),
        }
    }
}
