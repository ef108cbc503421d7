//! Why a server failed: what [`Outcome::Failed`](super::Outcome::Failed)
//! carries.
//!
//! One variant per way a server can end badly, each naming the service.
//! The messages are what `stigmer server` prints after `error: `, and what
//! tests and users read, so they change only on purpose. Each is one line
//! that already holds its cause: print it with `{}`, not a chain.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use humantime::format_duration;

use super::readiness::NotReady;
use super::reap::Exit;

/// Why the server failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Failure {
    /// Something already answers on the address of the service's `tcp` or
    /// `http` readiness check: that answer would pass the check, and the
    /// service could not listen anyway.
    #[error("cannot start {service}: {address} is already in use{}", By(holder.as_deref()))]
    AddressInUse {
        /// The service.
        service: String,
        /// The address of its readiness check.
        address: SocketAddr,
        /// Who holds it, as "pid N (name)", where that can be told.
        holder: Option<String>,
    },

    /// Starting the service's payload failed.
    #[error("{service}: {source}")]
    Spawn {
        /// The service.
        service: String,
        /// Why.
        #[source]
        source: crate::Error,
    },

    /// The service's readiness check did not pass within its timeout.
    #[error("{service} was not ready within {}: {source}", format_duration(*timeout))]
    NotReady {
        /// The service.
        service: String,
        /// Its `ready.timeout`.
        timeout: Duration,
        /// The check's last failure.
        #[source]
        source: NotReady,
    },

    /// The service exited and its policy is `restart = "no"`.
    #[error("{service} exited ({exit}) and its restart policy is \"no\"")]
    NotRestarted {
        /// The service.
        service: String,
        /// How it ended.
        exit: Exit,
    },

    /// A one-shot job (`restart = "no"`, waited for with
    /// `completed_successfully`) exited with a non-zero status or a
    /// signal: what waits for it can never start.
    #[error(
        "job {service} failed ({exit}) and its restart policy is \"no\": {}, waiting for it \
         to complete successfully, cannot start",
        waiting.join(", ")
    )]
    JobFailed {
        /// The job.
        service: String,
        /// How it ended.
        exit: Exit,
        /// The services that wait for it to complete successfully, in
        /// manifest order.
        waiting: Vec<String>,
    },

    /// A service waits for another to be healthy, and that one completed
    /// (exited with status 0, not run again by its policy) first.
    #[error(
        "{service} cannot start: it waits for {dependency} to be healthy, but {dependency} \
         completed (exited with status 0) and its restart policy does not run it again"
    )]
    DependencyCompleted {
        /// The service that waits.
        service: String,
        /// The service it waits for.
        dependency: String,
    },

    /// The service restarted `max_restarts` times within `restart_window`
    /// and exited again.
    #[error(
        "{service} exited ({exit}) after {max_restarts} restarts within {}: giving up",
        format_duration(*window)
    )]
    GaveUp {
        /// The service.
        service: String,
        /// How its last run ended.
        exit: Exit,
        /// Its `max_restarts`.
        max_restarts: u32,
        /// Its `restart_window`.
        window: Duration,
    },

    /// The service failed its health check `retries` times in a row, and
    /// its policy is `restart = "no"`.
    #[error(
        "{service} is unhealthy after {} (the last: {last}), and its restart policy is \"no\"",
        failed_checks(*failures)
    )]
    Unhealthy {
        /// The service.
        service: String,
        /// The failures in a row.
        failures: u32,
        /// What the last check said.
        last: String,
    },

    /// The service was restarted `max_restarts` times within
    /// `restart_window` and was found unhealthy again.
    #[error(
        "{service} was restarted {} within {} and is unhealthy again after {} (the last: \
         {last}): giving up",
        times(*max_restarts),
        format_duration(*window),
        failed_checks(*failures)
    )]
    GaveUpUnhealthy {
        /// The service.
        service: String,
        /// The failures in a row of its last run.
        failures: u32,
        /// What the last check said.
        last: String,
        /// Its `max_restarts`.
        max_restarts: u32,
        /// Its `restart_window`.
        window: Duration,
    },

    /// The guard process (see [`guard`](super::guard)) ended, so every
    /// service was killed.
    #[error("the guard process ended")]
    GuardGone,

    /// A requested shutdown in which these services did not stop within
    /// their `stop_timeout` and got SIGKILL.
    #[error("{} had to be killed", services.join(", "))]
    Killed {
        /// The services, in manifest order.
        services: Vec<String>,
    },

    /// Every service ended without a shutdown being asked for (each done by
    /// its restart policy).
    #[error("every service exited on its own")]
    AllExited,
}

impl Failure {
    /// The one service the failure is about, if it is about one.
    pub fn service(&self) -> Option<&str> {
        match self {
            Failure::AddressInUse { service, .. }
            | Failure::Spawn { service, .. }
            | Failure::NotReady { service, .. }
            | Failure::NotRestarted { service, .. }
            | Failure::GaveUp { service, .. }
            | Failure::JobFailed { service, .. }
            | Failure::DependencyCompleted { service, .. }
            | Failure::Unhealthy { service, .. }
            | Failure::GaveUpUnhealthy { service, .. } => Some(service),
            Failure::GuardGone | Failure::Killed { .. } | Failure::AllExited => None,
        }
    }
}

/// Why the shell could not spawn a service; the machine names the service.
#[derive(Debug)]
pub(crate) enum SpawnError {
    /// Something already answers on its readiness check's address.
    AddressInUse { address: SocketAddr, holder: Option<String> },
    /// Starting its payload failed.
    Launch(crate::Error),
}

impl SpawnError {
    /// The server's failure, for service `service`.
    pub(crate) fn into_failure(self, service: &str) -> Failure {
        let service = service.to_owned();
        match self {
            SpawnError::AddressInUse { address, holder } => {
                Failure::AddressInUse { service, address, holder }
            }
            SpawnError::Launch(source) => Failure::Spawn { service, source },
        }
    }
}

/// "1 failed health check", "3 failed health checks in a row".
pub(crate) fn failed_checks(n: u32) -> String {
    match n {
        1 => "1 failed health check".to_owned(),
        n => format!("{n} failed health checks in a row"),
    }
}

/// "once", "3 times".
fn times(n: u32) -> String {
    match n {
        1 => "once".to_owned(),
        n => format!("{n} times"),
    }
}

/// ", by HOLDER" when the holder is known.
struct By<'a>(Option<&'a str>);

impl fmt::Display for By<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(holder) => write!(f, ", by {holder}"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use nix::sys::signal::Signal;

    #[test]
    fn messages() {
        let address: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let taken = |holder: Option<&str>| Failure::AddressInUse {
            service: "api".into(),
            address,
            holder: holder.map(str::to_owned),
        };
        assert_eq!(
            taken(Some("pid 7 (nc)")).to_string(),
            "cannot start api: 127.0.0.1:8080 is already in use, by pid 7 (nc)"
        );
        assert_eq!(taken(None).to_string(), "cannot start api: 127.0.0.1:8080 is already in use");
        let not_ready = Failure::NotReady {
            service: "api".into(),
            timeout: Duration::from_millis(600),
            source: NotReady::NoLine { text: "up".into() },
        };
        assert_eq!(
            not_ready.to_string(),
            "api was not ready within 600ms: no output line contained \"up\""
        );
        let no = Failure::NotRestarted { service: "db".into(), exit: Exit::Code(3) };
        assert_eq!(no.to_string(), "db exited (exit status 3) and its restart policy is \"no\"");
        let gave_up = Failure::GaveUp {
            service: "db".into(),
            exit: Exit::Signal(Signal::SIGSEGV),
            max_restarts: 3,
            window: Duration::from_secs(60),
        };
        assert_eq!(
            gave_up.to_string(),
            "db exited (killed by SIGSEGV) after 3 restarts within 1m: giving up"
        );
        let job = Failure::JobFailed {
            service: "migrate".into(),
            exit: Exit::Code(3),
            waiting: vec!["api".into(), "worker".into()],
        };
        assert_eq!(
            job.to_string(),
            "job migrate failed (exit status 3) and its restart policy is \"no\": api, worker, \
             waiting for it to complete successfully, cannot start"
        );
        let completed =
            Failure::DependencyCompleted { service: "api".into(), dependency: "db".into() };
        assert_eq!(
            completed.to_string(),
            "api cannot start: it waits for db to be healthy, but db completed (exited with \
             status 0) and its restart policy does not run it again"
        );
        let unhealthy =
            Failure::Unhealthy { service: "api".into(), failures: 3, last: "refused".into() };
        assert_eq!(
            unhealthy.to_string(),
            "api is unhealthy after 3 failed health checks in a row (the last: refused), and its \
             restart policy is \"no\""
        );
        let gave_up = Failure::GaveUpUnhealthy {
            service: "api".into(),
            failures: 2,
            last: "refused".into(),
            max_restarts: 5,
            window: Duration::from_secs(60),
        };
        assert_eq!(
            gave_up.to_string(),
            "api was restarted 5 times within 1m and is unhealthy again after 2 failed health \
             checks in a row (the last: refused): giving up"
        );
        let killed = Failure::Killed { services: vec!["a".into(), "b".into()] };
        assert_eq!(killed.to_string(), "a, b had to be killed");
        let spawn = Failure::Spawn {
            service: "api".into(),
            source: crate::Error::Exec {
                name: "api".into(),
                source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
            },
        };
        assert_eq!(spawn.to_string(), "api: cannot start api: permission denied");
        assert_eq!(Failure::GuardGone.to_string(), "the guard process ended");
        assert_eq!(Failure::AllExited.to_string(), "every service exited on its own");
    }

    #[test]
    fn is_send_sync_static() {
        fn check<T: Send + Sync + 'static>() {}
        check::<Failure>();
    }
}
