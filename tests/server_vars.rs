//! `${VAR}` in `services.toml`, through a real `stigmer server`: variables
//! of the server's environment reach a service's arguments, environment
//! and working folder, defaults stand in for unset and empty ones, `$$` is
//! a `$`; an unset variable is one line, exit 2, and nothing starts.
//! (The checks read `/proc`, so this file is Linux-only.)
#![cfg(target_os = "linux")]

mod common;

use std::ffi::OsStr;
use std::path::Path;

use common::*;
use nix::sys::signal::Signal;

/// Variables these tests set or unset in the server's environment.
const PORT: &str = "STIGMER_VARS_TEST_PORT";
const EMPTY: &str = "STIGMER_VARS_TEST_EMPTY";
const DB_HOST: &str = "STIGMER_VARS_TEST_DB_HOST";
const WORK: &str = "STIGMER_VARS_TEST_WORK";
const LEVEL: &str = "STIGMER_VARS_TEST_LEVEL";
const MODE: &str = "STIGMER_VARS_TEST_MODE";
const UNSET: &str = "STIGMER_VARS_TEST_UNSET";

/// Starts `stigmer server --config` on `manifest` with `set` added to its
/// environment and `unset` taken out of it.
fn server(env: &TestEnv, manifest: &str, set: &[(&str, &OsStr)], unset: &[&str]) -> Server {
    let path = env.dir.path().join("services.toml");
    std::fs::write(&path, manifest).unwrap();
    let mut cmd = env.stigmer();
    cmd.arg("server").arg("--config").arg(&path).env_remove("NO_COLOR");
    for (name, value) in set {
        cmd.env(name, value);
    }
    for name in unset {
        cmd.env_remove(name);
    }
    Server::spawn(&mut cmd)
}

/// The lines `api` wrote, without their `api | ` prefix.
fn lines_of_api(out: &[String]) -> Vec<&str> {
    out.iter().filter_map(|l| l.strip_prefix("api | ")).collect()
}

#[test]
fn variables_fill_args_env_and_cwd_from_the_servers_environment() {
    let env = TestEnv::new();
    let work = env.dir.path().join("work");
    std::fs::create_dir_all(work.join("sub")).unwrap();
    let manifest = format!(
        r#"
[services.api]
payload = "probe"
args = [
    "--say", "port=${{{PORT}}}",
    "--say", "level=${{{LEVEL}:-info}}",
    "--say", "empty=${{{EMPTY}:-fallback}}",
    "--say", "literal=$$5 $${{{PORT}}} $HOME $1 $",
    "--env", "DATABASE_URL", "--env", "MODE",
    "--sleep", "60000",
]
env = {{ DATABASE_URL = "postgres://${{{DB_HOST}}}:${{{PORT}}}/app", MODE = "${{{MODE}:-dev}}" }}
cwd = "${{{WORK}}}/sub"
"#
    );
    let set: &[(&str, &OsStr)] = &[
        (PORT, OsStr::new("8123")),
        (EMPTY, OsStr::new("")),
        (DB_HOST, OsStr::new("db.internal")),
        (WORK, work.as_os_str()),
    ];
    let server = server(&env, &manifest, set, &[LEVEL, MODE]);
    // The last line it says: not its argv line, which names it too and
    // comes first.
    server.wait_stdout(10, |l| l.iter().any(|l| l.starts_with("api | literal=")));
    server.signal(Signal::SIGTERM);
    let (status, out, err) = server.finish(20);
    assert!(status.success(), "{status}\n{err:#?}");
    let api = lines_of_api(&out);
    let field = |key: &str| -> &str {
        let prefix = format!("{key}: ");
        api.iter().find_map(|l| l.strip_prefix(prefix.as_str())).unwrap_or_else(|| {
            panic!("no {key:?} line:\n{out:#?}\n{err:#?}");
        })
    };
    for want in ["port=8123", "level=info", "empty=fallback", "literal=$5 ${"] {
        assert!(api.iter().any(|l| l.starts_with(want)), "no {want:?} in {api:#?}");
    }
    let literal = api.iter().find(|l| l.starts_with("literal=")).unwrap();
    assert_eq!(*literal, format!("literal=$5 ${{{PORT}}} $HOME $1 $"));
    assert!(field("argv").contains(r#""port=8123""#), "{}", field("argv"));
    assert!(api.contains(&"env: DATABASE_URL=postgres://db.internal:8123/app"), "{api:#?}");
    assert!(api.contains(&"env: MODE=dev"), "{api:#?}");
    assert_eq!(Path::new(field("cwd")), work.join("sub"));
    assert!(processes_of_home(&env.home).is_empty());
}

#[test]
fn an_unset_variable_is_one_line_exit_2_and_nothing_starts() {
    let env = TestEnv::new();
    let marker = format!("marker-unset-{}", std::process::id());
    // `first` is valid and would start at once (and print the marker).
    let manifest = format!(
        r#"
[services.first]
payload = "probe"
args = ["--say", "{marker}", "--sleep", "60000"]

[services.api]
payload = "probe"
args = ["--say", "${{{UNSET}}}", "--say", "${{{PORT}}}"]
"#
    );
    let server = server(&env, &manifest, &[(PORT, OsStr::new("8123"))], &[UNSET]);
    let (status, out, err) = server.finish(10);
    assert_eq!(status.code(), Some(2), "{err:#?}");
    let path = env.dir.path().join("services.toml");
    assert_eq!(
        err,
        [format!(
            "error: {path:?}: service api: args[1] uses ${{{UNSET}}}, which is not set in \
             stigmer's environment: set it, or give a default with ${{{UNSET}:-default}}"
        )]
    );
    assert!(out.is_empty(), "{out:?}");
    assert!(processes_with(&marker).is_empty());
    assert!(processes_of_home(&env.home).is_empty());
}
