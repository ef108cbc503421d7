//! The command line, as clap sees it. `main.rs` turns it into library calls.

use std::ffi::OsString;

use clap::{Parser, Subcommand, ValueEnum};

/// Runs the executables carried inside this binary, straight from memory on
/// Linux or from a verified cache on macOS.
#[derive(Debug, Parser)]
#[command(name = "stigmer", version, propagate_version = true, max_term_width = 100)]
pub(crate) struct Cli {
    /// Where payloads run from: memory (Linux), the verified cache, or auto
    #[arg(long, global = true, env = "STIGMER_BACKEND", value_enum, default_value_t = BackendArg::Auto)]
    pub(crate) backend: BackendArg,

    /// Log more (-v debug, -vv trace); RUST_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,

    /// Log only errors
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub(crate) quiet: bool,

    #[command(subcommand)]
    pub(crate) command: Cmd,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Cmd {
    /// Run a payload in place of stigmer: its stdio, exit status and signals are its own
    ///
    /// Everything after NAME is the payload's: `stigmer run api --help` shows
    /// the payload's help. A `--` right after NAME is dropped, as in
    /// `stigmer run api -- --port 80`.
    Run {
        /// The payload's name (see `stigmer list`), then its arguments
        #[arg(
            value_name = "NAME [ARGS]",
            required = true,
            num_args = 1..,
            trailing_var_arg = true,
            allow_hyphen_values = true
        )]
        argv: Vec<OsString>,
    },
    /// Run every service of services.toml in the foreground; or start, stop, status, restart, logs
    ///
    /// Without a subcommand the server runs in the foreground (for a
    /// terminal, or as a container's PID 1); `start` runs it in the
    /// background. Either way it listens on a control socket, so `status`,
    /// `logs`, `restart` and `stop` reach it from another terminal.
    #[command(args_conflicts_with_subcommands = true)]
    Server {
        #[command(subcommand)]
        action: Option<ServerCmd>,
        #[command(flatten)]
        run: ServerArgs,
    },
    /// List the payloads this binary carries and how each will be launched
    List {
        /// One JSON array for scripts, instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Explain what this host allows and how each payload will run here; exit 1 if one cannot
    Doctor {
        /// One JSON object for scripts, instead of text
        #[arg(long)]
        json: bool,
    },
    /// Look after the cache under $STIGMER_HOME/bin
    Cache {
        #[command(subcommand)]
        command: CacheCmd,
    },
    /// Print a completion script for a shell (bash, zsh, fish, ...)
    ///
    /// bash: `stigmer completions bash > /etc/bash_completion.d/stigmer`;
    /// zsh: into a folder of `$fpath` as `_stigmer`; fish: into
    /// `~/.config/fish/completions/stigmer.fish`.
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `stigmer man > stigmer.1`
    Man,
}

/// How a server is run, in the foreground or by `server start`.
#[derive(Clone, Debug, Default, clap::Args)]
pub(crate) struct ServerArgs {
    /// Use this manifest instead of the embedded services.toml
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<std::path::PathBuf>,
    /// One JSON object per line: the services' lines, and stigmer's own (in the foreground: on stdout and stderr)
    #[arg(long)]
    pub(crate) json_logs: bool,
    /// Internal, for `server start`: start no service until it watches
    #[arg(long, hide = true)]
    pub(crate) wait_for_watch: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ServerCmd {
    /// Start the server in the background; return once every service is ready
    ///
    /// Prints a line per service as it becomes ready. If one fails, the
    /// server stops what it started and this exits 1 with the reason and
    /// the service's last lines. If a server already runs for this user and
    /// STIGMER_HOME, says so and exits 0.
    Start {
        #[command(flatten)]
        run: ServerArgs,
    },
    /// Stop the running server; return once every service is gone
    ///
    /// "Not running" is not an error (exit 0).
    Stop,
    /// Show whether the server runs, and each service's state
    ///
    /// Exit status: 0 when every service is ready, 1 when one is not, 3
    /// when no server is running.
    Status {
        /// One JSON object for scripts, instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Restart every service, or the ones named, in dependency order
    ///
    /// Each is stopped (after the services named that depend on it) and
    /// started again from the payload already prepared, once what it
    /// depends on is ready; returns once each is ready again.
    Restart {
        /// The services (default: every one)
        services: Vec<String>,
    },
    /// Show the services' recent output lines, with timestamps
    ///
    /// The server keeps the last 2000 lines (at most 1 MiB) of each service,
    /// and of its own messages (as the service "stigmer"), in memory, and
    /// writes every line to $STIGMER_HOME/run/server.log (rotated at 8 MiB,
    /// one older file kept), which this reads when no server runs.
    Logs {
        /// Go on printing new lines until the server ends (or Ctrl-C)
        #[arg(short, long)]
        follow: bool,
        /// How many past lines to print, at most
        #[arg(short = 'n', long, value_name = "N", default_value_t = 100)]
        lines: usize,
        /// One JSON object per line, instead of text
        #[arg(long)]
        json: bool,
        /// The services (default: every one, and stigmer's own messages)
        services: Vec<String>,
    },
}

/// The payload `args` (stigmer's whole argv) runs when it is `stigmer run
/// NAME ...` with no option before NAME, NAME a payload of `catalog` and
/// `STIGMER_BACKEND` unset or a valid value (clap refuses an empty one):
/// what clap would parse to `Cmd::Run` with every global option at its
/// default, so `main` can skip building the command line. Anything else (an option, `--help`, an unknown name,
/// a bad `STIGMER_BACKEND`) is clap's to parse, and to explain.
pub(crate) fn plain_run<'c>(args: &[OsString], catalog: &'c stigmer::Catalog) -> Option<&'c str> {
    let [_, run, name, ..] = args else { return None };
    if run != "run" {
        return None;
    }
    let valid = match std::env::var_os(stigmer::env::STIGMER_BACKEND) {
        None => true,
        Some(v) => v.to_str().is_some_and(|v| BackendArg::from_str(v, false).is_ok()),
    };
    let payload = catalog.find(name.to_str()?)?;
    valid.then(|| payload.name())
}

/// The payload's arguments from what follows NAME: without the `--` that
/// may separate them from it.
pub(crate) fn payload_args(mut args: Vec<OsString>) -> Vec<OsString> {
    if args.first().is_some_and(|a| a == "--") {
        args.remove(0);
    }
    args
}

#[derive(Debug, Subcommand)]
pub(crate) enum CacheCmd {
    /// Remove entries of payloads this build does not carry, and leftovers of interrupted writes
    Prune,
    /// Re-hash every entry; remove (and report) the ones that do not match
    Verify,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum BackendArg {
    /// Linux: ELF payloads mapped from stigmer's own file, the rest from sealed memfds (the cache where the kernel refuses both); macOS: the cache
    Auto,
    /// Only a sealed memfd (Linux)
    Memfd,
    /// Only the verified cache
    Cache,
    /// Only ELF payloads mapped straight from stigmer's own file (Linux)
    Mapped,
}

/// The `--backend` value that asks for `choice`.
pub(crate) fn backend_arg(choice: stigmer::Choice) -> &'static str {
    match choice {
        stigmer::Choice::Only(stigmer::Backend::Memfd) => "memfd",
        stigmer::Choice::Only(stigmer::Backend::Cache) => "cache",
        stigmer::Choice::Only(stigmer::Backend::Mapped) => "mapped",
        _ => "auto",
    }
}

impl From<BackendArg> for stigmer::Choice {
    fn from(b: BackendArg) -> stigmer::Choice {
        match b {
            BackendArg::Auto => stigmer::Choice::Auto,
            BackendArg::Memfd => stigmer::Choice::Only(stigmer::Backend::Memfd),
            BackendArg::Cache => stigmer::Choice::Only(stigmer::Backend::Cache),
            BackendArg::Mapped => stigmer::Choice::Only(stigmer::Backend::Mapped),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_takes_payload_flags_as_arguments() {
        let argv = |args: &[&str]| {
            let cli = Cli::try_parse_from(args).unwrap();
            let Cmd::Run { argv } = cli.command else { panic!() };
            (cli.verbose, cli.quiet, argv)
        };
        assert_eq!(argv(&["stigmer", "run", "probe", "--exit", "3"]).2, ["probe", "--exit", "3"]);
        // stigmer's own flags go before NAME; after it, everything is the payload's.
        assert_eq!(
            argv(&["stigmer", "run", "probe", "--quiet", "-v", "-h"]),
            (0, false, vec![OsString::from("probe"), "--quiet".into(), "-v".into(), "-h".into()])
        );
        assert_eq!(argv(&["stigmer", "-v", "run", "-q", "probe"]).0, 1);
        assert!(argv(&["stigmer", "run", "-q", "probe"]).1);
        assert_eq!(argv(&["stigmer", "run", "probe", "--", "-v"]).2, ["probe", "--", "-v"]);
        assert_eq!(payload_args(vec!["--".into(), "-v".into()]), ["-v"]);
        assert_eq!(payload_args(vec!["-v".into(), "--".into()]), ["-v", "--"]);
        assert!(Cli::try_parse_from(["stigmer", "run"]).is_err());
    }

    #[test]
    fn server_runs_in_the_foreground_or_takes_a_subcommand() {
        let server = |args: &[&str]| {
            let cli = Cli::try_parse_from(args).map_err(|e| e.kind())?;
            let Cmd::Server { action, run } = cli.command else { panic!() };
            Ok::<_, clap::error::ErrorKind>((action, run))
        };
        let (action, run) = server(&["stigmer", "server", "--config", "s.toml"]).unwrap();
        assert!(action.is_none());
        assert_eq!(run.config.as_deref(), Some(std::path::Path::new("s.toml")));
        let (action, _) = server(&["stigmer", "server", "start", "--json-logs"]).unwrap();
        assert!(matches!(action, Some(ServerCmd::Start { run }) if run.json_logs));
        let (action, _) = server(&["stigmer", "server", "logs", "-fn", "5", "api"]).unwrap();
        assert!(matches!(action, Some(ServerCmd::Logs { follow: true, lines: 5, services, .. })
            if services == ["api"]));
        // A foreground flag before a subcommand is a mistake, not ignored.
        assert!(server(&["stigmer", "server", "--config", "s.toml", "stop"]).is_err());
    }
}
