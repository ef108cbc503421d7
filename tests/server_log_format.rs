//! The format of stigmer's own lines on stderr when they are read by a
//! program: with stderr a pipe, each starts with an RFC 3339 UTC timestamp;
//! with `--json-logs`, every line of stdout and stderr is a JSON object,
//! the closing `error:` lines included. (The checks read `/proc`, so this
//! file is Linux-only.)
#![cfg(target_os = "linux")]

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use nix::sys::signal::Signal;
use serde_json::Value;

const MANIFEST: &str = "[services.api]\npayload = \"probe\"\n\
                        args = [\"--quiet\", \"--say\", \"hello\", \"--sleep\", \"60000\"]\n";

/// A server on `manifest` with `extra` flags, stopped by SIGTERM once
/// `api` said hello: its status and lines, and the times around the run.
fn run_and_stop(extra: &[&str]) -> (std::process::ExitStatus, Vec<String>, Vec<String>) {
    let env = TestEnv::new();
    let server = env.server(MANIFEST, &[], extra);
    server.wait_stdout(10, |l| l.iter().any(|l| l.contains("hello")));
    server.wait_stderr("all services running", 10);
    server.signal(Signal::SIGTERM);
    let done = server.finish(20);
    assert!(processes_of_home(&env.home).is_empty());
    done
}

/// Asserts that `text` is an RFC 3339 time in UTC between `from` and `to`.
#[track_caller]
fn assert_time(text: &str, from: SystemTime, to: SystemTime) {
    assert!(text.ends_with('Z'), "{text:?} is not in UTC");
    let t = humantime::parse_rfc3339(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    // The clock of the test and of stigmer are one; a second of slack for
    // the sub-second part.
    let slack = Duration::from_secs(1);
    assert!(t + slack >= from && t <= to + slack, "{text} is not within the run");
}

#[test]
fn stigmer_lines_start_with_a_timestamp_when_stderr_is_not_a_terminal() {
    let from = SystemTime::now();
    let (status, out, err) = run_and_stop(&[]);
    let to = SystemTime::now();
    assert!(status.success(), "{err:#?}");
    assert!(!err.is_empty());
    for line in &err {
        let (time, rest) = line.split_once(' ').unwrap_or_else(|| panic!("{line:?}"));
        assert_time(time, from, to);
        assert!(rest.trim_start().starts_with("INFO "), "{line:?}");
    }
    // The same messages as on a terminal, after the time and level.
    for text in ["api: started (pid ", "all services running (", "SIGTERM: stopping all services"] {
        assert!(err.iter().any(|l| l.contains(text)), "no {text:?} in {err:#?}");
    }
    // The services' lines are theirs: no time added.
    assert_eq!(out, ["api | hello"]);
}

#[test]
fn json_logs_make_every_line_of_both_streams_a_json_object() {
    let from = SystemTime::now();
    let (status, out, err) = run_and_stop(&["--json-logs"]);
    let to = SystemTime::now();
    assert!(status.success(), "{err:#?}");
    let mut messages = Vec::new();
    for line in &err {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        assert_time(v["timestamp"].as_str().expect("a timestamp"), from, to);
        assert_eq!(v["level"], "INFO", "{line}");
        assert!(v["fields"].is_object(), "{line}");
        messages.push(v["message"].as_str().expect("a message").to_owned());
    }
    for text in ["api: started (pid ", "all services running (", "SIGTERM: stopping all services"] {
        assert!(messages.iter().any(|m| m.contains(text)), "no {text:?} in {messages:#?}");
    }
    assert_eq!(out.len(), 1, "{out:#?}");
    let v: Value = serde_json::from_str(&out[0]).unwrap();
    assert_eq!(v, serde_json::json!({"service": "api", "stream": "stdout", "line": "hello"}));
}

#[test]
fn json_logs_cover_the_closing_error_lines_too() {
    let env = TestEnv::new();
    // A manifest problem: exit 2, one object per problem, with its service
    // and key.
    let bad = "[services.api]\npayload = \"probe\"\nstop_timeout = \"soon\"\nrestart = \"never\"\n";
    let (status, out, err) = env.server(bad, &[], &["--json-logs"]).finish(10);
    assert_eq!(status.code(), Some(2), "{err:#?}");
    assert!(out.is_empty(), "{out:#?}");
    let problems: Vec<Value> = err.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(problems.len(), 2, "{err:#?}");
    for (v, key) in problems.iter().zip(["restart", "stop_timeout"]) {
        assert_eq!(v["level"], "ERROR");
        assert_eq!(v["fields"], serde_json::json!({"service": "api", "key": key}));
        let message = v["message"].as_str().unwrap();
        assert!(message.contains(&format!("service api: {key} ")), "{message}");
    }
    // A service that exits with restart = "no": the reason, as an object.
    let quits = "[services.api]\npayload = \"probe\"\nargs = [\"--quiet\", \"--exit\", \"3\"]\n";
    let (status, _, err) = env.server(quits, &[], &["--json-logs"]).finish(10);
    assert_eq!(status.code(), Some(1), "{err:#?}");
    let last: Value = serde_json::from_str(err.last().unwrap()).unwrap();
    assert_eq!(last["level"], "ERROR", "{err:#?}");
    assert!(last["message"].as_str().unwrap().contains("api exited (exit status 3)"), "{last}");
    for line in &err {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        assert!(v["timestamp"].is_string() && v["message"].is_string(), "{line}");
    }
}
