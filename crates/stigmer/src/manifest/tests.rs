//! Unit tests of [`super`].

use std::ffi::OsString;

use super::*;

const PAYLOADS: &[&str] = &["api", "runner", "probe"];

fn parse(text: &str) -> Result<Manifest, String> {
    Manifest::parse(text, "services.toml", PAYLOADS).map_err(|e| e.to_string())
}

#[test]
fn the_documented_example() {
    let m = parse(
        r#"
[services.runner]
depends_on = ["api"]
restart = "on-failure"
stop_signal = "SIGINT"
stop_timeout = "2s"

[services.api]
args = ["--port", "7234"]
env = { LOG_FORMAT = "json" }
ready = { http = "http://127.0.0.1:7234/healthz", timeout = "20s" }
"#,
    )
    .unwrap();
    let names: Vec<_> = m.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["api", "runner"], "dependency order");
    let api = m.get("api").unwrap();
    assert_eq!(api.payload, "api");
    assert_eq!(api.env["LOG_FORMAT"], "json");
    let ready = api.ready.as_ref().unwrap();
    assert_eq!(ready.timeout, Duration::from_secs(20));
    assert!(
        matches!(&ready.check, Check::Http { path, host, .. } if path == "/healthz" && host == "127.0.0.1:7234")
    );
    let runner = m.get("runner").unwrap();
    assert_eq!(runner.restart, Restart::OnFailure);
    assert_eq!(runner.stop_signal, Signal::SIGINT);
    assert_eq!(runner.stop_timeout, Duration::from_secs(2));
    assert_eq!(api.stop_signal, Signal::SIGTERM);
    assert_eq!(api.restart, Restart::No);
}

#[test]
fn every_error_is_one_line_naming_service_key_and_fix() {
    let cases = [
        ("[services.api]\nport = 1\n", "service api: unknown key \"port\""),
        ("[services.nope]\n", "payload \"nope\" is not in this build"),
        ("[services.api]\npayload = \"x\"\n", "set `payload` to one of them"),
        ("[services.nope]\npayload = 1\n", "service nope: payload: invalid type: integer `1`"),
        (
            "[services.api]\ndepends_on = [\"runner\"]\n[services.runner]\ndepends_on = [\"api\"]\n",
            "services api -> runner -> api form a dependency cycle",
        ),
        ("[services.api]\ndepends_on = [\"api\"]\n", "depends_on names itself"),
        ("[services.api]\ndepends_on = [\"db\"]\n", "depends_on \"db\" is not a service here"),
        (
            "[services.api]\nstop_timeout = \"10 parsecs\"\n",
            "stop_timeout \"10 parsecs\" is not a duration",
        ),
        (
            "[services.api]\nready = { tcp = \"localhost\" }\n",
            "ready.tcp \"localhost\" is not a host:port",
        ),
        ("[services.api]\nready = { http = \"ftp://x/\" }\n", "is not an http:// URL"),
        (
            "[services.api]\nready = { tcp = \"127.0.0.1:1\", log = \"x\" }\n",
            "exactly one of http, tcp, log or exec",
        ),
        ("[services.api]\nready = { tpc = \"127.0.0.1:1\" }\n", "unknown key \"ready.tpc\""),
        ("[services.api]\nrestart = \"sometimes\"\n", "restart \"sometimes\" is not a policy"),
        ("[services.api]\nstop_signal = \"SIGFOO\"\n", "stop_signal \"SIGFOO\" is not a signal"),
        ("[services.api]\nstop_signal = \"KILL\"\n", "cannot be a stop request"),
        (
            "[services.api]\nargs = \"--port 1\"\n",
            "service api: args: invalid type: string \"--port 1\", expected a sequence: write e.g. args = [",
        ),
        ("[service.api]\n", "unknown top-level key \"service\""),
        ("", "no [services.NAME] table"),
        ("[services.api\n", "line 1:"),
        (
            "[services.\"a b\"]\npayload = \"api\"\n",
            "service \"a b\": payload name \"a b\" contains ' '",
        ),
    ];
    for (text, want) in cases {
        let err = parse(text).expect_err(text);
        assert!(err.contains(want), "{text:?}\n  got: {err}\n want: {want}");
        clean(&err);
        assert!(err.starts_with("services.toml: "), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}

#[test]
fn independent_services_keep_name_order() {
    let m = parse("[services.runner]\n[services.api]\n[services.probe]\ndepends_on=[\"runner\"]\n")
        .unwrap();
    let names: Vec<_> = m.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["api", "runner", "probe"]);
}

#[test]
fn http_urls() {
    let http_check = |url| check::http_check(Key::ReadyHttp, url);
    let Check::Http { addr, host, path, .. } = http_check("http://127.0.0.1/x?y=1").unwrap() else {
        panic!()
    };
    assert_eq!(addr.port(), 80);
    assert_eq!((host.as_str(), path.as_str()), ("127.0.0.1", "/x?y=1"));
    let Check::Http { addr, path, .. } = http_check("http://[::1]:9000").unwrap() else { panic!() };
    assert_eq!((addr.port(), path.as_str()), (9000, "/"));
    assert!(http_check("https://127.0.0.1/").is_err());
    assert!(http_check("http://u@127.0.0.1/").is_err());
}

/// Asserts that every line of `err` is one problem with no control
/// character.
fn clean(err: &str) {
    for line in err.lines() {
        assert!(line.starts_with("services.toml: "), "{err:?}");
        assert!(!line.chars().any(char::is_control), "{line:?}");
    }
}

fn one_problem(text: &str) -> String {
    let err = parse(text).expect_err(text);
    clean(&err);
    assert_eq!(err.lines().count(), 1, "{err}");
    err
}

#[test]
fn durations_are_bounded_at_both_ends() {
    for key in ["stop_timeout", "restart_window"] {
        let m = parse(&format!("[services.api]\n{key} = \"24h\"\n")).unwrap();
        let api = m.get("api").unwrap();
        assert_eq!(
            if key == "stop_timeout" { api.stop_timeout } else { api.restart_window },
            MAX_DURATION
        );
        for long in ["24h 1ns", "25h", "300000000000y"] {
            let err = one_problem(&format!("[services.api]\n{key} = \"{long}\"\n"));
            assert!(err.contains(&format!("{key} \"{long}\" is longer than 1day")), "{err}");
        }
    }
    let timeout = |t: &str| {
        parse(&format!("[services.api]\nready = {{ log = \"up\", timeout = \"{t}\" }}\n"))
    };
    assert_eq!(timeout("24h").unwrap().services[0].ready.as_ref().unwrap().timeout, MAX_DURATION);
    assert_eq!(
        timeout("1ms").unwrap().services[0].ready.as_ref().unwrap().timeout,
        MIN_READY_TIMEOUT
    );
    for zero in ["0s", "999us"] {
        let err = timeout(zero).unwrap_err();
        assert!(err.contains(&format!("ready.timeout \"{zero}\" is shorter than 1ms")), "{err}");
        assert!(err.contains("remove `ready`"), "{err}");
    }
    assert!(timeout("300000000000y").unwrap_err().contains("is longer than 1day"));
    // 0: SIGKILL right after the stop signal.
    let m = parse("[services.api]\nstop_timeout = \"0s\"\n").unwrap();
    assert_eq!(m.services[0].stop_timeout, Duration::ZERO);
    // 0: restarts never add up, so the service is restarted for ever.
    let m = parse("[services.api]\nrestart_window = \"0s\"\n").unwrap();
    assert_eq!(m.services[0].restart_window, MIN_RESTART_WINDOW);
}

#[test]
fn max_restarts_is_bounded() {
    let max = |n: &str| parse(&format!("[services.api]\nmax_restarts = {n}\n"));
    assert_eq!(max("0").unwrap().services[0].max_restarts, 0);
    assert_eq!(max("1000").unwrap().services[0].max_restarts, MAX_RESTARTS);
    for bad in ["1001", "-1", "4294967296", "9223372036854775807"] {
        let err = max(bad).unwrap_err();
        assert!(err.contains(&format!("max_restarts {bad} is out of range: use 0")), "{err}");
    }
    assert!(max("\"5\"").unwrap_err().contains("max_restarts: invalid type"));
}

#[test]
fn every_problem_is_reported_in_one_run() {
    let text = r#"
bogus = 1
[services.api]
port = 1
stop_timeout = "soon"
args = ["a\u0000b"]
env = { "A=B" = "1", C = "x\u0000" }
[services.runner]
depends_on = ["db", "runner"]
max_restarts = -3
ready = { tcp = "127.0.0.1:1", timeout = "0s" }
[services.probe]
payload = "nope"
cwd = "/nonexistent/stigmer/test"
"#;
    let err = parse(text).unwrap_err();
    clean(&err);
    let want = [
        "unknown top-level key \"bogus\"",
        "service api: unknown key \"port\"",
        "service api: args[0] \"a\\0b\" holds a NUL byte",
        "service api: env key \"A=B\" is not a variable name",
        "service api: env \"C\" = \"x\\0\" holds a NUL byte",
        "service api: stop_timeout \"soon\" is not a duration",
        "service probe: payload \"nope\" is not in this build",
        "service probe: cwd \"/nonexistent/stigmer/test\" does not exist",
        "service runner: ready.timeout \"0s\" is shorter than 1ms",
        "service runner: max_restarts -3 is out of range",
        "service runner: depends_on \"db\" is not a service here (services: api, probe, runner)",
        "service runner: depends_on names itself",
    ];
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), want.len(), "{err}");
    for (line, want) in lines.iter().zip(want) {
        assert!(line.contains(want), "{line}\nwant: {want}\nall:\n{err}");
    }
}

#[test]
fn problems_are_typed_and_print_as_their_lines() {
    let text = "bogus = 1\n\
                [services.api]\nstop_timeout = \"soon\"\ndepends_on = [\"db\"]\n\
                [services.runner]\nstop_signal = \"KILL\"\nready = { tcp = \"x\" }\n\
                [services.a]\npayload = \"api\"\ndepends_on = [\"b\"]\n\
                [services.b]\npayload = \"api\"\ndepends_on = [\"a\"]\n";
    let err = Manifest::parse(text, "services.toml", PAYLOADS).unwrap_err();
    let got: Vec<(Option<&str>, Option<Key>)> =
        err.details().iter().map(|p| (p.service_name(), p.key())).collect();
    assert_eq!(
        got,
        [
            (None, None),
            (Some("api"), Some(Key::StopTimeout)),
            (Some("runner"), Some(Key::ReadyTcp)),
            (Some("runner"), Some(Key::StopSignal)),
            (Some("api"), Some(Key::DependsOn)),
            (None, Some(Key::DependsOn)),
        ],
        "{err}"
    );
    let kinds = err.details().iter().map(Problem::kind);
    assert!(matches!(
        kinds.collect::<Vec<_>>()[..],
        [
            ProblemKind::UnknownTopLevelKey { .. },
            ProblemKind::NotADuration { key: Key::StopTimeout, .. },
            ProblemKind::NotHostPort { key: Key::ReadyTcp, .. },
            ProblemKind::UncatchableSignal { key: Key::StopSignal, .. },
            ProblemKind::UnknownDependency { count: 4, .. },
            ProblemKind::Cycle { .. },
        ]
    ));
    let ProblemKind::Cycle { services } = err.details()[5].kind() else { unreachable!() };
    assert_eq!(services, &["a", "b", "a"]);
    for (problem, line) in err.details().iter().zip(err.problems()) {
        assert_eq!(line, &format!("services.toml: {problem}"));
    }
}

#[test]
fn cwd_is_resolved_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let m = parse(&format!("[services.api]\ncwd = {:?}\n", dir.path())).unwrap();
    assert_eq!(m.services[0].cwd.as_deref(), Some(dir.path()));
    // Relative: against the current folder, made absolute now.
    let m = parse("[services.api]\ncwd = \"src\"\n").unwrap();
    let want = std::env::current_dir().unwrap().join("src");
    assert_eq!(m.services[0].cwd.as_deref(), Some(want.as_path()));
    let file = dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    let err = one_problem(&format!("[services.api]\ncwd = {:?}\n", file));
    assert!(err.ends_with(&format!("cwd {file:?} is not a folder: give a folder")), "{err}");
    let err = one_problem("[services.api]\ncwd = \"no-such-folder\"\n");
    assert!(err.contains("cwd \"no-such-folder\" (here \"/"), "{err}");
    assert!(err.contains("no-such-folder\") does not exist"), "{err}");
    assert!(one_problem("[services.api]\ncwd = \"\"\n").contains("cwd is empty"));
    assert!(one_problem("[services.api]\ncwd = \"/tmp\\u0000x\"\n").contains("NUL byte"));
}

#[test]
fn bytes_that_are_not_utf8_are_located() {
    let bytes = b"[services.api]\nargs = [\"caf\xe9\"]\n";
    let err = Manifest::parse_bytes(bytes, "services.toml", PAYLOADS).unwrap_err().to_string();
    assert_eq!(
        err,
        "services.toml: line 2, byte offset 27: byte 0xe9 is not UTF-8: save the manifest as UTF-8 text"
    );
    let m = Manifest::parse_bytes(b"[services.api]\n", "services.toml", PAYLOADS).unwrap();
    assert_eq!(m.services[0].name, "api");
}

#[test]
fn names_and_values_are_printed_escaped() {
    let cases = [
        "[services.\"a\\u001b[31mb\"]\npayload = \"api\"\n",
        "[services.\"a\\nb\\r\"]\npayload = \"api\"\n",
        "[services.api]\npayload = \"\\u001b]0;x\\u0007\"\n",
        "[services.api]\n\"k\\u009b\\n\" = 1\n",
        "[services.api]\nstop_signal = \"\\r\\n\"\n",
        "[services.api]\nready = { http = \"http://1.2.3.4/\\r\\nX: y\" }\n",
        "[services.api]\ndepends_on = [\"\\u001bc\"]\n",
        "\"\\u202e\" = 1\n[services.api]\n",
        "[services.api]\nargs = [1, \"\\u001b\"]\n",
        "[services.api]\nx = \"\u{1b}\"\n",
        "[services.api]\nargs = \"\u{1b}[2J\n",
    ];
    for text in cases {
        let err = parse(text).expect_err(text);
        clean(&err);
        assert!(!err.contains('\u{202e}'), "{err:?}");
    }
    let err = Manifest::parse("", "a\u{1b}[31m\nb", PAYLOADS).unwrap_err().to_string();
    assert_eq!(err, "a\\u{1b}[31m; b: no [services.NAME] table: add at least one service");
}

/// `n` services on payload "api": each depends on the one before it
/// (`chain`) or on none.
fn many(n: usize, chain: bool) -> String {
    let mut text = String::new();
    for i in 0..n {
        text.push_str(&format!("[services.s{i:05}]\npayload = \"api\"\n"));
        if chain && i > 0 {
            text.push_str(&format!("depends_on = [\"s{:05}\"]\n", i - 1));
        }
    }
    text
}

#[test]
fn ten_thousand_services_are_planned() {
    // A chain written from its end: every service follows the one it
    // depends on.
    let text = many(10_000, true);
    let m = parse(&text).unwrap();
    let names: Vec<&str> = m.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names.len(), 10_000);
    let want: Vec<String> = (0..10_000).map(|i| format!("s{i:05}")).collect();
    assert_eq!(names, want);
    // Reversed dependencies: s09999 first.
    let mut text = String::new();
    for i in 0..10_000 {
        text.push_str(&format!("[services.s{i:05}]\npayload = \"api\"\n"));
        if i < 9_999 {
            text.push_str(&format!("depends_on = [\"s{:05}\"]\n", i + 1));
        }
    }
    let m = parse(&text).unwrap();
    assert_eq!(m.services[0].name, "s09999");
    assert_eq!(m.services[9_999].name, "s00000");
    let m = parse(&many(10_000, false)).unwrap();
    let names: Vec<&str> = m.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, want, "independent services come in name order");
}

#[test]
fn cycles_are_named_even_behind_a_tail() {
    // x -> a -> b -> c -> a, and a separate d <-> e, and f fine.
    let text = "[services.x]\npayload=\"api\"\ndepends_on=[\"a\"]\n\
                [services.a]\npayload=\"api\"\ndepends_on=[\"b\"]\n\
                [services.b]\npayload=\"api\"\ndepends_on=[\"f\", \"c\"]\n\
                [services.c]\npayload=\"api\"\ndepends_on=[\"a\"]\n\
                [services.d]\npayload=\"api\"\ndepends_on=[\"e\"]\n\
                [services.e]\npayload=\"api\"\ndepends_on=[\"d\"]\n\
                [services.f]\npayload=\"api\"\n";
    let err = parse(text).unwrap_err();
    assert_eq!(
        err,
        "services.toml: services a -> b -> c -> a form a dependency cycle: remove one of those depends_on\n\
         services.toml: services d -> e -> d form a dependency cycle: remove one of those depends_on"
    );
    // A 10,000-long cycle is found too.
    let mut text = many(10_000, true);
    text =
        text.replacen("payload = \"api\"\n", "payload = \"api\"\ndepends_on = [\"s09999\"]\n", 1);
    let err = parse(&text).unwrap_err();
    assert_eq!(err.lines().count(), 1);
    assert!(
        err.starts_with("services.toml: services s00000 -> s09999 -> s09998"),
        "{}",
        &err[..80]
    );
    assert!(
        err.ends_with("s00001 -> s00000 form a dependency cycle: remove one of those depends_on")
    );
}

#[test]
fn an_unknown_dependency_among_many_lists_a_few_names() {
    let text = many(100, false) + "[services.z]\npayload = \"api\"\ndepends_on = [\"nope\"]\n";
    let err = one_problem(&text);
    assert!(err.contains("(services: s00000, s00001,"), "{err}");
    assert!(err.contains("s00019, and 81 more): fix the name"), "{err}");
}

/// `text` checked with `vars` as the environment: `PORT=8080`, `EMPTY=`,
/// `DIR` the folder given, `BAD` not UTF-8.
fn parse_vars(text: &str, dir: &std::path::Path) -> Result<Manifest, ManifestError> {
    use std::os::unix::ffi::OsStringExt as _;
    let dir = dir.as_os_str().to_owned();
    let vars = move |name: &str| match name {
        "PORT" => Some(OsString::from("8080")),
        "EMPTY" => Some(OsString::new()),
        "DIR" => Some(dir.clone()),
        "BAD" => Some(OsString::from_vec(vec![0xff])),
        _ => None,
    };
    let context = Context::new(PAYLOADS).assets(&["db.pem", "app.conf"]).vars(&vars);
    Manifest::parse_with(text, "services.toml", &context)
}

#[test]
fn variables_expand_in_args_env_values_and_cwd() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    // Only args, env values and cwd take variables.
    let err = parse_vars("[services.api]\nrestart = \"${PORT}\"\n", dir.path()).unwrap_err();
    assert!(err.to_string().contains("restart \"${PORT}\" is not a policy"), "{err}");
    let m = parse_vars(
        r#"
[services.api]
args = ["--port", "${PORT}", "--name=${NAME:-api}", "$$HOME", "$HOME", "${EMPTY:-x}", "sh -c 'echo $1'"]
env = { URL = "http://127.0.0.1:${PORT}/", "${KEEP}" = "${EMPTY}" }
cwd = "${DIR}/sub"
"#,
        dir.path(),
    )
    .unwrap();
    let api = m.get("api").unwrap();
    assert_eq!(
        api.args,
        ["--port", "8080", "--name=api", "$HOME", "$HOME", "x", "sh -c 'echo $1'"]
    );
    assert_eq!(api.env["URL"], "http://127.0.0.1:8080/");
    assert_eq!(api.env["${KEEP}"], "", "names are not expanded");
    assert_eq!(api.cwd.as_deref(), Some(dir.path().join("sub").as_path()));
}

#[test]
fn every_variable_problem_names_its_place_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"
[services.api]
args = ["--port", "${PORT}", "${NOPE}", "${1X} ${A-b} ${}", "${BAD}", "x ${PORT", "${asset:nope.conf}", "${OK:-a}\u0000"]
env = { DATABASE_URL = "${DB}", OTHER = "${DB:-fine}" }
cwd = "${DIR}/missing/${NOPE2}"
[services.runner]
cwd = "${EMPTY}"
[services.probe]
cwd = "${DIR}/missing"
"#;
    let err = parse_vars(text, dir.path()).unwrap_err();
    let missing = dir.path().join("missing");
    let want = [
        "service api: args[2] uses ${NOPE}, which is not set in stigmer's environment: set it, or give a default with ${NOPE:-default}".to_owned(),
        "service api: args[3] uses \"${1X}\", which is not ${NAME} or ${NAME:-default} (a NAME is letters, digits and _, not starting with a digit): fix it, or write $$ for a literal $".to_owned(),
        "service api: args[3] uses \"${A-b}\", which is not".to_owned(),
        "service api: args[3] uses \"${}\", which is not".to_owned(),
        "service api: args[4] uses ${BAD}, whose value in stigmer's environment is not UTF-8: set it to UTF-8 text".to_owned(),
        "service api: args[5] \"x ${PORT\" opens ${ and never closes it: add the }, or write $$ for a literal $".to_owned(),
        "service api: args[6] uses ${asset:nope.conf}, but this build carries no such asset (it carries app.conf, db.pem): fix the name".to_owned(),
        "service api: args[7] \"a\\0\" holds a NUL byte".to_owned(),
        "service api: env.DATABASE_URL uses ${DB}, which is not set in stigmer's environment: set it, or give a default with ${DB:-default}".to_owned(),
        "service api: cwd uses ${NOPE2}, which is not set".to_owned(),
        format!("service probe: cwd \"${{DIR}}/missing\" (here {missing:?}) does not exist"),
        "service runner: cwd \"${EMPTY}\" expands to nothing: set its variables, or give a default, e.g. ${DATA_DIR:-/srv/data}".to_owned(),
    ];
    let lines: Vec<&str> = err.problems().iter().map(String::as_str).collect();
    assert_eq!(lines.len(), want.len(), "{err}");
    for (line, want) in lines.iter().zip(&want) {
        assert!(line.starts_with(&format!("services.toml: {want}")), "{line}\nwant: {want}");
    }
    clean(&err.to_string());
    let places: Vec<(Option<&str>, Option<Key>)> =
        err.details().iter().map(|p| (p.service_name(), p.key())).collect();
    assert!(places[..8].iter().all(|p| *p == (Some("api"), Some(Key::Args))), "{places:?}");
    assert_eq!(places[8], (Some("api"), Some(Key::Env)));
    assert!(places[9..].iter().all(|p| p.1 == Some(Key::Cwd)), "{places:?}");
    assert!(matches!(
        err.details()[8].kind(),
        ProblemKind::UnsetVariable { place: Place::Env(name), name: var }
            if name == "DATABASE_URL" && var == "DB"
    ));
}

#[test]
fn variable_problems_print_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let text = "[services.api]\nargs = [\"${\\u001b[2J}\", \"${\\n\", \"${asset:\\u009b}\"]\n\
                env = { \"a\\u001bb\" = \"${NOPE}\" }\n";
    let err = parse_vars(text, dir.path()).unwrap_err().to_string();
    clean(&err);
    assert!(err.contains(r#"args[0] uses "${\u{1b}[2J}", which is not"#), "{err}");
    assert!(err.contains(r#"args[1] "${\n" opens ${"#), "{err}");
    assert!(err.contains(r#"args[2] uses "${asset:\u{9b}}", but"#), "{err}");
    assert!(err.contains(r#"env."a\u{1b}b" uses ${NOPE}"#), "{err}");
}

#[test]
fn assets_are_named_in_args_and_env_and_filled_in_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"
[services.api]
args = ["--config", "${asset:app.conf}", "--tls=${asset:db.pem},${PORT}", "$${asset:app.conf}"]
env = { CERT = "${asset:db.pem}", PLAIN = "x" }
"#;
    let m = parse_vars(text, dir.path()).unwrap();
    let api = m.get("api").unwrap();
    assert_eq!(api.assets().into_iter().collect::<Vec<_>>(), ["app.conf", "db.pem"]);
    assert_eq!(api.args[0], "--config");
    assert_eq!(api.args[1].as_str(), None, "a path goes there at start");
    assert_eq!(api.args[3], "${asset:app.conf}", "$$ keeps it text");
    let path = |name: &str| OsString::from(format!("/proc/self/fd/{}", name.len()));
    assert_eq!(api.args[1].with_paths(path), "/proc/self/fd/8");
    assert_eq!(api.args[2].with_paths(path), "--tls=/proc/self/fd/6,8080");
    assert_eq!(api.env["CERT"].with_paths(path), "/proc/self/fd/6");
    assert_eq!(api.env["PLAIN"], "x");
    // Without assets named, none.
    let m = parse_vars("[services.api]\nargs = [\"a\"]\n", dir.path()).unwrap();
    assert!(m.services[0].assets().is_empty());
}

#[test]
fn an_asset_is_no_folder() {
    let dir = tempfile::tempdir().unwrap();
    let err = parse_vars("[services.api]\ncwd = \"${asset:app.conf}\"\n", dir.path()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "services.toml: service api: cwd uses ${asset:app.conf}, but an asset is a file, not a \
         folder: give a folder, and the asset's path in args or env"
    );
    assert_eq!(err.details()[0].key(), Some(Key::Cwd));
    // Unknown, with no asset carried at all.
    let err = parse("[services.api]\nenv = { A = \"${asset:x}\" }\n").unwrap_err();
    assert!(err.ends_with("env.A uses ${asset:x}, but this build carries no such asset (it carries none): fix the name"), "{err}");
}

#[test]
fn depends_on_takes_a_list_or_a_table_of_conditions() {
    let m = parse(
        r#"
[services.migrate]
payload = "api"
[services.cache]
payload = "api"
restart = "always"
[services.api]
[services.runner]
depends_on = { migrate = "completed_successfully", api = "healthy", cache = "started" }
[services.probe]
depends_on = ["runner", "api"]
"#,
    )
    .unwrap();
    let deps = |name: &str| -> Vec<(String, Condition)> {
        m.get(name).unwrap().depends_on.iter().map(|d| (d.name.clone(), d.condition)).collect()
    };
    // A table comes in name order, a list as written, each meaning healthy.
    assert_eq!(
        deps("runner"),
        [
            ("api".into(), Condition::Healthy),
            ("cache".into(), Condition::Started),
            ("migrate".into(), Condition::CompletedSuccessfully),
        ]
    );
    assert_eq!(
        deps("probe"),
        [("runner".into(), Condition::Healthy), ("api".into(), Condition::Healthy)]
    );
    let names: Vec<_> = m.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["api", "cache", "migrate", "runner", "probe"]);
    assert_eq!(Condition::CompletedSuccessfully.to_string(), "completed_successfully");
}

#[test]
fn depends_on_problems_name_the_service_the_key_and_the_fix() {
    let cases = [
        (
            "[services.api]\ndepends_on = { runner = \"ready\" }\n[services.runner]\n",
            "service api: depends_on \"runner\" = \"ready\" is not a condition: use \"started\", \
             \"healthy\" or \"completed_successfully\"",
        ),
        (
            "[services.api]\ndepends_on = { runner = 1 }\n[services.runner]\n",
            "service api: depends_on: \"runner\": invalid type: integer, expected a condition \
             string: write e.g. depends_on = [\"db\"] or depends_on = { db = \"healthy\"",
        ),
        (
            "[services.api]\ndepends_on = \"runner\"\n[services.runner]\n",
            "service api: depends_on: invalid type: string, expected a list of service names or \
             a table of conditions",
        ),
        (
            "[services.api]\ndepends_on = [1]\n",
            "service api: depends_on: invalid type: integer `1`, expected a string",
        ),
        ("[services.api]\ndepends_on = { api = \"started\" }\n", "depends_on names itself"),
        (
            "[services.api]\ndepends_on = { db = \"started\" }\n",
            "service api: depends_on \"db\" is not a service here (services: api): fix the name",
        ),
        (
            "[services.api]\ndepends_on = { runner = \"started\" }\n\
             [services.runner]\ndepends_on = { api = \"completed_successfully\" }\n",
            "services api -> runner -> api form a dependency cycle",
        ),
        (
            "[services.api]\ndepends_on = { runner = \"completed_successfully\" }\n\
             [services.runner]\nrestart = \"always\"\n",
            "service api: depends_on \"runner\" = \"completed_successfully\" can never hold: \
             runner has restart = \"always\", so it is run again after every exit: wait for \
             \"started\" or \"healthy\" instead, or give runner restart = \"no\" or \"on-failure\"",
        ),
    ];
    for (text, want) in cases {
        let err = one_problem(text);
        assert!(err.contains(want), "{text:?}\n  got: {err}\n want: {want}");
    }
    // Typed, with the key.
    let err = Manifest::parse(
        "[services.api]\ndepends_on = { runner = \"ready\", db = \"started\" }\n\
         [services.runner]\nrestart = \"always\"\n[services.probe]\n\
         depends_on = { runner = \"completed_successfully\" }\n",
        "services.toml",
        PAYLOADS,
    )
    .unwrap_err();
    let kinds: Vec<_> = err.details().iter().map(|p| (p.service_name(), p.key())).collect();
    assert_eq!(
        kinds,
        [
            (Some("api"), Some(Key::DependsOn)),
            (Some("api"), Some(Key::DependsOn)),
            (Some("probe"), Some(Key::DependsOn)),
        ],
        "{err}"
    );
    assert!(matches!(
        err.details().iter().map(Problem::kind).collect::<Vec<_>>()[..],
        [
            ProblemKind::UnknownCondition { .. },
            ProblemKind::UnknownDependency { .. },
            ProblemKind::NeverCompletes { .. },
        ]
    ));
    // on-failure and no can complete.
    for restart in ["no", "on-failure"] {
        parse(&format!(
            "[services.api]\ndepends_on = {{ runner = \"completed_successfully\" }}\n\
             [services.runner]\nrestart = \"{restart}\"\n"
        ))
        .unwrap();
    }
}

#[test]
fn health_checks_take_http_tcp_or_exec_with_defaults() {
    let m = parse(
        r#"
[services.api]
health = { http = "http://127.0.0.1:7234/healthz" }
[services.runner]
health = { tcp = "127.0.0.1:7235", interval = "2s", timeout = "500ms", retries = 1, start_period = "1m" }
[services.probe]
health = { exec = ["sh", "-c", "exit 0"] }
ready = { exec = ["true"], timeout = "3s" }
"#,
    )
    .unwrap();
    let api = m.get("api").unwrap().health.as_ref().unwrap();
    assert!(matches!(&api.check, Check::Http { path, .. } if path == "/healthz"));
    let defaults = (api.interval, api.timeout, api.retries, api.start_period);
    assert_eq!(defaults, (Duration::from_secs(10), Duration::from_secs(5), 3, Duration::ZERO));
    let runner = m.get("runner").unwrap().health.as_ref().unwrap();
    assert_eq!(runner.check, Check::Tcp("127.0.0.1:7235".parse().unwrap()));
    let set = (runner.interval, runner.timeout, runner.retries, runner.start_period);
    assert_eq!(
        set,
        (Duration::from_secs(2), Duration::from_millis(500), 1, Duration::from_secs(60))
    );
    let probe = m.get("probe").unwrap();
    let Check::Exec { argv, program } = &probe.health.as_ref().unwrap().check else { panic!() };
    assert_eq!(argv, &["sh", "-c", "exit 0"]);
    assert!(program.is_absolute() && program.ends_with("sh"), "{program:?}");
    let Check::Exec { argv, program } = &probe.ready.as_ref().unwrap().check else { panic!() };
    assert_eq!(argv, &["true"]);
    assert!(program.is_absolute(), "{program:?}");
    assert_eq!(m.get("api").unwrap().ready, None);
}

#[test]
fn an_exec_command_is_found_when_the_manifest_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("check");
    std::fs::write(&script, "#!/bin/sh\n").unwrap();
    let plain = dir.path().join("plain");
    std::fs::write(&plain, "").unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let m = parse(&format!("[services.api]\nhealth = {{ exec = [{script:?}, \"x\"] }}\n")).unwrap();
    let Check::Exec { program, .. } = &m.services[0].health.as_ref().unwrap().check else {
        panic!()
    };
    assert_eq!(program, &script);
    let cases = [
        (format!("health = {{ exec = [{plain:?}] }}"), format!("service api: health.exec: {plain:?} is not an executable file: fix the path, or its permissions")),
        (format!("ready = {{ exec = [{:?}] }}", dir.path()), "is not an executable file".to_owned()),
        ("ready = { exec = [\"no-such-command-stigmer\"] }".to_owned(), "service api: ready.exec: \"no-such-command-stigmer\" is not found in PATH: install it, or give its full path".to_owned()),
        ("ready = { exec = [] }".to_owned(), "service api: ready.exec has no command: write e.g. exec = [\"pg_isready\", \"-q\"]".to_owned()),
        ("health = { exec = [\"\"] }".to_owned(), "service api: health.exec has no command".to_owned()),
        ("health = { exec = [\"true\", \"a\\u0000\"] }".to_owned(), "service api: health.exec[1] \"a\\0\" holds a NUL byte".to_owned()),
        ("health = { exec = \"true\" }".to_owned(), "service api: health.exec: invalid type: string \"true\", expected a sequence: write e.g. health = { exec = [".to_owned()),
        ("ready = { exec = [\"./no/such/check\"] }".to_owned(), "ready.exec: \"./no/such/check\" (here \"/".to_owned()),
    ];
    for (line, want) in cases {
        let err = one_problem(&format!("[services.api]\n{line}\n"));
        assert!(err.contains(&want), "{line}\n  got: {err}\n want: {want}");
    }
}

#[test]
fn health_problems_name_the_key_and_the_fix() {
    let cases = [
        ("health = { log = \"up\" }", "service api: health cannot be a log check"),
        (
            "health = { tpc = \"127.0.0.1:1\" }",
            "unknown key \"health.tpc\" (health takes one of http, tcp or exec",
        ),
        ("health = { interval = \"1s\" }", "health takes exactly one of http, tcp or exec"),
        (
            "health = { tcp = \"127.0.0.1:1\", exec = [\"true\"] }",
            "health takes exactly one of http, tcp or exec",
        ),
        ("health = { tcp = \"x\" }", "health.tcp \"x\" is not a host:port address"),
        ("health = { http = \"ftp://x/\" }", "health.http \"ftp://x/\" is not an http:// URL"),
        (
            "health = { http = \"http://1.2.3.4/a b\" }",
            "health.http \"http://1.2.3.4/a b\" holds a space",
        ),
        (
            "health = { tcp = \"127.0.0.1:1\", retries = 0 }",
            "health.retries 0 is out of range: use 1 (unhealthy at the first failed check) to 1000",
        ),
        (
            "health = { tcp = \"127.0.0.1:1\", retries = 1001 }",
            "health.retries 1001 is out of range",
        ),
        (
            "health = { tcp = \"127.0.0.1:1\", interval = \"0s\" }",
            "health.interval \"0s\" is shorter than 1ms: e.g. \"10s\"",
        ),
        (
            "health = { tcp = \"127.0.0.1:1\", timeout = \"0s\" }",
            "health.timeout \"0s\" is shorter than 1ms: give each check time",
        ),
        (
            "health = { tcp = \"127.0.0.1:1\", start_period = \"25h\" }",
            "health.start_period \"25h\" is longer than 1day",
        ),
        (
            "health = { tcp = \"127.0.0.1:1\", retries = \"3\" }",
            "health.retries: invalid type: string \"3\", expected i64: write e.g. health = { tcp = \"127.0.0.1:8080\", retries = 3 }",
        ),
        (
            "health = \"tcp\"",
            "service api: health: invalid type: string \"tcp\", expected a map: write e.g. health = {",
        ),
        (
            "ready = { log = \"up\", exec = [\"true\"] }",
            "ready takes exactly one of http, tcp, log or exec",
        ),
        (
            "ready = { tpc = 1 }",
            "unknown key \"ready.tpc\" (ready takes one of http, tcp, log or exec, and timeout)",
        ),
    ];
    for (line, want) in cases {
        let err = one_problem(&format!("[services.api]\n{line}\n"));
        assert!(err.contains(want), "{line}\n  got: {err}\n want: {want}");
    }
    // Every problem of a health table is reported at once, typed.
    let err = Manifest::parse(
        "[services.api]\nhealth = { log = \"x\", retries = -1, interval = \"soon\", bogus = 1 }\n",
        "services.toml",
        PAYLOADS,
    )
    .unwrap_err();
    let keys: Vec<_> = err.details().iter().map(Problem::key).collect();
    assert_eq!(
        keys,
        [Some(Key::Health), Some(Key::Health), Some(Key::HealthInterval), Some(Key::HealthRetries)],
        "{err}"
    );
}
