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
        for key in Key::SERVICE.into_iter().chain(Key::READY).chain(Key::HEALTH) {
            assert!(key.example().starts_with(key.as_str().split('.').next().unwrap()), "{key}");
        }
    }
}
