//! `services.toml`: what `stigmer server` runs.
//!
//! ```toml
//! [services.stigmer-server]          # the name; the payload defaults to it
//! args = ["--port", "7234"]
//! env = { LOG_FORMAT = "json" }
//! ready = { http = "http://127.0.0.1:7234/healthz", timeout = "20s" }
//!
//! [services.workflow-runner]
//! depends_on = ["stigmer-server"]    # started once stigmer-server is ready
//! restart = "on-failure"             # "no" (default) | "on-failure" | "always"
//! stop_signal = "SIGTERM"
//! stop_timeout = "10s"               # then SIGKILL
//! ```
//!
//! Everything is checked before anything starts, and every problem is one
//! line naming the service, the key and the fix. Services come out in
//! dependency order.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs as _};
use std::path::PathBuf;
use std::str::FromStr as _;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::Deserialize;

/// A manifest problem: one line that names the service, the key and the fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ManifestError(String);

/// A checked manifest, services in dependency order.
#[derive(Clone, Debug)]
pub struct Manifest {
    /// The services; every service comes after the ones it depends on.
    pub services: Vec<Service>,
}

/// One service.
#[derive(Clone, Debug, PartialEq)]
pub struct Service {
    /// Its name, the prefix of its log lines.
    pub name: String,
    /// The payload it runs.
    pub payload: String,
    /// Arguments after `argv[0]`.
    pub args: Vec<String>,
    /// Variables added to stigmer's environment.
    pub env: BTreeMap<String, String>,
    /// Its working folder (default: stigmer's).
    pub cwd: Option<PathBuf>,
    /// How to tell it is ready; `None`: as soon as it has started.
    pub ready: Option<Ready>,
    /// The services that must be ready before it starts.
    pub depends_on: Vec<String>,
    /// What to do when it exits on its own.
    pub restart: Restart,
    /// The most restarts allowed within [`Service::restart_window`] before
    /// the server gives up.
    pub max_restarts: u32,
    /// See [`Service::max_restarts`].
    pub restart_window: Duration,
    /// The signal that asks it to stop.
    pub stop_signal: Signal,
    /// How long it gets to stop before SIGKILL.
    pub stop_timeout: Duration,
    /// The signal it gets when stigmer is asked to reload (SIGUSR1);
    /// `None`: it gets nothing.
    pub reload_signal: Option<Signal>,
}

/// A readiness check, with its timeout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ready {
    /// What to check.
    pub check: Check,
    /// How long to wait for it.
    pub timeout: Duration,
}

/// What makes a service ready.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// An HTTP GET answered with a 2xx status.
    Http {
        /// The URL as written.
        url: String,
        /// The address to connect to.
        addr: SocketAddr,
        /// The `Host` header.
        host: String,
        /// The path and query.
        path: String,
    },
    /// A TCP connection accepted.
    Tcp(SocketAddr),
    /// A line of its output containing this text.
    Log(String),
}

/// When a service that exits on its own is started again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restart {
    /// Never: the server shuts down.
    No,
    /// When it exits with a non-zero status or a signal.
    OnFailure,
    /// Whenever it exits.
    Always,
}

impl fmt::Display for Restart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Restart::No => "no",
            Restart::OnFailure => "on-failure",
            Restart::Always => "always",
        })
    }
}

const KEYS: &[&str] = &[
    "payload",
    "args",
    "env",
    "cwd",
    "ready",
    "depends_on",
    "restart",
    "max_restarts",
    "restart_window",
    "stop_signal",
    "stop_timeout",
    "reload_signal",
];
const READY_KEYS: &[&str] = &["http", "tcp", "log", "timeout"];
const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Deserialize)]
struct RawService {
    payload: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    cwd: Option<PathBuf>,
    ready: Option<RawReady>,
    #[serde(default)]
    depends_on: Vec<String>,
    restart: Option<String>,
    max_restarts: Option<u32>,
    restart_window: Option<String>,
    stop_signal: Option<String>,
    stop_timeout: Option<String>,
    reload_signal: Option<String>,
}

#[derive(Deserialize)]
struct RawReady {
    http: Option<String>,
    tcp: Option<String>,
    log: Option<String>,
    timeout: Option<String>,
}

impl Manifest {
    /// Parses and checks `text` (from `source`, for messages) against the
    /// payloads this build carries.
    pub fn parse(text: &str, source: &str, payloads: &[&str]) -> Result<Manifest, ManifestError> {
        let err = |m: String| ManifestError(format!("{source}: {m}"));
        let table: toml::Table = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| text[..s.start].lines().count().max(1));
            let at = line.map(|l| format!("line {l}: ")).unwrap_or_default();
            err(format!("{at}{} (fix the TOML syntax)", e.message().trim_end_matches('\n')))
        })?;
        for key in table.keys() {
            if key != "services" {
                return Err(err(format!(
                    "unknown top-level key {key:?}: services are written [services.NAME]"
                )));
            }
        }
        let Some(services) = table.get("services") else {
            return Err(err("no [services.NAME] table: add at least one service".into()));
        };
        let services = services.as_table().ok_or_else(|| {
            err("`services` must be a table of services: write [services.NAME]".into())
        })?;
        if services.is_empty() {
            return Err(err("no [services.NAME] table: add at least one service".into()));
        }
        let mut parsed = Vec::new();
        for (name, value) in services {
            let svc = |m: String| err(format!("service {name}: {m}"));
            crate::scan::check_name(name).map_err(&svc)?;
            let fields = value.as_table().ok_or_else(|| {
                svc("must be a table: write [services.NAME] and keys below".into())
            })?;
            for key in fields.keys() {
                if !KEYS.contains(&key.as_str()) {
                    return Err(svc(format!(
                        "unknown key {key:?} (known keys: {})",
                        KEYS.join(", ")
                    )));
                }
            }
            if let Some(ready) = fields.get("ready").and_then(|r| r.as_table()) {
                for key in ready.keys() {
                    if !READY_KEYS.contains(&key.as_str()) {
                        return Err(svc(format!(
                            "unknown key \"ready.{key}\" (ready takes one of http, tcp, log, and timeout)"
                        )));
                    }
                }
            }
            let raw: RawService = value.clone().try_into().map_err(|e: toml::de::Error| {
                svc(format!("{} (see the manifest reference in the README)", e.message().trim()))
            })?;
            parsed.push(check_service(name, raw, payloads).map_err(svc)?);
        }
        let services = order(parsed).map_err(err)?;
        Ok(Manifest { services })
    }

    /// The service called `name`.
    pub fn get(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }
}

fn check_service(name: &str, raw: RawService, payloads: &[&str]) -> Result<Service, String> {
    let payload = raw.payload.unwrap_or_else(|| name.to_owned());
    if !payloads.contains(&payload.as_str()) {
        return Err(format!(
            "payload {payload:?} is not in this build (it carries {}): set `payload` to one of them",
            payloads.join(", ")
        ));
    }
    for key in raw.env.keys() {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            return Err(format!("env key {key:?} is not a variable name: remove the '=' or NUL"));
        }
    }
    let ready = raw.ready.map(check_ready).transpose()?;
    let restart = match raw.restart.as_deref() {
        None | Some("no") => Restart::No,
        Some("on-failure") => Restart::OnFailure,
        Some("always") => Restart::Always,
        Some(other) => {
            return Err(format!(
                "restart {other:?} is not a policy: use \"no\", \"on-failure\" or \"always\""
            ));
        }
    };
    let stop_signal = match raw.stop_signal {
        None => Signal::SIGTERM,
        Some(s) => signal("stop_signal", &s)?,
    };
    let reload_signal = raw.reload_signal.map(|s| signal("reload_signal", &s)).transpose()?;
    if matches!(reload_signal, Some(Signal::SIGKILL | Signal::SIGSTOP)) {
        return Err(
            "reload_signal cannot be SIGKILL or SIGSTOP: use e.g. \"SIGHUP\" or \"SIGUSR1\"".into(),
        );
    }
    if stop_signal == Signal::SIGKILL || stop_signal == Signal::SIGSTOP {
        return Err(format!(
            "stop_signal {stop_signal} cannot be a stop request: use SIGTERM, SIGINT, SIGQUIT or SIGHUP"
        ));
    }
    let stop_timeout = duration("stop_timeout", raw.stop_timeout, DEFAULT_STOP_TIMEOUT)?;
    let restart_window = duration("restart_window", raw.restart_window, Duration::from_secs(60))?;
    Ok(Service {
        name: name.to_owned(),
        payload,
        args: raw.args,
        env: raw.env,
        cwd: raw.cwd,
        ready,
        depends_on: raw.depends_on,
        restart,
        max_restarts: raw.max_restarts.unwrap_or(5),
        restart_window,
        stop_signal,
        stop_timeout,
        reload_signal,
    })
}

/// A signal written `"SIGTERM"`, `"TERM"` or `"sigterm"`.
fn signal(key: &str, s: &str) -> Result<Signal, String> {
    let upper = s.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
    Signal::from_str(&full)
        .map_err(|_| format!("{key} {s:?} is not a signal: write e.g. \"SIGTERM\" or \"SIGHUP\""))
}

fn duration(key: &str, value: Option<String>, default: Duration) -> Result<Duration, String> {
    match value {
        None => Ok(default),
        Some(v) => humantime::parse_duration(&v).map_err(|_| {
            format!("{key} {v:?} is not a duration: write e.g. \"10s\", \"500ms\" or \"2m\"")
        }),
    }
}

fn check_ready(raw: RawReady) -> Result<Ready, String> {
    let timeout = duration("ready.timeout", raw.timeout, DEFAULT_READY_TIMEOUT)?;
    let check = match (raw.http, raw.tcp, raw.log) {
        (Some(url), None, None) => http_check(&url)?,
        (None, Some(addr), None) => Check::Tcp(socket_addr("ready.tcp", &addr)?),
        (None, None, Some(text)) if !text.is_empty() => Check::Log(text),
        (None, None, Some(_)) => return Err("ready.log is empty: give the text of the line that means ready".into()),
        _ => return Err("ready takes exactly one of http, tcp or log: e.g. ready = { tcp = \"127.0.0.1:8080\" }".into()),
    };
    Ok(Ready { check, timeout })
}

fn http_check(url: &str) -> Result<Check, String> {
    let bad = || {
        format!(
            "ready.http {url:?} is not an http:// URL: write e.g. \"http://127.0.0.1:8080/healthz\""
        )
    };
    let rest = url.strip_prefix("http://").ok_or_else(bad)?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(bad());
    }
    let with_port =
        if has_port(authority) { authority.to_owned() } else { format!("{authority}:80") };
    let addr = socket_addr("ready.http", &with_port)?;
    Ok(Check::Http { url: url.to_owned(), addr, host: authority.to_owned(), path: path.to_owned() })
}

fn has_port(authority: &str) -> bool {
    match authority.rsplit_once(':') {
        Some((host, port)) => {
            !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && !host.ends_with(':')
        }
        None => false,
    }
}

fn socket_addr(key: &str, text: &str) -> Result<SocketAddr, String> {
    let fix =
        || format!("{key} {text:?} is not a host:port address: write e.g. \"127.0.0.1:8080\"");
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let (host, port) = text.rsplit_once(':').ok_or_else(fix)?;
    port.parse::<u16>().map_err(|_| fix())?;
    if host.is_empty() {
        return Err(fix());
    }
    text.to_socket_addrs().ok().and_then(|mut a| a.next()).ok_or_else(|| {
        format!(
            "{key} {text:?}: cannot resolve {host:?}: use an IP address or a name in /etc/hosts"
        )
    })
}

/// Sorts services so each comes after its dependencies (ties by name), or
/// names the unknown dependency or the cycle.
fn order(services: Vec<Service>) -> Result<Vec<Service>, String> {
    let names: BTreeSet<&str> = services.iter().map(|s| s.name.as_str()).collect();
    for s in &services {
        for dep in &s.depends_on {
            if dep == &s.name {
                return Err(format!("service {}: depends_on names itself: remove {dep:?}", s.name));
            }
            if !names.contains(dep.as_str()) {
                return Err(format!(
                    "service {}: depends_on {dep:?} is not a service here (services: {}): fix the name",
                    s.name,
                    names.iter().copied().collect::<Vec<_>>().join(", ")
                ));
            }
        }
    }
    let mut done: Vec<Service> = Vec::with_capacity(services.len());
    let mut left = services;
    while !left.is_empty() {
        let ready = left
            .iter()
            .position(|s| s.depends_on.iter().all(|d| done.iter().any(|x| &x.name == d)));
        match ready {
            Some(i) => done.push(left.remove(i)),
            None => return Err(cycle(&left)),
        }
    }
    Ok(done)
}

/// Describes one dependency cycle among `left` (services none of which
/// can start), as `a -> b -> a`.
fn cycle(left: &[Service]) -> String {
    let by_name = |n: &str| left.iter().find(|s| s.name == n);
    let mut path = vec![left[0].name.clone()];
    loop {
        let current = by_name(path.last().unwrap()).unwrap();
        let next = current.depends_on.iter().find(|d| by_name(d).is_some()).unwrap().clone();
        if let Some(start) = path.iter().position(|p| *p == next) {
            let mut cycle = path[start..].to_vec();
            cycle.push(next);
            return format!(
                "services {} form a dependency cycle: remove one of those depends_on",
                cycle.join(" -> ")
            );
        }
        path.push(next);
    }
}

#[cfg(test)]
mod tests {
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
                "exactly one of http, tcp or log",
            ),
            ("[services.api]\nready = { tpc = \"127.0.0.1:1\" }\n", "unknown key \"ready.tpc\""),
            ("[services.api]\nrestart = \"sometimes\"\n", "restart \"sometimes\" is not a policy"),
            (
                "[services.api]\nstop_signal = \"SIGFOO\"\n",
                "stop_signal \"SIGFOO\" is not a signal",
            ),
            ("[services.api]\nstop_signal = \"KILL\"\n", "cannot be a stop request"),
            ("[services.api]\nargs = \"--port 1\"\n", "service api: invalid type"),
            ("[service.api]\n", "unknown top-level key \"service\""),
            ("", "no [services.NAME] table"),
            ("[services.api\n", "line 1:"),
            (
                "[services.\"a b\"]\npayload = \"api\"\n",
                "service a b: payload name \"a b\" contains ' '",
            ),
        ];
        for (text, want) in cases {
            let err = parse(text).expect_err(text);
            assert!(err.contains(want), "{text:?}\n  got: {err}\n want: {want}");
            assert!(err.starts_with("services.toml: "), "{err}");
            assert_eq!(err.lines().count(), 1, "{err}");
        }
    }

    #[test]
    fn independent_services_keep_name_order() {
        let m =
            parse("[services.runner]\n[services.api]\n[services.probe]\ndepends_on=[\"runner\"]\n")
                .unwrap();
        let names: Vec<_> = m.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["api", "runner", "probe"]);
    }

    #[test]
    fn http_urls() {
        let Check::Http { addr, host, path, .. } = http_check("http://127.0.0.1/x?y=1").unwrap()
        else {
            panic!()
        };
        assert_eq!(addr.port(), 80);
        assert_eq!((host.as_str(), path.as_str()), ("127.0.0.1", "/x?y=1"));
        let Check::Http { addr, path, .. } = http_check("http://[::1]:9000").unwrap() else {
            panic!()
        };
        assert_eq!((addr.port(), path.as_str()), (9000, "/"));
        assert!(http_check("https://127.0.0.1/").is_err());
        assert!(http_check("http://u@127.0.0.1/").is_err());
    }
}
