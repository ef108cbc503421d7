//! The keys a manifest takes: a service's, and those of its `ready` and
//! `health` tables, as [`Key`] values that problems name.

use std::fmt;

/// A key of a service, or of its `ready` or `health` table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Key {
    /// `payload`.
    Payload,
    /// `args`.
    Args,
    /// `env`.
    Env,
    /// `cwd`.
    Cwd,
    /// `ready`.
    Ready,
    /// `health`.
    Health,
    /// `depends_on`.
    DependsOn,
    /// `restart`.
    Restart,
    /// `max_restarts`.
    MaxRestarts,
    /// `restart_window`.
    RestartWindow,
    /// `stop_signal`.
    StopSignal,
    /// `stop_timeout`.
    StopTimeout,
    /// `reload_signal`.
    ReloadSignal,
    /// `ready.http`.
    ReadyHttp,
    /// `ready.tcp`.
    ReadyTcp,
    /// `ready.log`.
    ReadyLog,
    /// `ready.timeout`.
    ReadyTimeout,
    /// `ready.exec`.
    ReadyExec,
    /// `health.http`.
    HealthHttp,
    /// `health.tcp`.
    HealthTcp,
    /// `health.exec`.
    HealthExec,
    /// `health.interval`.
    HealthInterval,
    /// `health.timeout`.
    HealthTimeout,
    /// `health.retries`.
    HealthRetries,
    /// `health.start_period`.
    HealthStartPeriod,
}

impl Key {
    /// The keys of a service, in the order messages list them.
    pub(super) const SERVICE: [Key; 13] = [
        Key::Payload,
        Key::Args,
        Key::Env,
        Key::Cwd,
        Key::Ready,
        Key::Health,
        Key::DependsOn,
        Key::Restart,
        Key::MaxRestarts,
        Key::RestartWindow,
        Key::StopSignal,
        Key::StopTimeout,
        Key::ReloadSignal,
    ];
    /// The keys of `ready`.
    pub(super) const READY: [Key; 5] =
        [Key::ReadyHttp, Key::ReadyTcp, Key::ReadyLog, Key::ReadyExec, Key::ReadyTimeout];
    /// The keys of `health`.
    pub(super) const HEALTH: [Key; 7] = [
        Key::HealthHttp,
        Key::HealthTcp,
        Key::HealthExec,
        Key::HealthInterval,
        Key::HealthTimeout,
        Key::HealthRetries,
        Key::HealthStartPeriod,
    ];

    /// Every key a manifest takes: a service's, then `ready`'s, then
    /// `health`'s, in the order messages (and the manual page) list them.
    pub const ALL: [Key; 25] = {
        let mut all = [Key::Payload; 25];
        let mut i = 0;
        while i < 13 {
            all[i] = Key::SERVICE[i];
            i += 1;
        }
        while i < 18 {
            all[i] = Key::READY[i - 13];
            i += 1;
        }
        while i < 25 {
            all[i] = Key::HEALTH[i - 18];
            i += 1;
        }
        all
    };

    /// What the key means and what it is when not set, in a sentence or
    /// two: what `stigmer man` prints for it.
    pub fn help(self) -> &'static str {
        match self {
            Key::Payload => "The payload to run (see stigmer list). Default: the service's name.",
            Key::Args => {
                "The arguments after argv[0], a list of strings (no NUL byte); ${VAR} and \
                 ${asset:NAME} expand. Default: none."
            }
            Key::Env => {
                "Variables added to stigmer's environment for the service, a table of strings \
                 (no NUL, no = in a name); ${VAR} and ${asset:NAME} expand in values. Default: none."
            }
            Key::Cwd => {
                "The working folder, which must exist; a relative one is taken from stigmer's \
                 folder; ${VAR} expands first. Default: stigmer's."
            }
            Key::Ready => {
                "When the service counts as ready: a table with one of http, tcp, log or exec, \
                 and timeout. Default: ready once started."
            }
            Key::Health => {
                "A liveness check, run while the service is ready: a table with one of http, tcp \
                 or exec, and interval, timeout, retries and start_period. After retries failures \
                 in a row the service is stopped, and its restart policy decides. Default: none."
            }
            Key::DependsOn => {
                "The services it waits for: a list (each must be ready), or a table from service \
                 to condition: \"started\" (spawned), \"healthy\" (passed its readiness check) \
                 or \"completed_successfully\" (exited 0; not on a restart = \"always\" service). \
                 Default: none."
            }
            Key::Restart => {
                "\"no\", \"on-failure\" (a non-zero status or a signal) or \"always\", with \
                 exponential backoff from 250 ms to 15 s. A restart = \"no\" service that another \
                 waits for with completed_successfully is a one-shot job. Default: \"no\"."
            }
            Key::MaxRestarts => {
                "Give up, and stop the server, after this many restarts (0 to 1000) within \
                 restart_window. Default: 5."
            }
            Key::RestartWindow => {
                "The window max_restarts counts in (at most 24h). Default: \"60s\"."
            }
            Key::StopSignal => "The signal that asks the service to stop. Default: \"SIGTERM\".",
            Key::StopTimeout => {
                "How long a stopping service gets before SIGKILL (0 to 24h). Default: \"10s\"."
            }
            Key::ReloadSignal => {
                "The signal the service gets when stigmer is sent SIGUSR1. Default: none (it gets \
                 nothing)."
            }
            Key::ReadyHttp => "Ready once a GET of this http:// URL answers 2xx.",
            Key::ReadyTcp => "Ready once a connection to this host:port succeeds.",
            Key::ReadyLog => "Ready once the service writes an output line containing this text.",
            Key::ReadyExec => {
                "Ready once this command (a list: argv[0] a path, or a name looked up in PATH \
                 when the manifest is checked) exits 0; run every 200 ms, with the service's env \
                 and cwd."
            }
            Key::ReadyTimeout => {
                "How long readiness may take (1ms to 24h); then the server stops and exits 1. \
                 Default: \"30s\"."
            }
            Key::HealthHttp => "Healthy while a GET of this http:// URL answers 2xx.",
            Key::HealthTcp => "Healthy while a connection to this host:port succeeds.",
            Key::HealthExec => "Healthy while this command exits 0 (as ready.exec).",
            Key::HealthInterval => {
                "Between the end of a check and the next (1ms to 24h). Default: \"10s\"."
            }
            Key::HealthTimeout => "The longest one check may take (1ms to 24h). Default: \"5s\".",
            Key::HealthRetries => {
                "Failures in a row that make the service unhealthy (1 to 1000). Default: 3."
            }
            Key::HealthStartPeriod => {
                "After readiness, a time in which failures are logged but not counted (up to \
                 24h). Default: \"0s\"."
            }
        }
    }

    /// The key as messages write it: `stop_timeout`, `ready.tcp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Key::Payload => "payload",
            Key::Args => "args",
            Key::Env => "env",
            Key::Cwd => "cwd",
            Key::Ready => "ready",
            Key::Health => "health",
            Key::DependsOn => "depends_on",
            Key::Restart => "restart",
            Key::MaxRestarts => "max_restarts",
            Key::RestartWindow => "restart_window",
            Key::StopSignal => "stop_signal",
            Key::StopTimeout => "stop_timeout",
            Key::ReloadSignal => "reload_signal",
            Key::ReadyHttp => "ready.http",
            Key::ReadyTcp => "ready.tcp",
            Key::ReadyLog => "ready.log",
            Key::ReadyTimeout => "ready.timeout",
            Key::ReadyExec => "ready.exec",
            Key::HealthHttp => "health.http",
            Key::HealthTcp => "health.tcp",
            Key::HealthExec => "health.exec",
            Key::HealthInterval => "health.interval",
            Key::HealthTimeout => "health.timeout",
            Key::HealthRetries => "health.retries",
            Key::HealthStartPeriod => "health.start_period",
        }
    }

    /// Its name in its own table: `tcp` for `ready.tcp` or `health.tcp`.
    pub(super) fn name(self) -> &'static str {
        let key = self.as_str();
        key.strip_prefix("ready.").or_else(|| key.strip_prefix("health.")).unwrap_or(key)
    }

    /// An example of its value, for a fix.
    pub(super) fn example(self) -> &'static str {
        match self {
            Key::Payload => "payload = \"api\"",
            Key::Args => "args = [\"--port\", \"8080\"]",
            Key::Env => "env = { NAME = \"value\" }",
            Key::Cwd => "cwd = \"/srv/api\"",
            Key::Ready | Key::ReadyTimeout => {
                "ready = { tcp = \"127.0.0.1:8080\", timeout = \"20s\" }"
            }
            Key::DependsOn => {
                "depends_on = [\"db\"] or depends_on = { db = \"healthy\", migrate = \"completed_successfully\" }"
            }
            Key::Restart => "restart = \"on-failure\"",
            Key::MaxRestarts => "max_restarts = 5",
            Key::RestartWindow => "restart_window = \"60s\"",
            Key::StopSignal => "stop_signal = \"SIGTERM\"",
            Key::StopTimeout => "stop_timeout = \"10s\"",
            Key::ReloadSignal => "reload_signal = \"SIGHUP\"",
            Key::ReadyHttp => "ready = { http = \"http://127.0.0.1:8080/healthz\" }",
            Key::ReadyTcp => "ready = { tcp = \"127.0.0.1:8080\" }",
            Key::ReadyLog => "ready = { log = \"listening\" }",
            Key::ReadyExec => "ready = { exec = [\"pg_isready\", \"-q\"] }",
            Key::Health => {
                "health = { http = \"http://127.0.0.1:8080/healthz\", interval = \"10s\" }"
            }
            Key::HealthHttp => "health = { http = \"http://127.0.0.1:8080/healthz\" }",
            Key::HealthTcp => "health = { tcp = \"127.0.0.1:8080\" }",
            Key::HealthExec => "health = { exec = [\"pg_isready\", \"-q\"] }",
            Key::HealthInterval => "health = { tcp = \"127.0.0.1:8080\", interval = \"10s\" }",
            Key::HealthTimeout => "health = { tcp = \"127.0.0.1:8080\", timeout = \"5s\" }",
            Key::HealthRetries => "health = { tcp = \"127.0.0.1:8080\", retries = 3 }",
            Key::HealthStartPeriod => {
                "health = { tcp = \"127.0.0.1:8080\", start_period = \"30s\" }"
            }
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_read_as_written() {
        assert_eq!(Key::ReadyTimeout.to_string(), "ready.timeout");
        assert_eq!(Key::ReadyTimeout.name(), "timeout");
        assert_eq!(Key::StopSignal.name(), "stop_signal");
        assert_eq!(Key::HealthStartPeriod.name(), "start_period");
        let listed: Vec<Key> =
            Key::SERVICE.into_iter().chain(Key::READY).chain(Key::HEALTH).collect();
        assert_eq!(listed, Key::ALL);
        for key in Key::ALL {
            assert!(!key.help().is_empty() && key.help().ends_with('.'), "{key}");
            assert!(key.example().starts_with(key.as_str().split('.').next().unwrap()), "{key}");
        }
    }
}
