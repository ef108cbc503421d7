//! stigmer's own lines on stderr, in one of three styles:
//!
//! - on a terminal, as they always were: `  INFO api: started (pid 7, memfd)`;
//! - elsewhere (a pipe, a file, a container's log), each tracing event
//!   starts with an RFC 3339 UTC timestamp, so a log read later says when;
//! - with `stigmer server --json-logs`, every line stigmer writes to stderr
//!   is one JSON object, `{"timestamp", "level", "message", "fields"}`, the
//!   closing `error:` lines included, so a collector reads one format from
//!   both streams (stdout's service lines are JSON objects too).
//!
//! The message text is the same in every style.

use std::fmt;
use std::io::{self, IsTerminal as _};
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime as _, SystemTime};
use tracing_subscriber::fmt::{FmtContext, format};
use tracing_subscriber::registry::LookupSpan;

use crate::stderr;

/// Whether stderr lines are JSON objects: set once, by [`init`].
static JSON: AtomicBool = AtomicBool::new(false);

/// Sets up the tracing subscriber: at `-v`/`-q`'s level unless `RUST_LOG`
/// says otherwise, through the server's lossy queue and into its journal
/// when serving (`journal`), as JSON objects when `json`.
pub(crate) fn init(
    verbose: u8,
    quiet: bool,
    journal: Option<stigmer::supervise::Journal>,
    json: bool,
) {
    JSON.store(json, Ordering::Relaxed);
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        (false, _) => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let terminal = io::stderr().is_terminal();
    let color = terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    // The server's messages go through a lossy queue (see `stderr`); the
    // other commands write directly, so nothing is lost before an exec.
    let writer = move || -> Box<dyn io::Write> {
        match &journal {
            Some(journal) => Box::new(stderr::Lossy(Some(journal.clone()))),
            None => Box::new(io::stderr()),
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_writer(writer)
        // On a failed write it would report with eprintln!, which panics
        // when stderr is closed (`stigmer server 2>&1 | head`) and blocks
        // when stderr is a pipe nobody reads.
        .log_internal_errors(false)
        .with_env_filter(filter)
        .with_target(false);
    if json {
        builder.with_ansi(false).event_format(JsonLine).init();
    } else if terminal {
        builder.with_ansi(color).without_time().init();
    } else {
        // The default timer: RFC 3339 in UTC, to the microsecond.
        builder.with_ansi(false).with_timer(SystemTime).init();
    }
}

/// The line for a message stigmer writes itself at the end (a failure):
/// `error: MESSAGE`, or its JSON object, with `fields`, under `--json-logs`.
pub(crate) fn error_line(message: &str, fields: Map<String, Value>) -> String {
    match JSON.load(Ordering::Relaxed) {
        true => json_line("ERROR", message, fields),
        false => format!("error: {message}\n"),
    }
}

/// The line that says how many lines the server's queue dropped.
pub(crate) fn dropped_line(dropped: u64) -> String {
    let message = format!("stigmer: {dropped} log line(s) dropped: stderr is slow");
    match JSON.load(Ordering::Relaxed) {
        true => json_line("WARN", &message, Map::from_iter([("dropped".into(), dropped.into())])),
        false => format!("{message}\n"),
    }
}

/// Now, as the text lines write it: `2025-01-31T12:00:00.123456Z`.
fn now() -> String {
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = SystemTime.format_time(&mut Writer::new(&mut text));
    text
}

/// One JSON object and its newline, its keys in reading order.
fn json_line(level: &str, message: &str, fields: Map<String, Value>) -> String {
    let text = |v: &str| Value::from(v).to_string();
    format!(
        "{{\"timestamp\":{},\"level\":{},\"message\":{},\"fields\":{}}}\n",
        text(&now()),
        text(level),
        text(message),
        Value::Object(fields)
    )
}

/// A tracing event as one JSON object per line.
struct JsonLine;

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: format::Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let level = event.metadata().level().as_str();
        writer.write_str(&json_line(level, &fields.message, fields.rest))
    }
}

/// An event's fields: its message, and the others by name.
#[derive(Default)]
struct Fields {
    message: String,
    rest: Map<String, Value>,
}

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        self.rest.insert(field.name().to_owned(), value);
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // `info!("{} started", name)`: the message is `format_args!`, whose
        // Debug is its text.
        let text = format!("{value:?}");
        match field.name() {
            "message" => self.message = text,
            _ => self.put(field, Value::String(text)),
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_owned(),
            _ => self.put(field, value.into()),
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_line_is_one_object_with_a_timestamp() {
        let line = json_line("ERROR", "it \"broke\"\n", Map::new());
        assert!(line.ends_with("}\n") && line.matches('\n').count() == 1, "{line:?}");
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["level"], "ERROR");
        assert_eq!(v["message"], "it \"broke\"\n");
        assert_eq!(v["fields"], serde_json::json!({}));
        assert!(line.starts_with("{\"timestamp\":"), "{line}");
        let ts = v["timestamp"].as_str().unwrap();
        assert!(ts.len() == "2025-01-31T12:00:00.123456Z".len() && ts.ends_with('Z'), "{ts}");
        assert_eq!(&ts[4..5], "-");
        assert_eq!(&ts[10..11], "T");
    }
}
