//! `stigmer server start | stop | status | restart | logs`: clients of the
//! running server's control socket (see `stigmer::supervise::control`).
//! Data goes to stdout, stigmer's own messages to stderr.

use std::io::{self, BufRead as _, Write};
use std::os::unix::process::CommandExt as _;
use std::process::{ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use stigmer::supervise::control::{CheckStatus, Progress, Reply, Request, ServiceStatus, Status};
use stigmer::supervise::journal::Entry;
use stigmer::supervise::{Client, ControlError};
use stigmer::{Catalog, Choice, Launcher, env};

use crate::cli::{ServerArgs, ServerCmd};

/// `status`'s exit status when no server is running (as LSB init scripts
/// and `systemctl status` use it).
const NOT_RUNNING: u8 = 3;

/// Runs one `stigmer server` subcommand.
pub(crate) fn run(
    catalog: &Catalog,
    choice: Choice,
    verbose: u8,
    quiet: bool,
    cmd: ServerCmd,
) -> anyhow::Result<ExitCode> {
    let launcher = Launcher::new(choice, env::home().ok());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        match cmd {
            ServerCmd::Start { run } => {
                start(catalog, &launcher, choice, verbose, quiet, run).await
            }
            ServerCmd::Stop => stop(&launcher).await,
            ServerCmd::Status { json } => status(&launcher, json).await,
            ServerCmd::Restart { services } => restart(&launcher, services).await,
            ServerCmd::Logs { follow, lines, json, services } => {
                logs(&launcher, Request::Logs { lines, follow, services }, json).await
            }
        }
    })
}

/// A client of the running server, or `None` when none runs.
async fn connect(launcher: &Launcher) -> anyhow::Result<Option<Client>> {
    match Client::connect(launcher.cache()).await {
        Ok(client) => Ok(Some(client)),
        Err(ControlError::NotRunning { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The message for "no server here".
fn not_running(launcher: &Launcher) -> String {
    let home = launcher.cache().layout().map(|l| l.root).unwrap_or_default();
    format!("no stigmer server is running for STIGMER_HOME={}", home.display())
}

/// The client's request refused: the server's message.
fn refused(message: String) -> anyhow::Error {
    anyhow::anyhow!(message)
}

/// How long a server may take to answer a status request: it answers at
/// once unless it is stopped (SIGSTOP) or wedged, which a script probing
/// with `status` must hear about rather than hang.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// The server's status, through `client`.
async fn ask_status(client: &mut Client) -> anyhow::Result<Status> {
    let socket = client.socket().to_owned();
    let reply = tokio::time::timeout(ANSWER_WITHIN, client.ask(&Request::Status))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "the server on {socket} did not answer within {}s: is it stopped (SIGSTOP) or stuck?",
                ANSWER_WITHIN.as_secs()
            )
        })?;
    match reply? {
        Reply::Status(status) => Ok(status),
        Reply::Error(message) => Err(refused(message)),
        other => anyhow::bail!("the server answered {other:?} to a status request"),
    }
}

async fn start(
    catalog: &Catalog,
    launcher: &Launcher,
    choice: Choice,
    verbose: u8,
    quiet: bool,
    run: ServerArgs,
) -> anyhow::Result<ExitCode> {
    let mut out = io::stdout().lock();
    if let Some(mut client) = connect(launcher).await? {
        let status = ask_status(&mut client).await?;
        writeln!(out, "stigmer server is already running (pid {})", status.pid)?;
        return Ok(ExitCode::SUCCESS);
    }
    // Its problems here, at once, before anything is detached.
    crate::manifest(catalog, run.config.as_deref())?;
    let home = launcher.cache().layout()?.root;
    let exe = std::env::current_exe().context("cannot find stigmer's own executable")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("--backend").arg(crate::cli::backend_arg(choice)).args(["server", "--wait-for-watch"]);
    if let Some(config) = &run.config {
        cmd.arg("--config").arg(std::path::absolute(config)?);
    }
    if run.json_logs {
        cmd.arg("--json-logs");
    }
    for _ in 0..verbose {
        cmd.arg("-v");
    }
    if quiet {
        cmd.arg("-q");
    }
    // Its output is in its journal (`stigmer server logs`); stderr comes
    // here until it is ready, for what it says if it cannot start.
    cmd.env(env::STIGMER_HOME, &home)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: between fork and exec the closure calls only setsid(2),
    // which is async-signal-safe, and allocates nothing.
    #[allow(unsafe_code)]
    unsafe {
        // A session of its own: no terminal, so no SIGHUP or Ctrl-C from it.
        cmd.pre_exec(|| nix::unistd::setsid().map(drop).map_err(io::Error::from));
    }
    let mut child = cmd.spawn().context("cannot start the server")?;
    let said = Arc::new(Mutex::new(Vec::<String>::new()));
    if let Some(stderr) = child.stderr.take() {
        let said = Arc::clone(&said);
        // Detached: it ends when the server closes stderr, or with us.
        std::thread::spawn(move || {
            for line in io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                said.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
        });
    }
    let said_so = || said.lock().unwrap_or_else(|p| p.into_inner()).join("\n");
    // Until it answers, or ends.
    let mut client = loop {
        if let Some(status) = child.try_wait()? {
            // Another `start` may have won the race: that one is running.
            if let Some(mut client) = connect(launcher).await? {
                let status = ask_status(&mut client).await?;
                writeln!(out, "stigmer server is already running (pid {})", status.pid)?;
                return Ok(ExitCode::SUCCESS);
            }
            let said = said_so();
            let said = said.trim_end();
            crate::stderr::write(format!("{said}\n").as_bytes());
            anyhow::bail!("the server exited ({status}) before it was ready");
        }
        match Client::connect(launcher.cache()).await {
            Ok(client) => break client,
            Err(ControlError::NotRunning { .. }) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    client.send(&Request::Watch).await?;
    let mut shown: Vec<String> = Vec::new();
    let mut pid = child.id();
    let mut failure = None;
    let started = Instant::now();
    while let Some(reply) = client.next().await? {
        match reply {
            Reply::Status(status) => {
                pid = status.pid;
                for s in status.services.iter().filter(|s| s.state == "ready") {
                    writeln!(out, "Starting {}... ✓ (pid {})", s.name, opt(s.pid))?;
                    shown.push(s.name.clone());
                }
                if status.all_ready {
                    writeln!(out, "All services running (pid {pid})")?;
                    return Ok(ExitCode::SUCCESS);
                }
            }
            Reply::Progress(Progress::Ready { service, secs }) if !shown.contains(&service) => {
                writeln!(out, "Starting {service}... ✓ (ready in {secs:.2}s)")?;
                shown.push(service);
            }
            Reply::Progress(Progress::AllReady { .. }) => {
                let secs = started.elapsed().as_secs_f64();
                writeln!(out, "All services running ({secs:.2}s, pid {pid})")?;
                writeln!(out, "(stigmer server status | logs | restart | stop)")?;
                return Ok(ExitCode::SUCCESS);
            }
            Reply::Progress(Progress::Failed { service, message }) => {
                if let Some(service) = &service {
                    writeln!(out, "Starting {service}... ✗")?;
                }
                failure = Some((service, message));
            }
            Reply::Progress(Progress::Stopping) => {
                failure = Some((None, "the server was asked to stop while it started".into()));
            }
            Reply::Line(entry) if failure.is_some() => {
                let line = format!("{} | {}", entry.source, entry.line);
                crate::stderr::write(format!("  {line}\n").as_bytes());
            }
            Reply::Error(message) => return Err(refused(message)),
            Reply::Done => break,
            _ => {}
        }
    }
    // It stops what it started by itself: wait for that, so nothing of it
    // is left when this returns.
    let status = child.wait()?;
    match failure {
        Some((_, message)) => anyhow::bail!("{message} (the server stopped: {status})"),
        None => {
            let said = said_so();
            crate::stderr::write(format!("{}\n", said.trim_end()).as_bytes());
            anyhow::bail!("the server ended ({status}) before every service was ready")
        }
    }
}

/// `logs` with no server running: the last lines the last one wrote to its
/// log file, if it could (an error when following, or with no file).
fn logs_left(launcher: &Launcher, request: &Request, json: bool) -> anyhow::Result<ExitCode> {
    let Request::Logs { lines, follow, services } = request else {
        anyhow::bail!("{}", not_running(launcher));
    };
    let left = match stigmer::supervise::logs_left(launcher.cache(), services, *lines) {
        Ok(Some(left)) if !follow => left,
        _ => anyhow::bail!("{}", not_running(launcher)),
    };
    let (file, entries) = left;
    crate::stderr::write(
        format!("{}: its last lines, from {}\n", not_running(launcher), file.display()).as_bytes(),
    );
    let mut out = io::BufWriter::new(io::stdout().lock());
    for entry in &entries {
        print_entry(&mut out, entry, json)?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// One log line as `logs` prints it: a JSON object, or `TIME SOURCE | LINE`.
fn print_entry(out: &mut impl Write, entry: &Entry, json: bool) -> io::Result<()> {
    if json {
        serde_json::to_writer(&mut *out, entry).map_err(io::Error::from)?;
        writeln!(out)
    } else {
        let at = humantime::format_rfc3339_millis(entry.at);
        writeln!(out, "{at} {} | {}", entry.source, entry.line)
    }
}

/// `-` for what is not known.
fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

async fn stop(launcher: &Launcher) -> anyhow::Result<ExitCode> {
    let mut out = io::stdout().lock();
    let Some(mut client) = connect(launcher).await? else {
        writeln!(out, "{}: nothing to stop", not_running(launcher))?;
        return Ok(ExitCode::SUCCESS);
    };
    let status = ask_status(&mut client).await?;
    // A new connection: the first one answered and closed.
    let Some(mut client) = connect(launcher).await? else {
        writeln!(out, "stigmer server (pid {}) stopped on its own", status.pid)?;
        return Ok(ExitCode::SUCCESS);
    };
    // Whether its pids are pids here (the same pid namespace).
    let same_pids = client.peer_pid() == Some(status.supervisor);
    match client.ask(&Request::Stop).await? {
        Reply::Stopping => {}
        Reply::Error(message) => return Err(refused(message)),
        other => anyhow::bail!("the server answered {other:?} to a stop request"),
    }
    writeln!(out, "Stopping stigmer server (pid {})...", status.pid)?;
    out.flush()?;
    // The connection ends with the supervisor, after every service and
    // every descendant that escaped their group is gone.
    while client.next().await?.is_some() {}
    // Then the guard, which outlives it only to make sure.
    if same_pids {
        let guard = nix::unistd::Pid::from_raw(status.pid as i32);
        let deadline = Instant::now() + Duration::from_secs(10);
        while nix::sys::signal::kill(guard, None).is_ok() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    writeln!(out, "stopped")?;
    Ok(ExitCode::SUCCESS)
}

async fn status(launcher: &Launcher, json: bool) -> anyhow::Result<ExitCode> {
    let mut out = io::stdout().lock();
    let Some(mut client) = connect(launcher).await? else {
        match json {
            true => writeln!(out, "{}", serde_json::json!({ "running": false }))?,
            false => writeln!(out, "{}", not_running(launcher))?,
        }
        return Ok(ExitCode::from(NOT_RUNNING));
    };
    let status = ask_status(&mut client).await?;
    let code = if status.all_ready { ExitCode::SUCCESS } else { ExitCode::FAILURE };
    if json {
        let mut value = serde_json::to_value(&status)?;
        value["running"] = true.into();
        serde_json::to_writer_pretty(&mut out, &value).map_err(io::Error::from)?;
        writeln!(out)?;
        return Ok(code);
    }
    let state = if status.stopping { "stopping" } else { "running" };
    writeln!(
        out,
        "stigmer server {state}: pid {} (supervisor {}), up {}, stigmer {}, socket {}",
        status.pid,
        status.supervisor,
        duration(status.uptime_secs),
        status.version,
        status.socket
    )?;
    writeln!(out)?;
    let width = status.services.iter().map(|s| s.name.len()).max().unwrap_or(0).max(7);
    writeln!(
        out,
        "{:width$}  {:<10}  {:>7}  {:>8}  {:>8}  {:<7}  {:>9}  {:>9}  CHECKS",
        "SERVICE", "STATE", "PID", "UPTIME", "RESTARTS", "BACKEND", "RSS", "MEMFD"
    )?;
    for s in &status.services {
        writeln!(
            out,
            "{:width$}  {:<10}  {:>7}  {:>8}  {:>8}  {:<7}  {:>9}  {:>9}  {}",
            s.name,
            s.state,
            opt(s.pid),
            s.uptime_secs.map_or_else(|| "-".into(), duration),
            s.restarts,
            s.backend,
            s.rss.map_or_else(|| "-".into(), crate::human_size),
            s.memfd.map_or_else(|| "-".into(), crate::human_size),
            check(s)
        )?;
    }
    Ok(code)
}

/// A service's readiness and liveness checks and their last results, for
/// the status table: `ready http://... (passed), health ... (failed: why)`.
fn check(s: &ServiceStatus) -> String {
    let one = |kind: &str, check: &CheckStatus| match &check.last {
        None => format!("{kind} {} (not checked yet)", check.check),
        Some(last) if last.ok => format!("{kind} {} (passed)", check.check),
        Some(last) => {
            format!("{kind} {} (failed: {})", check.check, last.message.as_deref().unwrap_or("?"))
        }
    };
    let checks: Vec<String> = [("ready", &s.ready), ("health", &s.health)]
        .into_iter()
        .filter_map(|(kind, check)| check.as_ref().map(|c| one(kind, c)))
        .collect();
    if checks.is_empty() { "-".into() } else { checks.join(", ") }
}

/// Seconds as `3m 12s` (whole seconds).
fn duration(secs: f64) -> String {
    humantime::format_duration(Duration::from_secs(secs as u64)).to_string()
}

async fn restart(launcher: &Launcher, services: Vec<String>) -> anyhow::Result<ExitCode> {
    let mut out = io::stdout().lock();
    let Some(mut client) = connect(launcher).await? else {
        anyhow::bail!("{}: start it with \"stigmer server start\"", not_running(launcher));
    };
    client.send(&Request::Restart { services }).await?;
    let mut failure = None;
    while let Some(reply) = client.next().await? {
        match reply {
            Reply::Progress(Progress::Exited { service, exit }) => {
                writeln!(out, "Stopped {service} ({exit})")?;
            }
            Reply::Progress(Progress::Ready { service, secs }) => {
                writeln!(out, "Restarting {service}... ✓ (ready in {secs:.2}s)")?;
            }
            Reply::Progress(Progress::Failed { message, .. }) => failure = Some(message),
            Reply::Progress(Progress::Stopping) => {
                failure = Some("the server is stopping".into());
            }
            Reply::Error(message) => return Err(refused(message)),
            Reply::Done => break,
            _ => {}
        }
    }
    match failure {
        Some(message) => anyhow::bail!("{message}"),
        None => Ok(ExitCode::SUCCESS),
    }
}

async fn logs(launcher: &Launcher, request: Request, json: bool) -> anyhow::Result<ExitCode> {
    let Some(mut client) = connect(launcher).await? else {
        return logs_left(launcher, &request, json);
    };
    client.send(&request).await?;
    let mut out = io::BufWriter::new(io::stdout().lock());
    while let Some(reply) = client.next().await? {
        match reply {
            Reply::Line(entry) => print_entry(&mut out, &entry, json)?,
            Reply::Skipped(n) => {
                out.flush()?;
                crate::stderr::write(
                    format!("stigmer: {n} line(s) skipped: this terminal was too slow\n")
                        .as_bytes(),
                );
            }
            Reply::Error(message) => return Err(refused(message)),
            Reply::Done => break,
            _ => {}
        }
        // Lines as they come when following; in one go otherwise.
        if matches!(request, Request::Logs { follow: true, .. }) {
            out.flush()?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
