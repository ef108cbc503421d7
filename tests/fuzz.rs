//! Property tests for what users type: the manifest and payload names.
//! Whatever the input, stigmer answers with a value or one clear line,
//! never a panic.

use proptest::prelude::*;
use stigmer::{Catalog, Manifest, Payload};

const PAYLOADS: &[&str] = &["api", "worker", "hello"];

/// Every error is one non-empty line that names where it comes from.
fn one_line(message: &str) {
    assert!(!message.is_empty());
    assert!(!message.contains('\n'), "{message:?}");
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
        "restart = \"on-failure\"",
        "restart = \"always\"",
        "max_restarts = 3",
        "restart_window = \"10s\"",
        "stop_signal = \"SIGINT\"",
        "stop_timeout = \"2s\"",
        "ready = { tcp = \"127.0.0.1:80\" }",
        "ready = { http = \"http://127.0.0.1:80/\", timeout = \"5s\" }",
        "ready = { log = \"up\" }",
    ];
    prop_oneof![
        3 => prop::sample::select(VALID).prop_map(str::to_owned),
        1 => any_line(),
    ]
}

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
        6 => prop::sample::select(PAYLOADS).prop_map(str::to_owned),
        1 => "[a-zA-Z0-9_.-]{0,20}",
        1 => ".{0,8}".prop_map(|s| format!("{s:?}")),
    ];
    let service = (name, prop::collection::vec(service_line(), 0..4))
        .prop_map(|(name, lines)| format!("[services.{name}]\n{}\n", lines.join("\n")));
    prop::collection::vec(service, 0..4).prop_map(|s| s.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_text_is_a_manifest_or_one_line(text in ".{0,200}") {
        if let Err(e) = Manifest::parse(&text, "fuzz.toml", PAYLOADS) {
            one_line(&e.to_string());
        }
    }

    #[test]
    fn manifest_shaped_text_is_a_manifest_or_one_line(text in manifest()) {
        match Manifest::parse(&text, "fuzz.toml", PAYLOADS) {
            Ok(m) => {
                // What parses is usable: every service runs a payload this
                // build carries and depends on services that exist.
                for s in &m.services {
                    prop_assert!(PAYLOADS.contains(&s.payload.as_str()), "{text}");
                    for d in &s.depends_on {
                        prop_assert!(m.get(d).is_some(), "{text}");
                    }
                }
            }
            Err(e) => one_line(&e.to_string()),
        }
    }

    #[test]
    fn any_payload_name_is_found_or_one_line(name in "\\PC{0,40}|.{0,40}") {
        let catalog = Catalog::new(
            PAYLOADS.iter().map(|n| Payload::from_bytes(*n, &b"#!/bin/sh\n"[..])).collect(),
            None,
        );
        match catalog.get(&name) {
            Ok(p) => prop_assert_eq!(p.name(), name.as_str()),
            Err(e) => one_line(&e.to_string()),
        }
    }
}
