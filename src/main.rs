//! The `stigmer` binary: a thin clap layer over the library.
//!
//! `main` parses arguments, sets up logging on stderr, calls the library and
//! maps the outcome to an exit status: the payload's own status for `run`,
//! 2 for a usage error, 1 for any other failure. It is not async: `run`
//! execs in place from a single-threaded process.

mod cli;

mod control;
mod logging;
mod man;
mod progress;
mod stderr;

use std::ffi::{OsStr, OsString};
use std::io::{self, IsTerminal as _, Write as _};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{CommandFactory as _, FromArgMatches as _};
use stigmer::{Catalog, Choice, Launch, Launcher, Manifest, env, manifest, supervise};

use crate::cli::{CacheCmd, Cli, Cmd, ServerArgs};

fn main() -> ExitCode {
    // `stigmer doctor` runs this executable from a sealed memfd to prove that
    // the host allows it; that copy exits here.
    stigmer::doctor::answer_probe();
    let mut args: Vec<OsString> = std::env::args_os().collect();
    let catalog = stigmer_payloads::catalog();

    // A mapped payload that re-exec'd itself through its /proc/self/exe,
    // which is stigmer; multi-call: `ln -s stigmer workflow-runner;
    // ./workflow-runner --help` runs the payload with every argument; and
    // `stigmer run NAME ...` with no option before NAME, the launch path,
    // without building the whole command line (about a tenth of the
    // launch's own CPU time): everything after NAME is the payload's, as
    // clap's `run` takes it (`tests/cli.rs`:
    // `run_parses_the_same_with_or_without_options`).
    let direct = match args.first() {
        Some(argv0) => match stigmer::launch::mapped_reexec(&catalog) {
            Some(p) => Some((p.name(), Some(argv0.clone()), args.split_off(1))),
            None => match multicall_name(argv0, &catalog) {
                Some(name) => Some((name, None, args.split_off(1))),
                None => cli::plain_run(&args, &catalog).map(|name| {
                    let rest = cli::payload_args(args.split_off(3));
                    (name, None, rest)
                }),
            },
        },
        None => None,
    };
    if let Some((name, arg0, rest)) = direct {
        logging::init(0, false, None, false);
        let choice = match std::env::var(env::STIGMER_BACKEND) {
            Ok(v) if !v.is_empty() => match v.parse::<Choice>() {
                Ok(c) => c,
                Err(e) => return fail(&e.into()),
            },
            _ => Choice::Auto,
        };
        // A re-exec keeps the argv[0] it was given, as execve would.
        return outcome(run(&catalog, choice, false, name, arg0.as_deref(), rest));
    }

    let command = Cli::command().long_version(long_version(&catalog));
    let cli = Cli::from_arg_matches(&command.get_matches_from(args)).unwrap_or_else(|e| e.exit());
    // The server is two processes (see `supervise::guard`), split before
    // logging starts its writer thread: a fork must come before any thread.
    let mut guard = None;
    if let Cmd::Server { action: None, .. } = cli.command {
        match supervise::guard::split() {
            Ok(supervise::guard::Side::Guard(code)) => return ExitCode::from(code),
            Ok(supervise::guard::Side::Supervisor(g)) => guard = Some(g),
            Err(e) => {
                return fail(&anyhow::Error::new(e).context("cannot start the supervisor"));
            }
        }
        stderr::start();
    }
    // The server's progress lines ("api: ready in 0.2s") are info events,
    // kept in its journal too, for `stigmer server logs`.
    let journal = guard.is_some().then(supervise::Journal::new);
    let json = matches!(&cli.command, Cmd::Server { action: None, run } if run.json_logs);
    logging::init(cli.verbose + u8::from(journal.is_some()), cli.quiet, journal.clone(), json);
    let choice = Choice::from(cli.backend);
    outcome(match cli.command {
        Cmd::Run { argv } => match argv.split_first() {
            Some((name, rest)) => {
                let args = cli::payload_args(rest.to_vec());
                run(&catalog, choice, cli.quiet, &name.to_string_lossy(), None, args)
            }
            // clap requires the name; this is for the type checker.
            None => Err(anyhow::anyhow!("stigmer run needs a payload name: see stigmer list")),
        },
        Cmd::Server { action: Some(action), .. } => {
            control::run(&catalog, choice, cli.verbose, cli.quiet, action)
        }
        Cmd::Server { action: None, run } => {
            let result = server(&catalog, choice, cli.quiet, &run, guard, journal.clone());
            let code = outcome(result);
            // The last words, if stderr takes them soon (and the log file,
            // if the disk does); then exit anyway.
            stderr::flush(Duration::from_millis(500));
            if let Some(journal) = journal {
                journal.close_file(Duration::from_millis(500));
            }
            return code;
        }
        Cmd::List { json } => list(&catalog, choice, json),
        Cmd::Doctor { json } => doctor(&catalog, choice, json),
        Cmd::Cache { command } => cache(&catalog, choice, command),
        Cmd::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "stigmer", &mut io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Man => man::render(Cli::command(), &mut io::stdout().lock())
            .map(|()| ExitCode::SUCCESS)
            .map_err(Into::into),
    })
}

/// What `--version` prints: stigmer's version and target (as in the release
/// archive's name), then the name, size and sha256 of every payload and
/// asset, to compare against the release notes.
fn long_version(catalog: &Catalog) -> String {
    let all = || catalog.payloads().iter().chain(catalog.assets());
    let width = all().map(|p| p.name().len()).max().unwrap_or(0);
    let mut text =
        format!("{} ({})\npayloads:", env!("CARGO_PKG_VERSION"), stigmer_payloads::TARGET);
    for (i, p) in all().enumerate() {
        if i == catalog.payloads().len() {
            text.push_str("\nassets:");
        }
        text.push_str(&format!(
            "\n  {:width$}  {:>11} bytes  sha256 {}",
            p.name(),
            p.len(),
            p.sha256()
        ));
    }
    text
}

/// The names of the payloads and of the assets of `catalog`, which a
/// manifest is checked against.
fn names(catalog: &Catalog) -> (Vec<&str>, Vec<&str>) {
    fn names(files: &[stigmer::Payload]) -> Vec<&str> {
        files.iter().map(|p| p.name()).collect()
    }
    (names(catalog.payloads()), names(catalog.assets()))
}

/// The payload to run when stigmer was started through a link named after
/// it, if it was.
fn multicall_name<'c>(argv0: &OsStr, catalog: &'c Catalog) -> Option<&'c str> {
    let name = Path::new(argv0).file_name()?.to_str()?;
    catalog.find(name).map(|p| p.name())
}

/// The launcher for commands that launch payloads: with a progress bar for
/// slow cache fills on a terminal, unless `--quiet`.
fn launcher(choice: Choice, quiet: bool) -> Launcher {
    let launcher = Launcher::new(choice, env::home().ok());
    match quiet {
        true => launcher,
        false => launcher.with_progress(Arc::new(progress::Bars::stderr())),
    }
}

fn run(
    catalog: &Catalog,
    choice: Choice,
    quiet: bool,
    name: &str,
    arg0: Option<&OsStr>,
    args: Vec<OsString>,
) -> anyhow::Result<ExitCode> {
    let payload = catalog.get(name)?;
    let launcher = launcher(choice, quiet);
    let status = launcher.run_as(payload, arg0, args)?;
    Ok(stigmer::launch::exit_code(status))
}

/// How problems of the embedded `services.toml` name it.
const EMBEDDED_MANIFEST: &str = "services.toml (embedded)";

/// The manifest `stigmer server` runs: `config`, or the embedded one;
/// checked.
fn manifest(catalog: &Catalog, config: Option<&Path>) -> anyhow::Result<Manifest> {
    let (payloads, assets) = names(catalog);
    let context = manifest::Context::new(&payloads).assets(&assets);
    Ok(match config {
        Some(path) => {
            let bytes = std::fs::read(path)
                .with_context(|| format!("cannot read the manifest {path:?}"))?;
            Manifest::parse_bytes_with(&bytes, &format!("{path:?}"), &context)?
        }
        None => {
            let bytes = catalog.manifest().context(
                "this stigmer carries no services.toml: pass --config FILE, or embed one beside the payloads",
            )?;
            Manifest::parse_bytes_with(bytes, EMBEDDED_MANIFEST, &context)?
        }
    })
}

fn server(
    catalog: &Catalog,
    choice: Choice,
    quiet: bool,
    args: &ServerArgs,
    guard: Option<supervise::Guard>,
    journal: Option<supervise::Journal>,
) -> anyhow::Result<ExitCode> {
    let manifest = manifest(catalog, args.config.as_deref())?;
    let launcher = launcher(choice, quiet);
    // The one server of this user and STIGMER_HOME; `stigmer server
    // status`, `stop`... reach it there. Its main process is the guard.
    let main_pid = match guard {
        Some(_) => nix::unistd::getppid(),
        None => nix::unistd::getpid(),
    };
    let control = match supervise::Listener::bind(launcher.cache(), main_pid.as_raw() as u32) {
        Ok(listener) => Some(listener),
        Err(
            e @ (supervise::ControlError::AlreadyRunning { .. }
            | supervise::ControlError::NotYou { .. }),
        ) => return Err(e.into()),
        Err(e) => {
            tracing::warn!("{e}: stigmer server status, stop... cannot reach this server");
            None
        }
    };
    let color =
        io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    // The supervisor takes any `Launch`; the CLI's is the real one.
    let launcher: Arc<dyn Launch + Send + Sync> = Arc::new(launcher);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut options = supervise::Options::default();
    (options.json_logs, options.color) = (args.json_logs, color);
    (options.control, options.journal) = (control, journal);
    // `server start` watches at once; should it die first, go on anyway.
    options.wait_for_watch = args.wait_for_watch.then_some(Duration::from_secs(10));
    // On this thread: services are spawned from it, and their death signal
    // is tied to it (see `supervise::serve`).
    let outcome = runtime.block_on(supervise::serve(manifest, catalog, launcher, options, guard));
    // A task stuck on a pipe nobody reads must not hold the exit.
    runtime.shutdown_timeout(Duration::from_millis(100));
    match outcome? {
        supervise::Outcome::Clean => Ok(ExitCode::SUCCESS),
        supervise::Outcome::Failed(why) => {
            stderr::write(logging::error_line(&why.to_string(), Default::default()).as_bytes());
            Ok(ExitCode::FAILURE)
        }
    }
}

fn list(catalog: &Catalog, choice: Choice, json: bool) -> anyhow::Result<ExitCode> {
    let launcher = Launcher::new(choice, env::home().ok());
    // Whether the kernel allows the mapped loader: the answer is in the
    // plans below.
    let _ = launcher.ask_kernel();
    let mut out = io::stdout().lock();
    // Payloads, then assets: where each runs from, or is kept.
    let plan = |p: &stigmer::Payload| match p.kind() {
        stigmer::Kind::Asset => launcher.plan_asset(p),
        _ => launcher.plan(p),
    };
    let all = || catalog.payloads().iter().chain(catalog.assets());
    if json {
        let rows: Vec<_> = all()
            .map(|p| {
                let plan = plan(p);
                serde_json::json!({
                    "name": p.name(),
                    "kind": p.kind().as_str(),
                    "size": p.len(),
                    "stored_size": p.data().len(),
                    "encoding": match p.encoding() {
                        stigmer::Encoding::Raw => "raw",
                        _ => "zstd",
                    },
                    "sha256": p.sha256().to_string(),
                    "backend": plan.backend.as_str(),
                    "why": plan.why,
                })
            })
            .collect();
        serde_json::to_writer_pretty(&mut out, &rows).map_err(io::Error::from)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    let width = all().map(|p| p.name().len()).max().unwrap_or(0).max(4);
    writeln!(out, "{:width$}  {:<11}  {:>9}  {:<12}  LAUNCH", "NAME", "KIND", "SIZE", "SHA256")?;
    for p in all() {
        let plan = plan(p);
        let sha = p.sha256().to_string();
        writeln!(
            out,
            "{:width$}  {:<11}  {:>9}  {:<12}  {}: {}",
            p.name(),
            p.kind().as_str(),
            human_size(p.len()),
            &sha[..12],
            plan.backend,
            plan.why
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

fn doctor(catalog: &Catalog, choice: Choice, json: bool) -> anyhow::Result<ExitCode> {
    let launcher = Launcher::new(choice, env::home().ok());
    let (payloads, assets) = names(catalog);
    let context = manifest::Context::new(&payloads).assets(&assets);
    let manifest = catalog
        .manifest()
        .map(|bytes| Manifest::parse_bytes_with(bytes, EMBEDDED_MANIFEST, &context));
    let report = stigmer::doctor::diagnose(catalog, &launcher, manifest.as_ref());
    let code =
        if report.all_ok() && report.manifest_ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE };
    let mut out = io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &report).map_err(io::Error::from)?;
        writeln!(out)?;
        return Ok(code);
    }
    // One line per finding: "ok" or "!!" for what decides whether payloads
    // run, blank for information.
    let mark = |ok: bool| if ok { "ok" } else { "!!" };
    let mut row =
        |mark: &str, label: &str, detail: &str| writeln!(out, "{mark:2}  {label:<16} {detail}");
    row("", "kernel", &report.kernel)?;
    match &report.memfd {
        Some(m) => {
            row(mark(m.create.ok), "memfd_create", &m.create.detail)?;
            let noexec = match m.noexec {
                Some(0) => "0: memfds may be executable".to_owned(),
                Some(1) => "1: memfds must ask for MFD_EXEC to be executable (stigmer does)".into(),
                Some(n) => format!("{n}: no memfd may be executable"),
                None => "absent (kernel before 6.3)".into(),
            };
            row("", "vm.memfd_noexec", &noexec)?;
            row(mark(m.exec.ok), "exec from memfd", &m.exec.detail)?;
        }
        None => row("", "exec from memfd", "not on this platform: payloads run from the cache")?,
    }
    // Information: payloads run without it (from a memfd).
    let mapped_mark = if report.mapped.ok { "ok" } else { "" };
    row(mapped_mark, "mapped loader", &report.mapped.detail)?;

    if let Some(seccomp) = &report.seccomp {
        row("", "seccomp", seccomp)?;
    }
    let cache = &report.cache;
    let mut line = match (&cache.root, cache.owner, &cache.mode) {
        (Some(root), Some(uid), Some(mode)) => {
            format!("{} (uid {uid}, mode {mode}): {}", root.display(), cache.usable.detail)
        }
        (Some(root), ..) => format!("{}: {}", root.display(), cache.usable.detail),
        (None, ..) => cache.usable.detail.clone(),
    };
    if let Some(free) = cache.free {
        line.push_str(&format!("; {} free", human_size(free)));
    }
    match cache.noexec {
        Some(true) => line.push_str("; mounted noexec: nothing can run from it"),
        Some(false) => line.push_str("; exec allowed"),
        None => {}
    }
    row(mark(cache.usable.ok && cache.noexec != Some(true)), "cache", &line)?;
    match &report.manifest_problems {
        Some(problems) if problems.is_empty() => {
            row(mark(true), "services.toml", "checked: stigmer server can start it from here")?;
        }
        Some(problems) => {
            for problem in problems {
                row(mark(false), "services.toml", problem)?;
            }
        }
        None => {}
    }
    if let Some(shmem) = report.server_shmem {
        let pinned = format!("stigmer server would pin {} of RAM in memfds", human_size(shmem));
        row("", "server memory", &pinned)?;
    }
    writeln!(out)?;
    let width = report.payloads.iter().map(|p| p.name.len()).max().unwrap_or(0).max(7);
    writeln!(out, "    {:width$}  {:<11}  {:>9}  {:<6}  WHY", "PAYLOAD", "KIND", "SIZE", "FROM")?;
    for p in &report.payloads {
        let from = p.backend.map_or("-", |b| b.as_str());
        writeln!(
            out,
            "{}  {:width$}  {:<11}  {:>9}  {:<6}  {}",
            mark(p.ok),
            p.name,
            p.kind,
            human_size(p.size),
            from,
            p.why
        )?;
    }
    writeln!(out)?;
    let bad = report.payloads.iter().filter(|p| !p.ok).count();
    if bad == 0 {
        writeln!(out, "every payload can run here")?;
    } else {
        writeln!(out, "{bad} payload(s) cannot run here")?;
    }
    Ok(code)
}

fn cache(catalog: &Catalog, choice: Choice, command: CacheCmd) -> anyhow::Result<ExitCode> {
    let launcher = Launcher::new(choice, env::home().ok());
    let mut out = io::stdout().lock();
    match command {
        CacheCmd::Prune => {
            let keep: Vec<_> = catalog.payloads().iter().chain(catalog.assets()).collect();
            let (removed, kept) = stigmer::launch::prune(launcher.cache(), &keep)?;
            for f in &kept {
                writeln!(out, "kept {} ({})", f.path.display(), f.what)?;
            }
            for f in &removed {
                writeln!(out, "removed {} ({})", f.path.display(), f.what)?;
            }
            writeln!(out, "pruned {} item(s)", removed.len())?;
            Ok(ExitCode::SUCCESS)
        }
        CacheCmd::Verify => {
            let checked = stigmer::launch::verify(launcher.cache())?;
            let bad = checked.iter().filter(|(_, good)| !good).count();
            for (f, _) in &checked {
                writeln!(out, "{}: {}", f.path.display(), f.what)?;
            }
            writeln!(
                out,
                "verified {} entr{}, {bad} bad",
                checked.len(),
                if checked.len() == 1 { "y" } else { "ies" }
            )?;
            Ok(if bad == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= 1024.0 && unit < UNITS.len() - 1 {
        size /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{size:.1} {}", UNITS[unit]) }
}

fn outcome(result: anyhow::Result<ExitCode>) -> ExitCode {
    result.unwrap_or_else(|e| fail(&e))
}

/// Prints the error as one line and picks the exit status: 2 for a usage
/// error, 1 otherwise; a closed stdout (`stigmer list | head`) is success.
fn fail(err: &anyhow::Error) -> ExitCode {
    if err.chain().any(|e| {
        e.downcast_ref::<io::Error>().is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    }) {
        return ExitCode::SUCCESS;
    }
    // Every problem of a manifest, one line each.
    // (One write: for the server, one message through the lossy queue.)
    if let Some(e) = err.downcast_ref::<stigmer::ManifestError>() {
        let lines: String = e
            .problems()
            .iter()
            .zip(e.details())
            .map(|(line, problem)| {
                let mut fields = serde_json::Map::new();
                if let Some(service) = problem.service_name() {
                    fields.insert("service".into(), service.into());
                }
                if let Some(key) = problem.key() {
                    fields.insert("key".into(), key.as_str().into());
                }
                logging::error_line(line, fields)
            })
            .collect();
        stderr::write(lines.as_bytes());
        return ExitCode::from(2);
    }
    let (message, code) = match err.downcast_ref::<stigmer::Error>() {
        // Library errors already include their cause.
        Some(e) => (e.to_string(), if e.is_usage() { 2 } else { 1 }),
        None => (format!("{err:#}"), 1),
    };
    stderr::write(logging::error_line(&message, Default::default()).as_bytes());
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(60 << 20), "60.0 MiB");
    }
}
