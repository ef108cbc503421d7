//! `stigmer man`: one manual page, stigmer(1), with every command and its
//! options (from clap, so it cannot fall behind the parser), every key of
//! services.toml (from [`stigmer::manifest::Key`], likewise), and the
//! environment, files and exit statuses.

use std::io::{self, Write};

use clap::{Arg, ArgAction, Command};
use roff::{Roff, bold, italic, roman};

/// Writes the page to `w`.
pub(crate) fn render(cli: Command, w: &mut dyn Write) -> io::Result<()> {
    let mut cli = cli.disable_help_subcommand(true);
    cli.build();
    let mut page = Roff::new();
    let version = cli.get_version().unwrap_or_default().to_owned();
    page.control("TH", ["stigmer", "1", "", &format!("stigmer {version}"), "User Commands"]);

    page.control("SH", ["NAME"]);
    let about = cli.get_about().map(ToString::to_string).unwrap_or_default();
    page.text([roman(format!("stigmer - {about}"))]);

    page.control("SH", ["SYNOPSIS"]);
    page.text([bold("stigmer"), roman(" ["), italic("OPTIONS"), roman("] "), italic("COMMAND")]);
    page.control("br", []);
    page.text([
        italic("PAYLOAD"),
        roman(" ["),
        italic("ARGS"),
        roman("]...  (stigmer linked under a payload's name)"),
    ]);

    page.control("SH", ["DESCRIPTION"]);
    paragraphs(
        &mut page,
        "stigmer is one executable that carries its service binaries (its payloads) and runs \
         them without extracting them: on Linux from sealed memfds (nothing is written \
         anywhere, and it works on a read-only root), on macOS, or where the kernel refuses \
         exec from memory, from a content-addressed cache under $STIGMER_HOME/bin verified \
         against the build-time sha256 before every launch.\n\
         A link to stigmer named after a payload runs that payload (multi-call): \
         ln -s stigmer api; ./api --port 80.",
    );

    page.control("SH", ["OPTIONS"]);
    page.text([roman("These apply to every command.")]);
    options(&mut page, cli.get_arguments());

    page.control("SH", ["COMMANDS"]);
    for sub in cli.get_subcommands() {
        command(&mut page, sub);
    }

    page.control("SH", ["SERVICES.TOML"]);
    paragraphs(
        &mut page,
        "stigmer server runs the services of the services.toml embedded beside the payloads, \
         or of --config FILE. Each is a table [services.NAME]; NAME is also its payload's \
         name unless payload says otherwise. The whole file is checked before anything \
         starts: every problem is one line naming the service, the key and the fix, and \
         stigmer exits 2.\n\
         Variables: in args, env values and cwd, ${VAR} is VAR of stigmer's environment and \
         ${VAR:-default} the default when VAR is unset or empty; $$ is a literal $; an unset \
         variable without a default is a problem. ${asset:NAME} is the path a service opens \
         the asset NAME by, read-only: /proc/self/fd/N of a sealed memfd on Linux, a verified \
         cache file elsewhere. Durations are written \"500ms\", \"10s\", \"2m\". The keys:",
    );
    for key in stigmer::manifest::Key::ALL {
        page.control("TP", []);
        page.text([bold(key.as_str())]);
        page.text([roman(key.help())]);
    }

    page.control("SH", ["ENVIRONMENT"]);
    definitions(
        &mut page,
        &[
            (
                "STIGMER_HOME",
                "The folder of the cache and of the control socket. Default: ~/.stigmer.",
            ),
            ("STIGMER_BACKEND", "As --backend: auto, memfd, mapped or cache."),
            (
                "RUST_LOG",
                "Filters stigmer's own log lines (as tracing's EnvFilter); overrides -v and -q.",
            ),
            ("NO_COLOR", "When set, service names are not coloured on a terminal."),
            (
                "STIGMER_PAYLOAD_DIR",
                "At build time only: the payload folder, instead of platform/TARGET/.",
            ),
        ],
    );

    page.control("SH", ["FILES"]);
    definitions(
        &mut page,
        &[
            (
                "$STIGMER_HOME/bin/",
                "The cache: one read-only entry per payload, named by its sha256, in private \
                 folders; checked before every use.",
            ),
            (
                "$STIGMER_HOME/run/control.sock",
                "The socket a running server listens on, for start, stop, status, restart and \
                 logs; only its user may connect. Where nothing is writable, an abstract socket \
                 (Linux) instead.",
            ),
        ],
    );

    page.control("SH", ["EXIT STATUS"]);
    definitions(
        &mut page,
        &[
            ("0", "Success; for server, a requested stop in which every service stopped in time."),
            ("1", "A failure, named on stderr (a service failed, a payload cannot run)."),
            ("2", "A usage error or a problem in the manifest; nothing started."),
            ("3", "server status: no server is running."),
            (
                "other",
                "run (and multi-call): the payload's own status, or 128+N if signal N killed it.",
            ),
        ],
    );

    page.control("SH", ["SEE ALSO"]);
    page.text([roman("The README and SECURITY.md of https://github.com/stigmer/stigmer.")]);
    page.to_writer(w)
}

/// One command (and, under it, its subcommands): its usage, what it does,
/// its own options.
fn command(page: &mut Roff, cmd: &Command) {
    if cmd.is_hide_set() {
        return;
    }
    let usage = cmd.clone().render_usage().to_string();
    let usage = usage.strip_prefix("Usage: ").unwrap_or(&usage);
    for line in usage.lines() {
        page.control("SS", [line.trim()]);
    }
    let about = cmd.get_long_about().or(cmd.get_about()).map(ToString::to_string);
    paragraphs(page, &about.unwrap_or_default());
    // --help and --version are every command's, described once above.
    let own = cmd
        .get_arguments()
        .filter(|a| !a.is_global_set() && !matches!(a.get_id().as_str(), "help" | "version"));
    options(page, own);
    for sub in cmd.get_subcommands() {
        command(page, sub);
    }
}

/// Each argument as a tagged paragraph: its flags and value, then its help,
/// default and possible values.
fn options<'a>(page: &mut Roff, args: impl Iterator<Item = &'a Arg>) {
    for arg in args.filter(|a| !a.is_hide_set()) {
        let mut tag = Vec::new();
        if let Some(short) = arg.get_short() {
            tag.push(bold(format!("-{short}")));
        }
        if let Some(long) = arg.get_long() {
            if !tag.is_empty() {
                tag.push(roman(", "));
            }
            tag.push(bold(format!("--{long}")));
        }
        let takes_value = !matches!(
            arg.get_action(),
            ArgAction::SetTrue
                | ArgAction::SetFalse
                | ArgAction::Count
                | ArgAction::Help
                | ArgAction::HelpShort
                | ArgAction::HelpLong
                | ArgAction::Version
        );
        if takes_value {
            let names = arg.get_value_names().map(|n| n.join(" ")).unwrap_or_default();
            let name =
                if names.is_empty() { arg.get_id().to_string().to_uppercase() } else { names };
            if !tag.is_empty() {
                tag.push(roman(" "));
            }
            let many = arg.get_num_args().is_some_and(|n| n.max_values() > 1);
            tag.push(italic(name));
            if many {
                tag.push(roman("..."));
            }
        }
        page.control("TP", []);
        page.text(tag);
        let help = arg.get_long_help().or(arg.get_help()).map(ToString::to_string);
        let mut text = help.unwrap_or_default();
        let defaults: Vec<String> =
            arg.get_default_values().iter().map(|v| v.to_string_lossy().into_owned()).collect();
        if takes_value && !defaults.is_empty() {
            text.push_str(&format!(" [default: {}]", defaults.join(",")));
        }
        page.text([roman(text)]);
        let values: Vec<_> =
            arg.get_possible_values().into_iter().filter(|v| !v.is_hide_set()).collect();
        if takes_value && !values.is_empty() {
            for value in values {
                page.control("RS", []);
                page.control("TP", []);
                page.text([bold(value.get_name())]);
                page.text([roman(value.get_help().map(ToString::to_string).unwrap_or_default())]);
                page.control("RE", []);
            }
        }
    }
}

/// `text` as paragraphs, one per line.
fn paragraphs(page: &mut Roff, text: &str) {
    for (i, para) in text.split('\n').filter(|p| !p.trim().is_empty()).enumerate() {
        if i > 0 {
            page.control("PP", []);
        }
        page.text([roman(para.trim())]);
    }
}

/// Terms and their meanings, as tagged paragraphs.
fn definitions(page: &mut Roff, items: &[(&str, &str)]) {
    for (term, meaning) in items {
        page.control("TP", []);
        page.text([bold(*term)]);
        page.text([roman(*meaning)]);
    }
}
