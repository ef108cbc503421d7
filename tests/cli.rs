//! The command line: listing, exit statuses, multi-call, and the one-line
//! errors for bad input.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::ExitStatusExt as _;

use common::*;

#[test]
fn list_shows_every_payload_with_its_launch_mode() {
    let env = TestEnv::new();
    let out = ok(&env.stigmer().arg("list").output().unwrap());
    let probe = out.lines().find(|l| l.starts_with("probe ")).expect(&out);
    assert!(probe.contains(NATIVE_KIND), "{probe}");
    let hello = out.lines().find(|l| l.starts_with("hello ")).expect(&out);
    assert!(hello.contains("script"), "{hello}");

    let out = ok(&env.stigmer().args(["--backend", "cache", "list"]).output().unwrap());
    assert!(out.contains("cache: chosen with --backend"), "{out}");
    assert!(!env.home.exists(), "list must not create the cache");
}

#[test]
fn list_json_is_data() {
    let env = TestEnv::new();
    let out = ok(&env.stigmer().args(["--backend", "auto", "list", "--json"]).output().unwrap());
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rows = rows.as_array().unwrap();
    let probe = rows.iter().find(|r| r["name"] == "probe").unwrap();
    assert_eq!(probe["kind"], NATIVE_KIND);
    assert_eq!(probe["backend"], AUTO_ELF_BACKEND);
    let hello = rows.iter().find(|r| r["name"] == "hello").unwrap();
    assert_eq!(hello["backend"], NATIVE_BACKEND, "a #! script is not mapped");
    assert_eq!(probe["sha256"].as_str().unwrap().len(), 64);
    assert!(probe["size"].as_u64().unwrap() > 1000);
    assert!(!probe["why"].as_str().unwrap().is_empty());
    let (size, stored) = (probe["size"].as_u64().unwrap(), probe["stored_size"].as_u64().unwrap());
    if cfg!(feature = "compress") {
        assert_eq!(probe["encoding"], "zstd");
        assert!(stored < size * 6 / 10, "{stored} of {size}");
    } else {
        assert_eq!(probe["encoding"], "raw");
        assert_eq!(stored, size);
    }
}

#[test]
fn exit_codes_pass_through_on_both_backends() {
    let env = TestEnv::new();
    for &backend in BACKENDS {
        let o = env.run(Some(backend), "probe", &["--quiet", "--exit", "42"]);
        assert_eq!(o.status.code(), Some(42), "{backend}: {}", stderr(&o));
        let o = env.run(Some(backend), "probe", &["--quiet", "--signal", "15"]);
        assert_eq!(o.status.signal(), Some(15), "{backend}: killed by SIGTERM, reported as such");
        let o = env
            .stigmer()
            .args(["--backend", backend, "run", "hello"])
            .env("HELLO_EXIT", "7")
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(7), "{backend}: {}", stderr(&o));
    }
}

#[test]
fn every_demo_payload_runs_on_both_backends() {
    let env = TestEnv::new();
    for &backend in BACKENDS {
        let o = env.run(Some(backend), "probe", &["--", "--env", "TERM_PROGRAM_X"]);
        ok(&o);
        assert_eq!(probe_field(&o, "argv"), r#"["probe", "--env", "TERM_PROGRAM_X"]"#, "{backend}");
        let exe = probe_field(&o, "exe");
        match backend {
            "memfd" => assert_eq!(exe, "/memfd:probe (deleted)"),
            _ => assert!(exe.starts_with(env.home.to_str().unwrap()), "{exe}"),
        }
        let out = ok(&env.run(Some(backend), "hello", &["a", "b c"]));
        assert_eq!(out, "hello from an embedded shell script (argv: a b c)\n", "{backend}");
    }
}

#[test]
fn payload_flags_after_the_name_are_the_payloads() {
    let env = TestEnv::new();
    let o = env.run(None, "probe", &["--quiet", "-v", "--help"]);
    // --quiet reached the probe (it printed nothing), not stigmer.
    assert_eq!(ok(&o), "");
}

#[test]
fn multicall_through_a_link() {
    let env = TestEnv::new();
    std::fs::create_dir_all(env.dir.path().join("bin")).unwrap();
    let link = env.dir.path().join("bin/probe");
    std::os::unix::fs::symlink(stigmer_bin(), &link).unwrap();
    let o = std::process::Command::new(&link)
        .args(["--env", "STIGMER_HOME", "--exit", "3"])
        .env("STIGMER_HOME", &env.home)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert_eq!(probe_field(&o, "argv"), r#"["probe", "--env", "STIGMER_HOME", "--exit", "3"]"#);
}

#[test]
fn unknown_payload_lists_the_names() {
    let env = TestEnv::new();
    let o = env.run(None, "nope", &[]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o),
        "error: no payload named \"nope\": this stigmer carries hello, probe, stigmer-server, workflow-runner\n"
    );
}

#[test]
fn unknown_backend_is_refused() {
    let env = TestEnv::new();
    let o = env.stigmer().args(["--backend", "floppy", "list"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("invalid value 'floppy'"), "{}", stderr(&o));
    assert!(stderr(&o).contains("auto, memfd, cache"), "{}", stderr(&o));

    let o = env.stigmer().arg("list").env("STIGMER_BACKEND", "floppy").output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));

    // The multi-call path reads STIGMER_BACKEND itself.
    let link = env.dir.path().join("probe");
    std::os::unix::fs::symlink(stigmer_bin(), &link).unwrap();
    let o = std::process::Command::new(&link).env("STIGMER_BACKEND", "floppy").output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(stderr(&o), "error: unknown backend \"floppy\": use auto, memfd, mapped or cache\n");
}

#[test]
fn unknown_flag_is_one_clear_error() {
    let env = TestEnv::new();
    let o = env.stigmer().args(["list", "--jsn"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).starts_with("error: unexpected argument '--jsn'"), "{}", stderr(&o));
}

#[test]
fn unusable_stigmer_home_is_one_clear_error() {
    let env = TestEnv::new();
    // A file where the home folder should be.
    std::fs::write(&env.home, "not a folder").unwrap();
    let o = env.run(Some("cache"), "probe", &[]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(env.home.to_str().unwrap()) && err.contains("STIGMER_HOME"), "{err}");
}

#[test]
fn unreadable_stigmer_home_is_one_clear_error() {
    // Root reads everything: check as an unprivileged user.
    require!(is_root() && have("setpriv"), "needs root and setpriv to act as another user");
    let env = TestEnv::new();
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir(&env.home).unwrap();
    std::fs::set_permissions(&env.home, std::fs::Permissions::from_mode(0o000)).unwrap();
    nix::unistd::chown(&env.home, Some(65534.into()), Some(65534.into())).unwrap();
    let o = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(stigmer_bin())
        .args(["--backend", "cache", "run", "probe"])
        .env("STIGMER_HOME", &env.home)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("Permission denied") && err.contains("STIGMER_HOME"), "{err}");
}

#[test]
fn version_and_help() {
    let env = TestEnv::new();
    let out = ok(&env.stigmer().arg("--version").output().unwrap());
    // The first line names the target, as the release archive's name does.
    let target = stigmer_payloads::TARGET;
    assert!(target.starts_with(std::env::consts::ARCH), "{target}");
    assert!(target.contains(std::env::consts::OS), "{target}");
    let first = format!("stigmer {} ({target})\n", env!("CARGO_PKG_VERSION"));
    assert!(out.starts_with(&first), "{out}");
    // --version names every payload with its size and sha256, as list does.
    let list: serde_json::Value =
        serde_json::from_str(&ok(&env.stigmer().args(["list", "--json"]).output().unwrap()))
            .unwrap();
    for p in list.as_array().unwrap() {
        let line = out
            .lines()
            .find(|l| l.split_whitespace().next() == p["name"].as_str())
            .unwrap_or_else(|| panic!("no line for {p} in {out}"));
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields[1], p["size"].to_string(), "{line}");
        assert_eq!(fields[4], p["sha256"].as_str().unwrap(), "{line}");
    }
    // -V stays one line.
    let short = ok(&env.stigmer().arg("-V").output().unwrap());
    assert_eq!(short, format!("stigmer {}\n", env!("CARGO_PKG_VERSION")));
    let out = ok(&env.stigmer().arg("--help").output().unwrap());
    for cmd in ["run", "list", "cache"] {
        assert!(out.contains(cmd), "{out}");
    }
}

#[test]
fn payloads_get_the_callers_environment_and_nothing_of_stigmers() {
    // What the probe has open when this test runs it directly: whatever the
    // test itself inherited and passes on.
    let direct = {
        let env = TestEnv::new();
        ok(&env.run(Some("cache"), "probe", &["--quiet"]));
        let entry = env.entries().into_iter().find(|p| p.ends_with("probe")).unwrap();
        probe_field(&std::process::Command::new(entry).output().unwrap(), "fds")
    };
    for backend in BACKENDS {
        let env = TestEnv::new();
        let o = env
            .stigmer()
            .args(["--backend", backend, "run", "probe"])
            .args(["--env", "FOO", "--env", "STIGMER_HOME", "--env", "TMPDIR"])
            .args(["--env", stigmer::doctor::PROBE_ENV])
            .env("FOO", "bar")
            .env_remove("TMPDIR")
            .output()
            .unwrap();
        let out = ok(&o);
        let vars: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("env: ")).collect();
        // The caller's variables pass through unchanged, stigmer's own
        // settings included (documented); stigmer adds nothing of its own.
        let home = format!("STIGMER_HOME={}", env.home.display());
        assert_eq!(
            vars,
            [
                "FOO=bar",
                home.as_str(),
                "TMPDIR unset",
                &format!("{} unset", stigmer::doctor::PROBE_ENV)
            ],
            "{backend}"
        );
        // And no descriptor of stigmer's (a memfd, the cache entry) is open.
        assert_eq!(probe_field(&o, "fds"), direct, "{backend}");
    }
}

#[test]
fn completion_scripts_are_valid_for_each_shell() {
    let env = TestEnv::new();
    for (shell, check) in [
        ("bash", &["bash", "-n"][..]),
        ("zsh", &["zsh", "-n"][..]),
        ("fish", &["fish", "--no-execute"][..]),
    ] {
        require!(have(check[0]), "{} is not installed", check[0]);
        let script = ok(&env.stigmer().args(["completions", shell]).output().unwrap());
        for word in ["run", "server", "list", "doctor", "cache", "backend"] {
            assert!(script.contains(word), "{shell}: no {word}");
        }
        let file = env.dir.path().join(format!("stigmer.{shell}"));
        std::fs::write(&file, &script).unwrap();
        let o = std::process::Command::new(check[0]).args(&check[1..]).arg(&file).output().unwrap();
        assert!(o.status.success(), "{shell} rejects its script: {}", stderr(&o));
    }
    let o = env.stigmer().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "an unknown shell is a usage error");
}

#[test]
fn the_man_page_is_roff_with_every_command() {
    let env = TestEnv::new();
    let page = ok(&env.stigmer().arg("man").output().unwrap());
    assert!(page.contains(".TH stigmer 1"), "{page}");
    // Every command has its own subsection, with its usage...
    for cmd in [
        "run",
        "server",
        "server start",
        "server stop",
        "server status",
        "server restart",
        "server logs",
        "list",
        "doctor",
        "cache prune",
        "cache verify",
        "completions",
        "man",
    ] {
        assert!(
            page.contains(&format!(".SS \"stigmer {cmd} ")),
            "no stigmer {cmd} in the man page"
        );
    }
    // ... and its options; every key of services.toml is described.
    for option in
        ["\\-\\-follow", "\\-\\-lines", "\\-\\-config", "\\-\\-json\\-logs", "\\-\\-backend"]
    {
        assert!(page.contains(option), "no {option} in the man page");
    }
    for key in stigmer::manifest::Key::ALL {
        assert!(
            page.contains(&format!(".TP\n\\fB{}\\fR\n", key.as_str())),
            "no key {key} in the man page"
        );
    }
    // man itself renders it without a warning.
    require!(have("man"), "man is not installed");
    let file = env.dir.path().join("stigmer.1");
    std::fs::write(&file, &page).unwrap();
    let o = std::process::Command::new("man")
        .args(["--warnings", "-l"])
        .arg(&file)
        .env("MANPAGER", "cat")
        .env("MAN_KEEP_FORMATTING", "0")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stderr(&o), "", "man warns about the page");
    assert!(stdout(&o).contains("stigmer"));
}

/// `stigmer run NAME ...` with no option before NAME skips building the
/// command line; what the payload gets, where it runs from and the errors
/// are the same as when clap parses it (an option before `run` makes it).
#[test]
fn run_parses_the_same_with_or_without_options() {
    let env = TestEnv::new();
    let argv_tails: [&[&str]; 6] = [
        &[],
        &["a b", ""],
        &["--", "--help"],
        &["-q", "-v", "--backend", "cache", "-h"],
        &["run", "probe", "--", "--"],
        &["--version"],
    ];
    for tail in argv_tails {
        for backend in std::iter::once(None).chain(BACKENDS.iter().copied().map(Some)) {
            let both = [
                vec!["run", "probe"],
                vec!["--backend", backend.unwrap_or("auto"), "run", "probe"],
            ]
            .map(|head| {
                let mut cmd = env.stigmer();
                cmd.env_remove("STIGMER_BACKEND").args(head).args(tail);
                if let Some(backend) = backend {
                    cmd.env("STIGMER_BACKEND", backend);
                }
                let o = cmd.output().unwrap();
                ok(&o);
                (
                    probe_field(&o, "argv"),
                    probe_field(&o, "exe").replace(&env.home.display().to_string(), "HOME"),
                )
            });
            assert_eq!(both[0], both[1], "{tail:?} with STIGMER_BACKEND={backend:?}");
            let want = std::iter::once("probe")
                .chain(tail.iter().copied().skip(usize::from(tail.first() == Some(&"--"))))
                .map(|a| format!("{a:?}"))
                .collect::<Vec<_>>()
                .join(", ");
            assert_eq!(both[0].0, format!("[{want}]"), "{tail:?}");
        }
    }

    // What is not a plain run of a payload is clap's, both ways.
    for (args, backend) in [
        (&["run", "nosuch"][..], None),
        (&["run", "probe"], Some("floppy")),
        (&["run", "probe"], Some("")),
        (&["run"], None),
        (&["run", "--help"], None),
    ] {
        let mut cmd = env.stigmer();
        cmd.env_remove("STIGMER_BACKEND").args(args);
        if let Some(backend) = backend {
            cmd.env("STIGMER_BACKEND", backend);
        }
        let plain = cmd.output().unwrap();
        let mut cmd = env.stigmer();
        cmd.env_remove("STIGMER_BACKEND").arg("-v").args(args);
        if let Some(backend) = backend {
            cmd.env("STIGMER_BACKEND", backend);
        }
        let with_option = cmd.output().unwrap();
        assert_eq!(plain.status.code(), with_option.status.code(), "{args:?} {backend:?}");
        assert_eq!(stdout(&plain), stdout(&with_option), "{args:?} {backend:?}");
        assert_eq!(stderr(&plain), stderr(&with_option), "{args:?} {backend:?}");
    }
}
