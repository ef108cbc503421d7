//! What can be wrong with a manifest, as types.
//!
//! A [`Problem`] says which service it concerns (if one), which key (if
//! one: [`Problem::key`]) and what is wrong ([`ProblemKind`]), so a program
//! can act on it without reading its text. Its text is still the point:
//! every kind's message names the value and the fix, and a
//! [`ManifestError`] prints each problem as one line that starts with the
//! manifest's name and holds no control character.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;
use stigmer_build::NameError;

use super::key::Key;
use super::{MAX_HEALTH_RETRIES, MAX_RESTARTS};

/// Up to this many names are listed in a message; more are counted.
pub(super) const LIST_AT_MOST: usize = 20;

/// Every problem found in a manifest, in the order found: each one line,
/// starting with the manifest's name, then the service, the key and the fix,
/// with no control character in it.
///
/// `Display` writes the problems one per line. Two errors are equal when
/// they print the same.
#[derive(Clone, Debug)]
pub struct ManifestError {
    problems: Vec<Problem>,
    /// Each problem as printed: computed once, as [`ManifestError::problems`]
    /// lends them.
    lines: Vec<String>,
}

impl ManifestError {
    /// The problems of the manifest called `origin` (already one line), in
    /// the order found; `problems` is not empty.
    pub(super) fn new(origin: &str, problems: Vec<Problem>) -> ManifestError {
        debug_assert!(!problems.is_empty());
        let lines = problems.iter().map(|p| one_line(&format!("{origin}: {}", p.raw()))).collect();
        ManifestError { problems, lines }
    }

    /// The problems as printed, each one line; never empty.
    pub fn problems(&self) -> &[String] {
        &self.lines
    }

    /// The problems as values, in the same order as
    /// [`ManifestError::problems`]: which service and key each concerns,
    /// and what is wrong.
    pub fn details(&self) -> &[Problem] {
        &self.problems
    }
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.lines.join("\n"))
    }
}

impl std::error::Error for ManifestError {}

impl PartialEq for ManifestError {
    fn eq(&self, other: &ManifestError) -> bool {
        self.lines == other.lines
    }
}

impl Eq for ManifestError {}

/// One thing wrong with a manifest.
///
/// `Display` writes it as one line with no control character, without the
/// manifest's name: `service api: stop_timeout "soon" is not a duration: …`.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Problem {
    service: Option<String>,
    kind: ProblemKind,
}

impl Problem {
    /// A problem with the manifest as a whole, or with several services.
    pub(super) fn file(kind: ProblemKind) -> Problem {
        Problem { service: None, kind }
    }

    /// A problem with the service called `name`.
    pub(super) fn service(name: &str, kind: ProblemKind) -> Problem {
        Problem { service: Some(name.to_owned()), kind }
    }

    /// The service it concerns, as written in the manifest; `None` when it
    /// concerns the file or several services (a dependency cycle).
    pub fn service_name(&self) -> Option<&str> {
        self.service.as_deref()
    }

    /// The key it concerns, if one the manifest knows.
    pub fn key(&self) -> Option<Key> {
        self.kind.key()
    }

    /// What is wrong.
    pub fn kind(&self) -> &ProblemKind {
        &self.kind
    }

    /// The problem as text, before it is made one clean line.
    fn raw(&self) -> impl fmt::Display + '_ {
        struct Raw<'a>(&'a Problem);
        impl fmt::Display for Raw<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match &self.0.service {
                    Some(name) => write!(f, "service {}: {}", label(name), self.0.kind),
                    None => write!(f, "{}", self.0.kind),
                }
            }
        }
        Raw(self)
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&one_line(&self.raw().to_string()))
    }
}

impl std::error::Error for Problem {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.kind)
    }
}

/// Where in a service a value that may hold `${VAR}` is.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Place {
    /// `args[i]`, from 0.
    Arg(usize),
    /// The value of `env.NAME`.
    Env(String),
    /// `cwd`.
    Cwd,
}

impl Place {
    /// The key it is a value of.
    pub fn key(&self) -> Key {
        match self {
            Place::Arg(_) => Key::Args,
            Place::Env(_) => Key::Env,
            Place::Cwd => Key::Cwd,
        }
    }
}

impl fmt::Display for Place {
    /// `args[1]`, `env.DATABASE_URL` (`env."A B"` when the name is not
    /// plain), `cwd`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Arg(i) => write!(f, "args[{i}]"),
            Place::Env(name) if super::vars::is_name(name) => write!(f, "env.{name}"),
            Place::Env(name) => write!(f, "env.{name:?}"),
            Place::Cwd => f.write_str("cwd"),
        }
    }
}

/// What is wrong: each kind carries the values its message shows, as
/// written in the manifest.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProblemKind {
    /// The file is not UTF-8.
    #[error(
        "line {line}, byte offset {offset}: byte 0x{byte:02x} is not UTF-8: \
         save the manifest as UTF-8 text"
    )]
    NotUtf8 {
        /// The line of the first bad byte, from 1.
        line: usize,
        /// Its offset in the file.
        offset: usize,
        /// The byte.
        byte: u8,
    },

    /// The file is not TOML.
    #[error("{}{message} (fix the TOML syntax)", at_line(*.line))]
    Syntax {
        /// The line where the parser stopped, from 1, if it said.
        line: Option<usize>,
        /// What the TOML parser says.
        message: String,
    },

    /// A top-level key other than `services`.
    #[error("unknown top-level key {key:?}: services are written [services.NAME]")]
    UnknownTopLevelKey {
        /// The key.
        key: String,
    },

    /// `services` is not a table.
    #[error("`services` must be a table of services: write [services.NAME]")]
    ServicesNotTable,

    /// There is no service.
    #[error("no [services.NAME] table: add at least one service")]
    NoServices,

    /// The service's name cannot name a service.
    #[error("{source}")]
    BadName {
        /// What is wrong with it.
        #[source]
        source: NameError,
    },

    /// The service is not a table.
    #[error("must be a table: write [services.NAME] and keys below")]
    ServiceNotTable,

    /// A key a service does not take.
    #[error("unknown key {key:?} (known keys: {})", service_keys())]
    UnknownKey {
        /// The key.
        key: String,
    },

    /// A key `ready` does not take.
    #[error(
        "unknown key {:?} (ready takes one of http, tcp, log or exec, and timeout)",
        ready_key(.key)
    )]
    UnknownReadyKey {
        /// The key, without `ready.`.
        key: String,
    },

    /// A key `health` does not take.
    #[error(
        "unknown key {:?} (health takes one of http, tcp or exec, and interval, timeout, \
         retries, start_period)",
        format!("health.{key}")
    )]
    UnknownHealthKey {
        /// The key, without `health.`.
        key: String,
    },

    /// A value of the wrong type.
    #[error("{key}: {message}: write e.g. {}", key.example())]
    WrongType {
        /// The key.
        key: Key,
        /// What the TOML parser says, on one line.
        message: String,
    },

    /// The payload is not one this build carries.
    #[error(
        "payload {payload:?} is not in this build (it carries {}): set `payload` to one of them",
        carried.join(", ")
    )]
    UnknownPayload {
        /// The payload.
        payload: String,
        /// The payloads this build carries, sorted.
        carried: Vec<String>,
    },

    /// An argument holds a NUL byte.
    #[error("args[{index}] {arg:?} holds a NUL byte, which no argument can: remove it")]
    NulInArg {
        /// Its index in `args`.
        index: usize,
        /// The argument.
        arg: String,
    },

    /// A variable's name is empty or holds `=` or NUL.
    #[error("env key {name:?} is not a variable name: remove the '=' or NUL")]
    BadEnvName {
        /// The name.
        name: String,
    },

    /// A variable's value holds a NUL byte.
    #[error("env {name:?} = {value:?} holds a NUL byte, which no variable can: remove it")]
    NulInEnvValue {
        /// The variable's name.
        name: String,
        /// Its value.
        value: String,
    },

    /// `cwd` is empty.
    #[error("cwd is empty: give a folder, or remove cwd to run in stigmer's")]
    EmptyCwd,

    /// `cwd` holds a NUL byte.
    #[error("cwd {cwd:?} holds a NUL byte, which no path can: remove it")]
    NulInCwd {
        /// `cwd` as written.
        cwd: String,
    },

    /// A relative `cwd` cannot be made absolute.
    #[error("cwd {cwd:?}: cannot resolve it against the current folder: {source}")]
    CwdUnresolved {
        /// `cwd` as written.
        cwd: String,
        /// Why.
        #[source]
        source: Arc<io::Error>,
    },

    /// `cwd` is not a folder.
    #[error("{} is not a folder: give a folder", cwd_shown(.cwd, .path))]
    CwdNotFolder {
        /// `cwd` as written.
        cwd: String,
        /// `cwd` made absolute.
        path: PathBuf,
    },

    /// `cwd` does not exist.
    #[error(
        "{} does not exist: create it or fix cwd (a relative cwd is relative to the folder \
         stigmer runs in)",
        cwd_shown(.cwd, .path)
    )]
    CwdMissing {
        /// `cwd` as written.
        cwd: String,
        /// `cwd` made absolute.
        path: PathBuf,
    },

    /// `cwd` cannot be looked at.
    #[error("{} cannot be read: {source}", cwd_shown(.cwd, .path))]
    CwdUnreadable {
        /// `cwd` as written.
        cwd: String,
        /// `cwd` made absolute.
        path: PathBuf,
        /// Why.
        #[source]
        source: Arc<io::Error>,
    },

    /// `cwd` cannot be entered.
    #[error("{} cannot be entered: {source}: fix its permissions", cwd_shown(.cwd, .path))]
    CwdNotEnterable {
        /// `cwd` as written.
        cwd: String,
        /// `cwd` made absolute.
        path: PathBuf,
        /// Why.
        #[source]
        source: Errno,
    },

    /// `cwd` is not empty, but its variables made it so.
    #[error(
        "cwd {cwd:?} expands to nothing: set its variables, or give a default, e.g. \
         ${{DATA_DIR:-/srv/data}}"
    )]
    EmptyExpandedCwd {
        /// `cwd` as written.
        cwd: String,
    },

    /// A `${NAME}` without a default, and stigmer's environment has no
    /// `NAME`.
    #[error(
        "{place} uses ${{{name}}}, which is not set in stigmer's environment: set it, or give a \
         default with ${{{name}:-default}}"
    )]
    UnsetVariable {
        /// Where.
        place: Place,
        /// The variable.
        name: String,
    },

    /// A `${NAME}` whose value in stigmer's environment is not UTF-8.
    #[error(
        "{place} uses ${{{name}}}, whose value in stigmer's environment is not UTF-8: set it to \
         UTF-8 text"
    )]
    VariableNotUtf8 {
        /// Where.
        place: Place,
        /// The variable.
        name: String,
    },

    /// A `${...}` that is neither `${NAME}`, `${NAME:-default}` nor
    /// `${asset:NAME}`: an empty or invalid name.
    #[error(
        "{place} uses {written:?}, which is not ${{NAME}} or ${{NAME:-default}} (a NAME is \
         letters, digits and _, not starting with a digit): fix it, or write $$ for a literal $"
    )]
    BadVariable {
        /// Where.
        place: Place,
        /// The whole `${...}` as written.
        written: String,
    },

    /// A `${` with no `}` after it.
    #[error(
        "{place} {value:?} opens ${{ and never closes it: add the }}, or write $$ for a literal $"
    )]
    UnclosedVariable {
        /// Where.
        place: Place,
        /// The value as written.
        value: String,
    },

    /// An `${asset:NAME}` in `cwd`, which names a folder.
    #[error(
        "cwd uses {}, but an asset is a file, not a folder: give a folder, and the asset's path \
         in args or env",
        asset_ref(.name)
    )]
    AssetInCwd {
        /// The asset's name as written.
        name: String,
    },

    /// An `${asset:NAME}` of an asset this build does not carry.
    #[error(
        "{place} uses {}, but this build carries no such asset ({}): fix the name",
        asset_ref(.name),
        assets_carried(.carried)
    )]
    UnknownAsset {
        /// Where.
        place: Place,
        /// The asset's name as written.
        name: String,
        /// The assets this build carries, sorted.
        carried: Vec<String>,
    },

    /// `restart` is not a policy.
    #[error("restart {value:?} is not a policy: use \"no\", \"on-failure\" or \"always\"")]
    UnknownRestart {
        /// The value.
        value: String,
    },

    /// `max_restarts` is below 0 or above [`MAX_RESTARTS`].
    #[error(
        "max_restarts {value} is out of range: use 0 (give up at the first exit) to {MAX_RESTARTS}"
    )]
    MaxRestartsOutOfRange {
        /// The value.
        value: i64,
    },

    /// A value that is not a signal.
    #[error("{key} {value:?} is not a signal: write e.g. \"SIGTERM\" or \"SIGHUP\"")]
    NotASignal {
        /// `stop_signal` or `reload_signal`.
        key: Key,
        /// The value.
        value: String,
    },

    /// SIGKILL or SIGSTOP, which a service cannot handle, where it should.
    #[error("{}", uncatchable(*.key, .value))]
    UncatchableSignal {
        /// `stop_signal` or `reload_signal`.
        key: Key,
        /// The value.
        value: String,
    },

    /// A value that is not a duration.
    #[error("{key} {value:?} is not a duration: write e.g. \"10s\", \"500ms\" or \"2m\"")]
    NotADuration {
        /// The key.
        key: Key,
        /// The value.
        value: String,
    },

    /// A duration above the most the key takes.
    #[error(
        "{key} {value:?} is longer than {}: use at most \"{}\"",
        humantime::format_duration(*.max),
        humantime::format_duration(*.max)
    )]
    TooLong {
        /// The key.
        key: Key,
        /// The value.
        value: String,
        /// The most it takes.
        max: Duration,
    },

    /// A duration below the least the key takes.
    #[error(
        "{key} {value:?} is shorter than {}: {}",
        humantime::format_duration(*.min),
        too_short_fix(*.key)
    )]
    TooShort {
        /// The key.
        key: Key,
        /// The value.
        value: String,
        /// The least it takes.
        min: Duration,
    },

    /// `ready.log` is empty.
    #[error("ready.log is empty: give the text of the line that means ready")]
    EmptyReadyLog,

    /// `ready` has none, or more than one, of `http`, `tcp`, `log` and
    /// `exec`.
    #[error(
        "ready takes exactly one of http, tcp, log or exec: e.g. ready = {{ tcp = \
         \"127.0.0.1:8080\" }}"
    )]
    NotOneCheck,

    /// `health` has none, or more than one, of `http`, `tcp` and `exec`.
    #[error(
        "health takes exactly one of http, tcp or exec: e.g. health = {{ tcp = \
         \"127.0.0.1:8080\" }}"
    )]
    NotOneHealthCheck,

    /// `health.log`: a line written once says nothing about later.
    #[error(
        "health cannot be a log check (a line written once says nothing about later): use \
         http, tcp or exec, e.g. health = {{ tcp = \"127.0.0.1:8080\" }}"
    )]
    LogHealth,

    /// `ready.exec` or `health.exec` is empty, or its command is `""`.
    #[error("{key} has no command: write e.g. exec = [\"pg_isready\", \"-q\"]")]
    EmptyExec {
        /// `ready.exec` or `health.exec`.
        key: Key,
    },

    /// An `exec` argument holds a NUL byte.
    #[error("{key}[{index}] {arg:?} holds a NUL byte, which no argument can: remove it")]
    NulInExec {
        /// `ready.exec` or `health.exec`.
        key: Key,
        /// Its index in the command line.
        index: usize,
        /// The argument.
        arg: String,
    },

    /// An `exec` command named without a `/` is in no folder of `PATH`.
    #[error("{key}: {program:?} is not found in PATH: install it, or give its full path")]
    ExecNotFound {
        /// `ready.exec` or `health.exec`.
        key: Key,
        /// The command as written.
        program: String,
    },

    /// An `exec` command given as a path is not an executable file.
    #[error(
        "{key}: {} is not an executable file: fix the path, or its permissions",
        shown(.program, .path)
    )]
    ExecNotExecutable {
        /// `ready.exec` or `health.exec`.
        key: Key,
        /// The command as written.
        program: String,
        /// The command made absolute.
        path: PathBuf,
    },

    /// `health.retries` is below 1 or above [`MAX_HEALTH_RETRIES`].
    #[error(
        "health.retries {value} is out of range: use 1 (unhealthy at the first failed check) to \
         {MAX_HEALTH_RETRIES}"
    )]
    RetriesOutOfRange {
        /// The value.
        value: i64,
    },

    /// An `http` check holds a space or control character.
    #[error("{key} {url:?} holds a space or control character: percent-encode it (%20)")]
    SpaceInUrl {
        /// `ready.http` or `health.http`.
        key: Key,
        /// The URL.
        url: String,
    },

    /// An `http` check is not an `http://` URL stigmer can check.
    #[error("{key} {url:?} is not an http:// URL: write e.g. \"http://127.0.0.1:8080/healthz\"")]
    NotHttpUrl {
        /// `ready.http` or `health.http`.
        key: Key,
        /// The URL.
        url: String,
    },

    /// An address that is not `host:port`.
    #[error("{key} {address:?} is not a host:port address: write e.g. \"127.0.0.1:8080\"")]
    NotHostPort {
        /// `ready.tcp`, `ready.http`, `health.tcp` or `health.http`.
        key: Key,
        /// The address (for `http`, the URL's host and port).
        address: String,
    },

    /// An address whose host does not resolve.
    #[error(
        "{key} {address:?}: cannot resolve {host:?}: use an IP address or a name in /etc/hosts"
    )]
    Unresolved {
        /// `ready.tcp`, `ready.http`, `health.tcp` or `health.http`.
        key: Key,
        /// The address (for `http`, the URL's host and port).
        address: String,
        /// Its host.
        host: String,
    },

    /// A service depends on itself.
    #[error("depends_on names itself: remove {name:?}")]
    DependsOnItself {
        /// Its name.
        name: String,
    },

    /// A service depends on one the manifest does not have.
    #[error(
        "depends_on {name:?} is not a service here (services: {}): fix the name",
        some_names(.services, *.count)
    )]
    UnknownDependency {
        /// The name it depends on.
        name: String,
        /// The manifest's first services by name (at most 20).
        services: Vec<String>,
        /// How many services the manifest has.
        count: usize,
    },

    /// A `depends_on` table names a condition that is not one of the three.
    #[error(
        "depends_on {name:?} = {value:?} is not a condition: use \"started\", \"healthy\" or \
         \"completed_successfully\""
    )]
    UnknownCondition {
        /// The service depended on.
        name: String,
        /// The condition as written.
        value: String,
    },

    /// `completed_successfully` on a service that `restart = "always"` runs
    /// again after every exit: it never stays completed.
    #[error(
        "depends_on {name:?} = \"completed_successfully\" can never hold: {} has restart = \
         \"always\", so it is run again after every exit: wait for \"started\" or \"healthy\" \
         instead, or give {} restart = \"no\" or \"on-failure\"",
        label(.name),
        label(.name)
    )]
    NeverCompletes {
        /// The service depended on.
        name: String,
    },

    /// Services that depend on each other in a circle.
    #[error(
        "services {} form a dependency cycle: remove one of those depends_on",
        cycle(.services)
    )]
    Cycle {
        /// The services along the cycle, the first again at the end:
        /// `a`, `b`, `a`.
        services: Vec<String>,
    },
}

impl ProblemKind {
    /// The key it concerns, if one the manifest knows.
    pub fn key(&self) -> Option<Key> {
        use ProblemKind::*;
        Some(match self {
            NotUtf8 { .. }
            | Syntax { .. }
            | UnknownTopLevelKey { .. }
            | ServicesNotTable
            | NoServices
            | BadName { .. }
            | ServiceNotTable
            | UnknownKey { .. } => return None,
            UnknownReadyKey { .. } | NotOneCheck => Key::Ready,
            UnknownHealthKey { .. } | NotOneHealthCheck | LogHealth => Key::Health,
            RetriesOutOfRange { .. } => Key::HealthRetries,
            WrongType { key, .. }
            | NotASignal { key, .. }
            | UncatchableSignal { key, .. }
            | NotADuration { key, .. }
            | TooLong { key, .. }
            | TooShort { key, .. }
            | NotHostPort { key, .. }
            | Unresolved { key, .. }
            | EmptyExec { key }
            | NulInExec { key, .. }
            | ExecNotFound { key, .. }
            | ExecNotExecutable { key, .. }
            | SpaceInUrl { key, .. }
            | NotHttpUrl { key, .. } => *key,
            UnknownPayload { .. } => Key::Payload,
            NulInArg { .. } => Key::Args,
            BadEnvName { .. } | NulInEnvValue { .. } => Key::Env,
            UnsetVariable { place, .. }
            | VariableNotUtf8 { place, .. }
            | BadVariable { place, .. }
            | UnclosedVariable { place, .. }
            | UnknownAsset { place, .. } => place.key(),
            EmptyCwd
            | AssetInCwd { .. }
            | EmptyExpandedCwd { .. }
            | NulInCwd { .. }
            | CwdUnresolved { .. }
            | CwdNotFolder { .. }
            | CwdMissing { .. }
            | CwdUnreadable { .. }
            | CwdNotEnterable { .. } => Key::Cwd,
            UnknownRestart { .. } => Key::Restart,
            MaxRestartsOutOfRange { .. } => Key::MaxRestarts,
            EmptyReadyLog => Key::ReadyLog,
            DependsOnItself { .. }
            | UnknownDependency { .. }
            | UnknownCondition { .. }
            | NeverCompletes { .. }
            | Cycle { .. } => Key::DependsOn,
        })
    }
}

fn at_line(line: Option<usize>) -> String {
    line.map(|l| format!("line {l}: ")).unwrap_or_default()
}

/// A key of `ready`, as a full name: `ready.tpc`.
fn ready_key(key: &str) -> String {
    format!("ready.{key}")
}

fn service_keys() -> String {
    Key::SERVICE.map(Key::as_str).join(", ")
}

/// `cwd` in a message: as written, and where it led when that differs.
fn cwd_shown(cwd: &str, path: &Path) -> String {
    format!("cwd {}", shown(cwd, path))
}

/// A path as written, and where it led when that differs.
fn shown(written: &str, path: &Path) -> String {
    if path.as_os_str() == written {
        format!("{path:?}")
    } else {
        format!("{written:?} (here {path:?})")
    }
}

/// `${asset:NAME}` in a message; escaped and quoted when `NAME` is not a
/// plain name.
fn asset_ref(name: &str) -> String {
    match stigmer_build::check_name(name) {
        Ok(()) => format!("${{asset:{name}}}"),
        Err(_) => format!("{:?}", format!("${{asset:{name}}}")),
    }
}

/// The assets a build carries, for a message.
fn assets_carried(carried: &[String]) -> String {
    match carried {
        [] => "it carries none".to_owned(),
        some => format!("it carries {}", some_names(some, some.len())),
    }
}

fn uncatchable(key: Key, value: &str) -> String {
    match key {
        Key::StopSignal => format!(
            "{key} {value:?} cannot be a stop request: use SIGTERM, SIGINT, SIGQUIT or SIGHUP"
        ),
        _ => format!(
            "{key} {value:?} cannot be SIGKILL or SIGSTOP: use e.g. \"SIGHUP\" or \"SIGUSR1\""
        ),
    }
}

fn too_short_fix(key: Key) -> &'static str {
    match key {
        Key::ReadyTimeout => {
            "give the service time to become ready, e.g. \"20s\", or remove `ready` to count \
             it ready once started"
        }
        Key::HealthInterval => "e.g. \"10s\"",
        Key::HealthTimeout => "give each check time, e.g. \"5s\"",
        _ => "e.g. \"60s\"",
    }
}

/// Service names for a message: the first [`LIST_AT_MOST`] of `count`.
fn some_names(names: &[String], count: usize) -> String {
    let mut shown: Vec<String> = names.iter().take(LIST_AT_MOST).map(|n| label(n)).collect();
    if count > LIST_AT_MOST {
        shown.push(format!("and {} more", count - LIST_AT_MOST));
    }
    shown.join(", ")
}

fn cycle(names: &[String]) -> String {
    names.iter().map(|n| label(n)).collect::<Vec<_>>().join(" -> ")
}

/// `text` as one line with no control character: line breaks become "; ",
/// other control characters (C0, DEL, C1) and the characters that move or
/// reorder text on a terminal are escaped as `\u{..}`.
pub(super) fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.lines().map(str::trim).filter(|l| !l.is_empty()).enumerate() {
        if i > 0 {
            out.push_str("; ");
        }
        for c in line.chars() {
            let reorders = matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}')
                || ('\u{202a}'..='\u{202e}').contains(&c)
                || ('\u{2066}'..='\u{2069}').contains(&c);
            if c.is_control() || reorders {
                out.extend(c.escape_unicode());
            } else {
                out.push(c);
            }
        }
    }
    out
}

/// A service's name in a message: as is when it is a valid name (letters,
/// digits, '.', '_', '-': nothing to escape, and how the supervisor shows
/// it), escaped and quoted otherwise.
fn label(name: &str) -> String {
    match stigmer_build::check_name(name) {
        Ok(()) => name.to_owned(),
        Err(_) => format!("{name:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_send_sync() {
        fn check<T: Send + Sync + 'static>() {}
        check::<ManifestError>();
        check::<Problem>();
    }

    #[test]
    fn a_problem_prints_as_its_line_without_the_file() {
        let p = Problem::service(
            "a\u{1b}b",
            ProblemKind::NotADuration { key: Key::StopTimeout, value: "soon\n".into() },
        );
        assert_eq!(p.key(), Some(Key::StopTimeout));
        assert_eq!(p.service_name(), Some("a\u{1b}b"));
        let e = ManifestError::new("services.toml", vec![p.clone()]);
        assert_eq!(e.problems(), [format!("services.toml: {p}")]);
        assert_eq!(
            p.to_string(),
            "service \"a\\u{1b}b\": stop_timeout \"soon\\n\" is not a duration: \
             write e.g. \"10s\", \"500ms\" or \"2m\""
        );
    }
}
