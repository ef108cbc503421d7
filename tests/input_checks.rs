//! What stigmer accepts from its input, through the real binary: every
//! manifest problem is reported in one run, one clean line each, before
//! anything starts; and a stray `STIGMER_DOCTOR_PROBE` or `STIGMER_MAPPED`
//! changes nothing.

mod common;

use std::process::Output;

use common::*;

const PROBE_ENV: &str = "STIGMER_DOCTOR_PROBE";

fn marker(test: &str) -> String {
    format!("marker-{test}-{}", std::process::id())
}

/// Asserts that `bytes` holds lines with no control character in them.
#[track_caller]
fn clean_lines(bytes: &[u8]) {
    let text = String::from_utf8(bytes.to_vec()).expect("stderr is UTF-8");
    for line in text.split_terminator('\n') {
        assert!(!line.chars().any(char::is_control), "{line:?} in\n{text:?}");
    }
}

#[test]
fn five_mistakes_are_five_lines_and_nothing_starts() {
    let env = TestEnv::new();
    let m = marker("five");
    // `first` is valid and would start at once (and print the marker).
    let manifest = format!(
        r#"
[services.first]
payload = "probe"
args = ["--say", "{m}", "--sleep", "60000"]

[services.api]
payload = "probe"
port = 80
args = ["--say", "a\u0000b"]
cwd = "/nonexistent/{m}"

[services.runner]
payload = "nope"
depends_on = ["db"]
"#
    );
    let (status, out, err) = env.server(&manifest, &[], &[]).finish(10);
    assert_eq!(status.code(), Some(2), "{err:#?}");
    let want = [
        "service api: unknown key \"port\"",
        "service api: args[1] \"a\\0b\" holds a NUL byte",
        &format!("service api: cwd \"/nonexistent/{m}\" does not exist"),
        "service runner: payload \"nope\" is not in this build",
        "service runner: depends_on \"db\" is not a service here (services: api, first, runner)",
    ];
    assert_eq!(err.len(), want.len(), "{err:#?}");
    for (line, want) in err.iter().zip(want) {
        assert!(line.starts_with("error: \"/") && line.contains(want), "{line}\nwant: {want}");
    }
    assert!(out.is_empty(), "{out:?}");
    assert!(processes_with(&m).is_empty());
}

#[test]
fn names_and_values_cannot_forge_lines_or_escapes() {
    let env = TestEnv::new();
    let manifest = "[services.\"x\\u001b[2J\\r\\nerror: forged\"]\npayload = \"probe\"\n\
                    [services.api]\npayload = \"\\u009b31m\"\nstop_signal = \"\\u0007\\n\"\n\
                    ready = { http = \"http://127.0.0.1:1/\\r\\nHost: evil\" }\n";
    let path = env.dir.path().join("services.toml");
    std::fs::write(&path, manifest).unwrap();
    let o = env.stigmer().args(["server", "--config"]).arg(&path).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    clean_lines(&o.stderr);
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 4, "{err}");
    assert!(err.lines().all(|l| l.starts_with("error: \"/")), "{err}");
    assert!(err.contains(r#"service "x\u{1b}[2J\r\nerror: forged": payload name"#), "{err}");
    assert!(err.contains(r#"payload "\u{9b}31m" is not in this build"#), "{err}");
    assert!(err.contains(r#"stop_signal "\u{7}\n" is not a signal"#), "{err}");
    assert!(
        err.contains(r#"ready.http "http://127.0.0.1:1/\r\nHost: evil" holds a space"#),
        "{err}"
    );
}

#[test]
fn a_manifest_that_is_not_utf8_is_located() {
    let env = TestEnv::new();
    let path = env.dir.path().join("services.toml");
    std::fs::write(&path, b"[services.api]\npayload = \"probe\"\nargs = [\"\xff\x1b\"]\n").unwrap();
    let o = env.stigmer().args(["server", "--config"]).arg(&path).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o),
        format!(
            "error: {path:?}: line 3, byte offset 42: byte 0xff is not UTF-8: save the manifest as UTF-8 text\n"
        )
    );
}

#[test]
fn a_relative_cwd_is_the_servers_working_folder() {
    let env = TestEnv::new();
    let m = marker("cwd");
    let path = env.dir.path().join("services.toml");
    let run = |cwd: &str| -> Output {
        let manifest = format!(
            "[services.api]\npayload = \"probe\"\ncwd = {cwd:?}\nargs = [\"--quiet\", \"--say\", \"{m}\"]\n"
        );
        std::fs::write(&path, manifest).unwrap();
        env.stigmer()
            .current_dir(env.dir.path())
            .args(["server", "--config"])
            .arg(&path)
            .output()
            .unwrap()
    };
    // Missing: named by its absolute path under the folder stigmer ran in.
    let o = run("work");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let abs = env.dir.path().join("work");
    assert!(
        stderr(&o).contains(&format!("cwd \"work\" (here {abs:?}) does not exist")),
        "{}",
        stderr(&o)
    );
    // Present: the service runs there (and exits, restart "no").
    std::fs::create_dir(&abs).unwrap();
    let o = run("work");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stdout(&o).contains(&m), "{}\n{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("api exited (exit status 0)"), "{}", stderr(&o));
    // A file is not a folder.
    std::fs::write(env.dir.path().join("file"), "").unwrap();
    let o = run("file");
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("is not a folder"), "{}", stderr(&o));
}

#[test]
fn a_stray_doctor_probe_variable_changes_nothing() {
    let env = TestEnv::new();
    let commands: &[&[&str]] = &[
        &["list"],
        &["run", "probe", "--quiet", "--say", "ran", "--exit", "3"],
        &["server", "--config", "/nonexistent/services.toml"],
    ];
    for args in commands {
        let without = env.stigmer().args(*args).env_remove(PROBE_ENV).output().unwrap();
        let with = env.stigmer().args(*args).env(PROBE_ENV, "1").output().unwrap();
        assert_eq!(with.status.code(), without.status.code(), "{args:?}: {}", stderr(&with));
        assert_eq!(stdout(&with), stdout(&without), "{args:?}");
        assert_eq!(stderr(&with), stderr(&without), "{args:?}");
    }
    let list = env.stigmer().arg("list").env(PROBE_ENV, "1").output().unwrap();
    assert!(ok(&list).contains("probe "), "list ran for real");
    let run = env.stigmer().args(commands[1]).env(PROBE_ENV, "1").output().unwrap();
    assert_eq!((run.status.code(), stdout(&run).as_str()), (Some(3), "ran\n"));
    let server = env.stigmer().args(commands[2]).env(PROBE_ENV, "1").output().unwrap();
    assert_eq!(server.status.code(), Some(1));
    assert!(stderr(&server).contains("cannot read the manifest"), "{}", stderr(&server));
}

#[test]
fn doctor_still_runs_its_probe_and_checks_the_embedded_manifest() {
    let env = TestEnv::new();
    // Set for doctor itself too: doctor must not take itself for the probe.
    let o = env.stigmer().args(["doctor", "--json"]).env(PROBE_ENV, "1").output().unwrap();
    let report: serde_json::Value = serde_json::from_str(&ok(&o)).unwrap();
    if cfg!(target_os = "linux") {
        assert_eq!(report["memfd"]["exec"]["ok"], true, "{report}");
    }
    assert_eq!(report["manifest_problems"], serde_json::json!([]), "{report}");
    let text = ok(&env.stigmer().arg("doctor").output().unwrap());
    assert!(text.lines().any(|l| l.starts_with("ok  services.toml ")), "{text}");
}

/// `STIGMER_MAPPED=NAME` is what a mapped payload gets, so that a re-exec of
/// its `/proc/self/exe` (stigmer) runs it again. Inherited by anything else
/// (stigmer run from a payload's shell, under another name, or launching a
/// payload otherwise), it changes nothing: stigmer exec'd by its path is
/// stigmer whatever `argv[0]` is, and only a mapped payload gets the
/// variable, set to its own name.
#[test]
fn a_stray_stigmer_mapped_variable_changes_nothing() {
    use std::os::unix::process::CommandExt as _;
    let env = TestEnv::new();
    let link = env.dir.path().join("st");
    std::os::unix::fs::symlink(stigmer_bin(), &link).unwrap();
    let list = ok(&env.stigmer().arg("list").output().unwrap());
    for argv0 in [None, Some("my-tool"), Some("/usr/bin/env"), Some("st")] {
        for program in [stigmer_bin().to_owned(), link.clone()] {
            let mut cmd = std::process::Command::new(&program);
            cmd.env("STIGMER_HOME", &env.home).env("STIGMER_MAPPED", "probe").arg("list");
            if let Some(argv0) = argv0 {
                cmd.arg0(argv0);
            }
            let o = cmd.output().unwrap();
            assert_eq!(ok(&o), list, "{program:?} as {argv0:?}: {}", stderr(&o));
        }
    }
    let mapped: &[&str] = if cfg!(target_os = "linux") { &["mapped"] } else { &[] };
    for backend in BACKENDS.iter().chain(mapped) {
        let o = env
            .stigmer()
            .env("STIGMER_MAPPED", "workflow-runner")
            .args(["--backend", backend, "run", "probe", "--env", "STIGMER_MAPPED"])
            .output()
            .unwrap();
        let want = match *backend {
            "mapped" => "STIGMER_MAPPED=probe",
            _ => "STIGMER_MAPPED unset",
        };
        assert_eq!(probe_field(&o, "env"), want, "{backend}: {}", stderr(&o));
    }
}
