//! `services.toml`: what `stigmer server` runs.
//!
//! ```toml
//! [services.stigmer-server]          # the name; the payload defaults to it
//! args = ["--port", "7234"]
//! env = { LOG_FORMAT = "json" }
//! ready = { http = "http://127.0.0.1:7234/healthz", timeout = "20s" }
//!
//! [services.migrate]                 # a one-shot job: runs once, exits 0
//! payload = "db-migrate"
//!
//! [services.workflow-runner]
//! depends_on = ["stigmer-server"]    # started once stigmer-server is ready
//! restart = "on-failure"             # "no" (default) | "on-failure" | "always"
//! stop_signal = "SIGTERM"
//! stop_timeout = "10s"               # then SIGKILL
//!
//! [services.activity-runner]
//! depends_on = { migrate = "completed_successfully", stigmer-server = "started" }
//! ```
//!
//! In `args`, `env` values and `cwd`, `${VAR}` is replaced by the value of
//! `VAR` in stigmer's environment and `${VAR:-default}` by the default when
//! `VAR` is unset or empty; `$$` is a `$`, and any other `$` stays as
//! written (`$HOME`, `$1`). This happens when the manifest is checked, and
//! the results are checked as if written so; an unset variable without a
//! default is a problem like any other. See the `vars` module for the
//! details, and [`Manifest::parse_with`] to expand from another
//! environment. `${asset:NAME}` is reserved for the files a build carries.
//!
//! `depends_on` is a list of services that must be ready (`"healthy"`), or
//! a table from service to condition: `"started"` (spawned), `"healthy"`
//! (passed its readiness check) or `"completed_successfully"` (exited with
//! status 0 and not run again: a job, see [`Condition`]). A `restart = "no"`
//! service that someone waits for with `completed_successfully` is a job:
//! its exit 0 does not stop the server.
//!
//! Everything that can fail at start is checked before anything starts, and
//! every problem is reported, one line each, naming the service, the key and
//! the fix. Every value that comes from the file is printed escaped, so a
//! problem line never holds a control character. A program reads the same
//! problems as values with [`ManifestError::details`]: each [`Problem`] has
//! its service, its [`Key`] and a [`ProblemKind`]. Services come out in
//! dependency order, planned in O(n log n) for n services.
//!
//! A service may have a liveness check, checked once it is ready:
//!
//! ```toml
//! health = { http = "http://127.0.0.1:7234/healthz", interval = "10s", timeout = "5s", retries = 3 }
//! health = { exec = ["pg_isready", "-q"], start_period = "30s" }
//! ```
//!
//! `health` takes one of `http`, `tcp` and `exec` (not `log`), and `ready`
//! takes `exec` too: a command run on the host, passing when it exits 0,
//! found (in `PATH` for a bare name) when the manifest is checked. See
//! [`Health`] and [`Check::Exec`].
//!
//! Limits: every duration is at most [`MAX_DURATION`] (24h); `ready.timeout`,
//! `health.interval` and `health.timeout` are at least 1ms, `restart_window`,
//! `stop_timeout` and `health.start_period` may be 0 (SIGKILL right after
//! the stop signal); `max_restarts` is 0 to [`MAX_RESTARTS`],
//! `health.retries` 1 to [`MAX_HEALTH_RETRIES`].

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::de::DeserializeOwned;

mod check;
mod depends;
mod key;
mod problem;
mod values;
mod vars;

pub use depends::{Condition, Dependency};
pub use key::Key;
use problem::{LIST_AT_MOST, one_line};
pub use problem::{ManifestError, Place, Problem, ProblemKind};
use values::Known;
pub use values::{Context, Text};

/// The longest duration any key takes (`ready.timeout`, `stop_timeout`,
/// `restart_window`): 24 hours. Everything the supervisor computes from a
/// duration stays far from overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);
/// The most `max_restarts` allows.
pub const MAX_RESTARTS: u32 = 1000;
/// The shortest `ready.timeout`: 0 would give a check no time at all.
pub const MIN_READY_TIMEOUT: Duration = Duration::from_millis(1);
/// The shortest `health.interval`: 0 would run checks back to back.
pub const MIN_HEALTH_INTERVAL: Duration = Duration::from_millis(1);
/// The shortest `health.timeout`: 0 would give a check no time at all.
pub const MIN_HEALTH_TIMEOUT: Duration = Duration::from_millis(1);
/// The most `health.retries` allows.
pub const MAX_HEALTH_RETRIES: u32 = 1000;
/// The shortest `restart_window`: any. One shorter than the backoff (250ms
/// at first) forgets every restart before the next, so the service is
/// restarted for ever, every 250ms: a choice, not a mistake.
pub const MIN_RESTART_WINDOW: Duration = Duration::ZERO;

/// A checked manifest, services in dependency order.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Manifest {
    /// The services; every service comes after the ones it depends on.
    pub services: Vec<Service>,
}

/// One service.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Service {
    /// Its name, the prefix of its log lines.
    pub name: String,
    /// The payload it runs.
    pub payload: String,
    /// Arguments after `argv[0]` (none holds a NUL byte), variables
    /// expanded; an asset's path goes in at start.
    pub args: Vec<Text>,
    /// Variables added to stigmer's environment (names are not empty and
    /// hold no `=` or NUL; values hold no NUL), expanded as `args` are.
    pub env: BTreeMap<String, Text>,
    /// Its working folder, absolute (a relative `cwd` is resolved against
    /// stigmer's working folder when the manifest is checked); it existed
    /// and was a folder then. `None`: stigmer's.
    pub cwd: Option<PathBuf>,
    /// How to tell it is ready; `None`: as soon as it has started.
    pub ready: Option<Ready>,
    /// How to tell it is still alive once ready; `None`: it is not
    /// checked.
    pub health: Option<Health>,
    /// The services it waits for before it starts, each with how far it
    /// must have got: every name is another service of the manifest (none
    /// twice in the table form), and a `completed_successfully` one is not
    /// `restart = "always"`.
    pub depends_on: Vec<Dependency>,
    /// What to do when it exits on its own.
    pub restart: Restart,
    /// The most restarts allowed within [`Service::restart_window`] before
    /// the server gives up (at most [`MAX_RESTARTS`]).
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
#[non_exhaustive]
pub struct Ready {
    /// What to check.
    pub check: Check,
    /// How long to wait for it: [`MIN_READY_TIMEOUT`] to [`MAX_DURATION`].
    pub timeout: Duration,
}

/// A liveness check: run every `interval` while the service runs and is
/// ready; after `retries` failures in a row the service is restarted by its
/// policy (with `restart = "no"`, the server fails).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Health {
    /// What to check: [`Check::Http`], [`Check::Tcp`] or [`Check::Exec`],
    /// never [`Check::Log`].
    pub check: Check,
    /// From the service being ready, or the end of one check, to the next
    /// check: [`MIN_HEALTH_INTERVAL`] to [`MAX_DURATION`].
    pub interval: Duration,
    /// How long one check may take before it counts as failed:
    /// [`MIN_HEALTH_TIMEOUT`] to [`MAX_DURATION`].
    pub timeout: Duration,
    /// How many failures in a row make it unhealthy: 1 to
    /// [`MAX_HEALTH_RETRIES`].
    pub retries: u32,
    /// How long after it became ready a failed check does not count (up to
    /// [`MAX_DURATION`]; 0 by default).
    pub start_period: Duration,
}

/// What makes a service ready, or shows that it is still alive.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Check {
    /// An HTTP GET answered with a 2xx status.
    Http {
        /// The URL as written.
        url: String,
        /// The address to connect to.
        addr: SocketAddr,
        /// The `Host` header.
        host: String,
        /// The path and query (no space or control character).
        path: String,
    },
    /// A TCP connection accepted.
    Tcp(SocketAddr),
    /// A line of its output containing this text (`ready` only).
    Log(String),
    /// A command run on the host, beside the service, with the service's
    /// `env` and `cwd`: it passes when it exits with status 0 in time.
    Exec {
        /// The command line as written: `argv[0]`, then its arguments (not
        /// empty; none holds a NUL byte).
        argv: Vec<String>,
        /// The executable `argv[0]` named, absolute, found when the
        /// manifest was checked (a bare name in `PATH`).
        program: PathBuf,
    },
}

impl fmt::Display for Check {
    /// As `status` shows it: the URL, `tcp ADDR`, `log "TEXT"` or
    /// `exec ["CMD", ...]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Check::Http { url, .. } => f.write_str(url),
            Check::Tcp(addr) => write!(f, "tcp {addr}"),
            Check::Log(text) => write!(f, "log {text:?}"),
            Check::Exec { argv, .. } => write!(f, "exec {argv:?}"),
        }
    }
}

/// When a service that exits on its own is started again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Restart {
    /// Never: the server shuts down.
    No,
    /// When it exits with a non-zero status or a signal.
    OnFailure,
    /// Whenever it exits.
    Always,
}

impl Service {
    /// The assets its `args` and `env` name, each once.
    pub fn assets(&self) -> BTreeSet<&str> {
        self.args.iter().chain(self.env.values()).flat_map(Text::assets).collect()
    }
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

const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_RESTART_WINDOW: Duration = Duration::from_secs(60);
const DEFAULT_MAX_RESTARTS: u32 = 5;

/// One service as far as it could be read: its dependencies are known even
/// when another key is wrong, so that unknown dependencies and cycles are
/// reported in the same run.
struct Node {
    name: String,
    depends_on: Vec<Dependency>,
    /// Its restart policy, if it could be read: a `completed_successfully`
    /// dependency must be one that can complete.
    restart: Option<Restart>,
    service: Option<Service>,
}

impl Manifest {
    /// Parses and checks the bytes of a manifest file: as [`Manifest::parse`],
    /// after checking that they are UTF-8 (the problem names the line and
    /// byte offset of the first bad byte).
    pub fn parse_bytes(
        bytes: &[u8],
        source: &str,
        payloads: &[&str],
    ) -> Result<Manifest, ManifestError> {
        Manifest::parse_bytes_with(bytes, source, &Context::new(payloads))
    }

    /// As [`Manifest::parse_bytes`], against `context`.
    pub fn parse_bytes_with(
        bytes: &[u8],
        source: &str,
        context: &Context<'_>,
    ) -> Result<Manifest, ManifestError> {
        match std::str::from_utf8(bytes) {
            Ok(text) => Manifest::parse_with(text, source, context),
            Err(e) => {
                let offset = e.valid_up_to();
                let line = bytes[..offset].iter().filter(|&&b| b == b'\n').count() + 1;
                let byte = bytes.get(offset).copied().unwrap_or_default();
                let problem = Problem::file(ProblemKind::NotUtf8 { line, offset, byte });
                Err(ManifestError::new(&one_line(source), vec![problem]))
            }
        }
    }

    /// Parses and checks `text` (from `source`, which starts every problem
    /// line, cleaned of control characters) against the payloads this build
    /// carries. Checks everything that can fail when a service starts, and
    /// reports every problem found. `${VAR}` in `args`, `env` values and
    /// `cwd` expands from stigmer's environment, now.
    pub fn parse(text: &str, source: &str, payloads: &[&str]) -> Result<Manifest, ManifestError> {
        Manifest::parse_with(text, source, &Context::new(payloads))
    }

    /// As [`Manifest::parse`], against `context`: e.g. with the variables
    /// of another environment than stigmer's.
    pub fn parse_with(
        text: &str,
        source: &str,
        context: &Context<'_>,
    ) -> Result<Manifest, ManifestError> {
        let source = one_line(source);
        let mut p: Vec<Problem> = Vec::new();
        let fail = |p: Vec<Problem>| Err(ManifestError::new(&source, p));
        let table: toml::Table = match toml::from_str(text) {
            Ok(table) => table,
            Err(e) => {
                let line = e.span().map(|s| {
                    let end = s.start.min(text.len());
                    text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
                });
                let message = e.message().to_owned();
                p.push(Problem::file(ProblemKind::Syntax { line, message }));
                return fail(p);
            }
        };
        for key in table.keys().filter(|k| *k != "services") {
            p.push(Problem::file(ProblemKind::UnknownTopLevelKey { key: key.clone() }));
        }
        let services = match table.get("services") {
            None => None,
            Some(toml::Value::Table(t)) => Some(t),
            Some(_) => {
                p.push(Problem::file(ProblemKind::ServicesNotTable));
                return fail(p);
            }
        };
        let Some(services) = services.filter(|s| !s.is_empty()) else {
            // A misspelt [services.NAME] is reported above: say it once.
            if p.is_empty() {
                p.push(Problem::file(ProblemKind::NoServices));
            }
            return fail(p);
        };
        let known = Known::new(context);
        let mut nodes: Vec<Node> = services
            .iter()
            .map(|(name, value)| {
                let mut problems = Vec::new();
                let node = check_service(name, value, &known, &mut problems);
                p.extend(problems.into_iter().map(|kind| Problem::service(name, kind)));
                node
            })
            .collect();
        // A toml::Table is sorted today, but a feature of the toml crate
        // (preserve_order) would keep file order: ties go by name either way.
        nodes.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        let (plan, graph_problems) = order(&nodes);
        p.extend(graph_problems);
        if !p.is_empty() {
            return fail(p);
        }
        let mut slots: Vec<Option<Service>> = nodes.into_iter().map(|n| n.service).collect();
        let services = plan.into_iter().filter_map(|i| slots[i].take()).collect();
        Ok(Manifest { services })
    }

    /// The service called `name`.
    pub fn get(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }
}

/// Reads `key` of `fields` (a service's keys, or `ready`'s) as a `T`; a
/// value of the wrong type is a problem that names the key and shows an
/// example.
fn field<T: DeserializeOwned>(
    fields: &toml::Table,
    key: Key,
    problems: &mut Vec<ProblemKind>,
) -> Option<T> {
    let value = fields.get(key.name())?;
    match value.clone().try_into::<T>() {
        Ok(v) => Some(v),
        Err(e) => {
            problems.push(ProblemKind::WrongType { key, message: one_line(e.message()) });
            None
        }
    }
}

fn check_service(
    name: &str,
    value: &toml::Value,
    known: &Known<'_>,
    problems: &mut Vec<ProblemKind>,
) -> Node {
    let mut node =
        Node { name: name.to_owned(), depends_on: Vec::new(), restart: None, service: None };
    if let Err(source) = stigmer_build::check_name(name) {
        problems.push(ProblemKind::BadName { source });
    }
    let Some(fields) = value.as_table() else {
        problems.push(ProblemKind::ServiceNotTable);
        return node;
    };
    let names = Key::SERVICE.map(Key::name);
    for key in fields.keys().filter(|k| !names.contains(&k.as_str())) {
        problems.push(ProblemKind::UnknownKey { key: key.clone() });
    }

    let depends_on = match fields.get(Key::DependsOn.name()) {
        Some(value) => depends::read(value, problems),
        None => Vec::new(),
    };
    node.depends_on = depends_on.clone();

    // A payload of the wrong type is reported once, as such.
    let payload: Option<String> = match fields.contains_key(Key::Payload.name()) {
        true => field(fields, Key::Payload, problems),
        false => Some(name.to_owned()),
    };
    if let Some(payload) = payload.as_deref().filter(|p| !known.payloads.contains(p)) {
        problems.push(ProblemKind::UnknownPayload {
            payload: payload.to_owned(),
            carried: known.carried.clone(),
        });
    }

    // Expanded first, then checked as if written so.
    let written: Vec<String> = field(fields, Key::Args, problems).unwrap_or_default();
    let args: Vec<Text> = written
        .iter()
        .enumerate()
        .filter_map(|(index, arg)| known.expand(Place::Arg(index), arg, problems))
        .collect();

    let written: BTreeMap<String, String> = field(fields, Key::Env, problems).unwrap_or_default();
    let mut env = BTreeMap::new();
    for (name, value) in written {
        if name.is_empty() || name.contains(['=', '\0']) {
            problems.push(ProblemKind::BadEnvName { name: name.clone() });
        }
        if let Some(value) = known.expand(Place::Env(name.clone()), &value, problems) {
            env.insert(name, value);
        }
    }

    let cwd = field::<String>(fields, Key::Cwd, problems).and_then(|cwd| {
        let expanded = known.expand(Place::Cwd, &cwd, problems)?;
        // No asset in it (that is a problem): all text.
        check_cwd(&cwd, &expanded.to_string()).map_err(|e| problems.push(e)).ok()
    });

    let ready = match fields.get(Key::Ready.name()) {
        None => None,
        Some(toml::Value::Table(ready)) => check::ready(ready, problems),
        Some(_) => {
            field::<toml::Table>(fields, Key::Ready, problems);
            None
        }
    };
    let health = match fields.get(Key::Health.name()) {
        None => None,
        Some(toml::Value::Table(health)) => check::health(health, problems),
        Some(_) => {
            field::<toml::Table>(fields, Key::Health, problems);
            None
        }
    };

    let restart = match field::<String>(fields, Key::Restart, problems).as_deref() {
        None | Some("no") => Some(Restart::No),
        Some("on-failure") => Some(Restart::OnFailure),
        Some("always") => Some(Restart::Always),
        Some(other) => {
            problems.push(ProblemKind::UnknownRestart { value: other.to_owned() });
            None
        }
    };
    node.restart = restart;

    let max_restarts = match field::<i64>(fields, Key::MaxRestarts, problems) {
        None => Some(DEFAULT_MAX_RESTARTS),
        Some(n) => match u32::try_from(n) {
            Ok(n) if n <= MAX_RESTARTS => Some(n),
            _ => {
                problems.push(ProblemKind::MaxRestartsOutOfRange { value: n });
                None
            }
        },
    };

    let text = |key: Key, problems: &mut Vec<ProblemKind>| field::<String>(fields, key, problems);
    let signal_of = |key: Key, problems: &mut Vec<ProblemKind>| {
        let value = text(key, problems)?;
        let parsed = match signal(key, &value) {
            Ok(Signal::SIGKILL | Signal::SIGSTOP) => {
                Err(ProblemKind::UncatchableSignal { key, value })
            }
            other => other,
        };
        Some(parsed.map_err(|e| problems.push(e)).ok())
    };
    let stop_signal = match signal_of(Key::StopSignal, problems) {
        None => Some(Signal::SIGTERM),
        Some(sig) => sig,
    };
    let reload_signal = match signal_of(Key::ReloadSignal, problems) {
        None => Some(None),
        Some(sig) => sig.map(Some),
    };
    let stop_timeout = duration(
        Key::StopTimeout,
        text(Key::StopTimeout, problems),
        DEFAULT_STOP_TIMEOUT,
        Duration::ZERO,
    )
    .map_err(|e| problems.push(e))
    .ok();
    let restart_window = duration(
        Key::RestartWindow,
        text(Key::RestartWindow, problems),
        DEFAULT_RESTART_WINDOW,
        MIN_RESTART_WINDOW,
    )
    .map_err(|e| problems.push(e))
    .ok();

    if let (
        Some(payload),
        Some(restart),
        Some(max_restarts),
        Some(stop_signal),
        Some(reload_signal),
        Some(stop_timeout),
        Some(restart_window),
    ) =
        (payload, restart, max_restarts, stop_signal, reload_signal, stop_timeout, restart_window)
    {
        node.service = Some(Service {
            name: name.to_owned(),
            payload,
            args,
            env,
            cwd,
            ready,
            health,
            depends_on,
            restart,
            max_restarts,
            restart_window,
            stop_signal,
            stop_timeout,
            reload_signal,
        });
    }
    node
}

/// Resolves `expanded`, the value of `cwd` (as written) with its variables
/// put in, against stigmer's working folder and checks that it is a folder
/// that can be entered.
fn check_cwd(cwd: &str, expanded: &str) -> Result<PathBuf, ProblemKind> {
    if cwd.is_empty() {
        return Err(ProblemKind::EmptyCwd);
    }
    if expanded.is_empty() {
        return Err(ProblemKind::EmptyExpandedCwd { cwd: cwd.to_owned() });
    }
    let path = std::path::absolute(expanded)
        .map_err(|e| ProblemKind::CwdUnresolved { cwd: cwd.to_owned(), source: Arc::new(e) })?;
    let cwd = cwd.to_owned();
    match std::fs::metadata(&path) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(ProblemKind::CwdNotFolder { cwd, path }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ProblemKind::CwdMissing { cwd, path });
        }
        Err(e) => return Err(ProblemKind::CwdUnreadable { cwd, path, source: Arc::new(e) }),
    }
    match nix::unistd::access(&path, nix::unistd::AccessFlags::X_OK) {
        Ok(()) => Ok(path),
        Err(source) => Err(ProblemKind::CwdNotEnterable { cwd, path, source }),
    }
}

/// A signal written `"SIGTERM"`, `"TERM"` or `"sigterm"`, for `key`.
fn signal(key: Key, s: &str) -> Result<Signal, ProblemKind> {
    let upper = s.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
    Signal::from_str(&full).map_err(|_| ProblemKind::NotASignal { key, value: s.to_owned() })
}

/// `value` of `key` (or `default`) as a duration from `min` to
/// [`MAX_DURATION`].
fn duration(
    key: Key,
    value: Option<String>,
    default: Duration,
    min: Duration,
) -> Result<Duration, ProblemKind> {
    let Some(value) = value else { return Ok(default) };
    let Ok(d) = humantime::parse_duration(&value) else {
        return Err(ProblemKind::NotADuration { key, value });
    };
    if d > MAX_DURATION {
        return Err(ProblemKind::TooLong { key, value, max: MAX_DURATION });
    }
    if d < min {
        return Err(ProblemKind::TooShort { key, value, min });
    }
    Ok(d)
}

/// Plans the start order of `nodes` (sorted by name): their indices, each
/// after its dependencies, ties by name (Kahn's algorithm with a min-heap,
/// O(n log n + edges)). Also returns the problems: a service that depends on
/// itself or on an unknown service, or waits for one that never stays
/// completed to complete, and the dependency cycles (each found by one walk
/// over the services left unplanned, so linear in all).
fn order(nodes: &[Node]) -> (Vec<usize>, Vec<Problem>) {
    let n = nodes.len();
    let index: HashMap<&str, usize> =
        nodes.iter().enumerate().map(|(i, s)| (s.name.as_str(), i)).collect();
    let mut problems = Vec::new();
    // The first services by name, listed when a dependency is unknown.
    let some_services: Vec<String> =
        nodes.iter().take(LIST_AT_MOST).map(|s| s.name.clone()).collect();
    // deps[i]: the indices i depends on; dependents[j]: those depending on j.
    let mut deps: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, s) in nodes.iter().enumerate() {
        for dep in &s.depends_on {
            match index.get(dep.name.as_str()) {
                Some(&j) if j == i => problems.push(Problem::service(
                    &s.name,
                    ProblemKind::DependsOnItself { name: dep.name.clone() },
                )),
                Some(&j) => {
                    if dep.condition == Condition::CompletedSuccessfully
                        && nodes[j].restart == Some(Restart::Always)
                    {
                        problems.push(Problem::service(
                            &s.name,
                            ProblemKind::NeverCompletes { name: dep.name.clone() },
                        ));
                    }
                    deps[i].push(j);
                    dependents[j].push(i);
                }
                None => problems.push(Problem::service(
                    &s.name,
                    ProblemKind::UnknownDependency {
                        name: dep.name.clone(),
                        services: some_services.clone(),
                        count: n,
                    },
                )),
            }
        }
    }
    let mut waiting: Vec<usize> = deps.iter().map(Vec::len).collect();
    let mut ready: BinaryHeap<Reverse<usize>> =
        (0..n).filter(|&i| waiting[i] == 0).map(Reverse).collect();
    let mut plan = Vec::with_capacity(n);
    while let Some(Reverse(i)) = ready.pop() {
        plan.push(i);
        for &k in &dependents[i] {
            waiting[k] -= 1;
            if waiting[k] == 0 {
                ready.push(Reverse(k));
            }
        }
    }
    if plan.len() < n {
        problems.extend(cycles(nodes, &deps, &waiting));
    }
    (plan, problems)
}

/// Finds the dependency cycles among the services left unplanned
/// (`waiting[i] > 0`), each as `a, b, a`: from each service not yet seen,
/// follow the first unplanned dependency until a service repeats. Every
/// unplanned service has one, so each walk ends on a cycle or on an
/// earlier walk; each service is walked once.
fn cycles(nodes: &[Node], deps: &[Vec<usize>], waiting: &[usize]) -> Vec<Problem> {
    const UNSEEN: usize = usize::MAX;
    const DONE: usize = usize::MAX - 1;
    // Per service: UNSEEN, DONE, or its position on the current walk.
    let mut at = vec![UNSEEN; nodes.len()];
    let mut found = Vec::new();
    for start in (0..nodes.len()).filter(|&i| waiting[i] > 0) {
        let mut path: Vec<usize> = Vec::new();
        let mut current = start;
        // Where the walk met itself, if it did.
        let mut looped = None;
        while at[current] != DONE {
            if at[current] != UNSEEN {
                looped = Some(at[current]);
                break;
            }
            at[current] = path.len();
            path.push(current);
            match deps[current].iter().find(|&&d| waiting[d] > 0) {
                Some(&next) => current = next,
                None => break,
            }
        }
        if let Some(from) = looped {
            let services = path[from..]
                .iter()
                .chain(std::iter::once(&current))
                .map(|&i| nodes[i].name.clone())
                .collect();
            found.push(Problem::file(ProblemKind::Cycle { services }));
        }
        for &i in &path {
            at[i] = DONE;
        }
    }
    found
}

#[cfg(test)]
mod tests;
