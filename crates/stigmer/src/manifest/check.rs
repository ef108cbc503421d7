//! The checks of `ready` and `health`: the forms each table takes, read
//! and checked when the manifest is, so that an address that does not
//! resolve or a command that is not there stops the server before anything
//! starts.
//!
//! `ready` takes one of `http`, `tcp`, `log` and `exec`, with a `timeout`
//! for the whole wait. `health` takes one of `http`, `tcp` and `exec` (a
//! log line once written says nothing about later), with `interval`,
//! `timeout` (per check), `retries` and `start_period`.
//!
//! An `exec` command is found now: `argv[0]` with a `/` is a path (a
//! relative one from stigmer's folder), made absolute; a bare name is
//! looked up in `PATH`. Either way it must be an executable file.

use std::net::{SocketAddr, ToSocketAddrs as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::key::Key;
use super::problem::ProblemKind;
use super::{
    Check, Health, MAX_HEALTH_RETRIES, MIN_HEALTH_INTERVAL, MIN_HEALTH_TIMEOUT, MIN_READY_TIMEOUT,
    Ready, duration, field,
};

const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(10);
const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_HEALTH_RETRIES: u32 = 3;

/// Reads a `ready` table.
pub(super) fn ready(ready: &toml::Table, problems: &mut Vec<ProblemKind>) -> Option<Ready> {
    let before = problems.len();
    let names = Key::READY.map(Key::name);
    for key in ready.keys().filter(|k| !names.contains(&k.as_str())) {
        problems.push(ProblemKind::UnknownReadyKey { key: key.clone() });
    }
    let mut text = |key: Key| field::<String>(ready, key, problems);
    let (http, tcp, log, timeout) =
        (text(Key::ReadyHttp), text(Key::ReadyTcp), text(Key::ReadyLog), text(Key::ReadyTimeout));
    let exec = field::<Vec<String>>(ready, Key::ReadyExec, problems);
    let timeout = duration(Key::ReadyTimeout, timeout, DEFAULT_READY_TIMEOUT, MIN_READY_TIMEOUT)
        .map_err(|e| problems.push(e))
        .ok();
    if problems.len() > before {
        return None;
    }
    let check = match (http, tcp, log, exec) {
        (Some(url), None, None, None) => http_check(Key::ReadyHttp, &url),
        (None, Some(addr), None, None) => socket_addr(Key::ReadyTcp, &addr).map(Check::Tcp),
        (None, None, Some(text), None) if !text.is_empty() => Ok(Check::Log(text)),
        (None, None, Some(_), None) => Err(ProblemKind::EmptyReadyLog),
        (None, None, None, Some(argv)) => exec_check(Key::ReadyExec, argv),
        _ => Err(ProblemKind::NotOneCheck),
    };
    match (check, timeout) {
        (Ok(check), Some(timeout)) => Some(Ready { check, timeout }),
        (Err(e), _) => {
            problems.push(e);
            None
        }
        (Ok(_), None) => None,
    }
}

/// Reads a `health` table.
pub(super) fn health(health: &toml::Table, problems: &mut Vec<ProblemKind>) -> Option<Health> {
    let before = problems.len();
    let names = Key::HEALTH.map(Key::name);
    let log = health.contains_key("log");
    for key in health.keys().filter(|k| !names.contains(&k.as_str()) && *k != "log") {
        problems.push(ProblemKind::UnknownHealthKey { key: key.clone() });
    }
    if log {
        problems.push(ProblemKind::LogHealth);
    }
    let mut text = |key: Key| field::<String>(health, key, problems);
    let (http, tcp) = (text(Key::HealthHttp), text(Key::HealthTcp));
    let (interval, timeout, start_period) =
        (text(Key::HealthInterval), text(Key::HealthTimeout), text(Key::HealthStartPeriod));
    let exec = field::<Vec<String>>(health, Key::HealthExec, problems);
    let mut time = |key, value, default, min| {
        duration(key, value, default, min).map_err(|e| problems.push(e)).ok()
    };
    let interval =
        time(Key::HealthInterval, interval, DEFAULT_HEALTH_INTERVAL, MIN_HEALTH_INTERVAL);
    let timeout = time(Key::HealthTimeout, timeout, DEFAULT_HEALTH_TIMEOUT, MIN_HEALTH_TIMEOUT);
    let start_period = time(Key::HealthStartPeriod, start_period, Duration::ZERO, Duration::ZERO);
    let retries = match field::<i64>(health, Key::HealthRetries, problems) {
        None => Some(DEFAULT_HEALTH_RETRIES),
        Some(n) => match u32::try_from(n) {
            Ok(n) if (1..=MAX_HEALTH_RETRIES).contains(&n) => Some(n),
            _ => {
                problems.push(ProblemKind::RetriesOutOfRange { value: n });
                None
            }
        },
    };
    if problems.len() > before {
        return None;
    }
    let check = match (http, tcp, exec) {
        (Some(url), None, None) => http_check(Key::HealthHttp, &url),
        (None, Some(addr), None) => socket_addr(Key::HealthTcp, &addr).map(Check::Tcp),
        (None, None, Some(argv)) => exec_check(Key::HealthExec, argv),
        _ => Err(ProblemKind::NotOneHealthCheck),
    };
    match (check, interval, timeout, retries, start_period) {
        (Ok(check), Some(interval), Some(timeout), Some(retries), Some(start_period)) => {
            Some(Health { check, interval, timeout, retries, start_period })
        }
        (Err(e), ..) => {
            problems.push(e);
            None
        }
        _ => None,
    }
}

/// An `exec` check of `key`: `argv` not empty, no NUL, and its command
/// found.
fn exec_check(key: Key, argv: Vec<String>) -> Result<Check, ProblemKind> {
    let Some(first) = argv.first().filter(|a| !a.is_empty()) else {
        return Err(ProblemKind::EmptyExec { key });
    };
    if let Some((index, arg)) = argv.iter().enumerate().find(|(_, a)| a.contains('\0')) {
        return Err(ProblemKind::NulInExec { key, index, arg: arg.clone() });
    }
    let program = if first.contains('/') {
        let path = std::path::absolute(first).unwrap_or_else(|_| PathBuf::from(first));
        if !runnable(&path) {
            return Err(ProblemKind::ExecNotExecutable { key, program: first.clone(), path });
        }
        path
    } else {
        let dirs = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&dirs)
            .filter(|d| !d.as_os_str().is_empty())
            .filter_map(|d| std::path::absolute(d.join(first)).ok())
            .find(|p| runnable(p))
            .ok_or_else(|| ProblemKind::ExecNotFound { key, program: first.clone() })?
    };
    Ok(Check::Exec { argv, program })
}

/// Whether `path` is a file this process may execute.
fn runnable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file())
        && nix::unistd::access(path, nix::unistd::AccessFlags::X_OK).is_ok()
}

/// An `http` check of `key` (`ready.http` or `health.http`).
pub(super) fn http_check(key: Key, url: &str) -> Result<Check, ProblemKind> {
    let bad = || ProblemKind::NotHttpUrl { key, url: url.to_owned() };
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ProblemKind::SpaceInUrl { key, url: url.to_owned() });
    }
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
    let addr = socket_addr(key, &with_port)?;
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

fn socket_addr(key: Key, address: &str) -> Result<SocketAddr, ProblemKind> {
    let fix = || ProblemKind::NotHostPort { key, address: address.to_owned() };
    if let Ok(addr) = address.parse() {
        return Ok(addr);
    }
    let (host, port) = address.rsplit_once(':').ok_or_else(fix)?;
    port.parse::<u16>().map_err(|_| fix())?;
    if host.is_empty() || host.contains('\0') {
        return Err(fix());
    }
    address.to_socket_addrs().ok().and_then(|mut a| a.next()).ok_or_else(|| {
        ProblemKind::Unresolved { key, address: address.to_owned(), host: host.to_owned() }
    })
}
