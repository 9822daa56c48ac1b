//! Log lines on standard error: text (coloured only on a terminal, never with
//! `NO_COLOR`) or JSON (one object per line, for journald or ELK), both with every
//! CPR-shaped number masked on its way out (ARCHITECTURE.md, invariant 6). The
//! other lines a command writes to standard error (progress, warnings, the final
//! `error: …`) go through [`to_stderr`], so that in JSON every line is an object.

use std::fmt;
use std::io::{self, IsTerminal, Write};
use std::sync::OnceLock;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use crate::domain::mask_in_text;

use super::LogFormat;

/// Whether text logs may carry colour: standard error is a terminal and
/// `NO_COLOR` is unset or empty (<https://no-color.org>).
pub fn colour_wanted(stderr_is_terminal: bool, no_color: Option<&str>) -> bool {
    stderr_is_terminal && no_color.is_none_or(str::is_empty)
}

/// The format [`init`] chose, for the lines written without tracing.
static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// The subcommand running (`export`, `ingest`, …), a field of every JSON line.
static COMMAND: OnceLock<&'static str> = OnceLock::new();

/// Names the subcommand for every JSON line from now on (the first name sticks).
pub(super) fn set_command(name: &'static str) {
    let _ = COMMAND.set(name);
}

/// Whether standard error carries JSON lines (so nothing else may be drawn there).
pub fn json() -> bool {
    FORMAT.get() == Some(&LogFormat::Json)
}

/// Writes one line that is not a tracing event (a progress line, a warning, the
/// final error) to standard error, shown whatever `RUST_LOG` says: as text, with
/// `error: ` or `warning: ` before it for those levels, or as one JSON object
/// (`level`, `target` "sf2520", `command`, `message`). CPR-shaped numbers are
/// masked either way.
pub fn to_stderr(level: Level, text: &str) {
    let line = if json() {
        let mut object = Map::new();
        object.insert("timestamp".into(), now().into());
        object.insert("level".into(), level.as_str().into());
        object.insert("target".into(), "sf2520".into());
        if let Some(command) = COMMAND.get() {
            object.insert("command".into(), (*command).into());
        }
        object.insert("message".into(), text.into());
        Value::Object(object).to_string()
    } else if level == Level::ERROR {
        format!("error: {text}")
    } else if level == Level::WARN {
        format!("warning: {text}")
    } else {
        text.to_owned()
    };
    // Standard error gone (a closed pipe) leaves nowhere to say so.
    let _ = writeln!(io::stderr().lock(), "{}", mask_in_text(&line));
}

/// In JSON, a panic's message is a JSON line too (Rust's own hook writes text).
fn panics_as_json() {
    std::panic::set_hook(Box::new(|info| {
        let place = info
            .location()
            .map(|location| format!(" at {}:{}", location.file(), location.line()))
            .unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|text| (*text).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        to_stderr(Level::ERROR, &format!("panicked{place}: {message}"));
    }));
}

fn now() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// Installs the global subscriber. The level comes from `RUST_LOG` (default warn).
pub fn init(format: LogFormat) {
    let _ = FORMAT.set(format);
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(MaskingStderr);
    match format {
        LogFormat::Text => {
            let no_color = std::env::var("NO_COLOR").ok();
            builder
                .with_ansi(colour_wanted(
                    io::stderr().is_terminal(),
                    no_color.as_deref(),
                ))
                .init();
        }
        LogFormat::Json => {
            panics_as_json();
            builder.event_format(JsonLines).init();
        }
    }
}

/// Masks CPR-shaped numbers in text that may hold ANSI colour codes: each run
/// between escape sequences is masked on its own, so that a code's final letter
/// (`\x1b[0m`) does not hide the number after it from the masking.
pub fn mask_log_text(text: &str) -> String {
    let mut masked = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('\x1b') {
        masked.push_str(&mask_in_text(&rest[..start]));
        let sequence = &rest[start..];
        // ESC '[' parameters… final byte in '@'..='~'; a lone ESC is one byte.
        let length = if sequence.as_bytes().get(1) == Some(&b'[') {
            sequence
                .bytes()
                .skip(2)
                .position(|byte| (b'@'..=b'~').contains(&byte))
                .map_or(sequence.len(), |end| end + 3)
        } else {
            1
        };
        masked.push_str(&sequence[..length]);
        rest = &sequence[length..];
    }
    masked.push_str(&mask_in_text(rest));
    masked
}

/// Standard error, with CPR numbers masked in every line written.
struct MaskingStderr;

struct MaskingWriter;

impl Write for MaskingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // The formatter writes each event as one buffer of UTF-8.
        let text = String::from_utf8_lossy(buf);
        io::stderr()
            .lock()
            .write_all(mask_log_text(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

impl<'a> MakeWriter<'a> for MaskingStderr {
    type Writer = MaskingWriter;

    fn make_writer(&'a self) -> MaskingWriter {
        MaskingWriter
    }
}

/// One JSON object per event: timestamp (RFC 3339 UTC), level, target, the
/// subcommand (`command`), the enclosing spans, message and the event's fields.
struct JsonLines;

struct JsonFields<'a>(&'a mut Map<String, Value>);

impl Visit for JsonFields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), Value::String(format!("{value:?}")));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().to_owned(), Value::String(value.to_owned()));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        context: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let metadata = event.metadata();
        let mut object = Map::new();
        object.insert("timestamp".into(), now().into());
        object.insert("level".into(), metadata.level().as_str().into());
        object.insert("target".into(), metadata.target().into());
        if let Some(command) = COMMAND.get() {
            object.insert("command".into(), (*command).into());
        }
        if let Some(scope) = context.event_scope() {
            let spans: Vec<Value> = scope
                .from_root()
                .map(|span| Value::from(span.name()))
                .collect();
            object.insert("spans".into(), Value::Array(spans));
        }
        let mut fields = Map::new();
        event.record(&mut JsonFields(&mut fields));
        for (key, value) in fields {
            // An event's own field never overwrites the line's metadata.
            object.entry(key).or_insert(value);
        }
        writeln!(writer, "{}", Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_and_never_with_no_color() {
        assert!(colour_wanted(true, None));
        assert!(colour_wanted(true, Some("")));
        assert!(!colour_wanted(true, Some("1")));
        assert!(!colour_wanted(false, None));
    }

    #[test]
    fn a_colour_code_does_not_hide_a_cpr_from_the_masking() {
        let coloured = "\x1b[3mcpr\x1b[0m\x1b[2m=\x1b[0m0101901234 done";
        let masked = mask_log_text(coloured);
        assert!(!masked.contains("0101901234"), "{masked:?}");
        assert!(masked.contains("010190-xxxx"), "{masked:?}");
        assert!(masked.starts_with("\x1b[3mcpr\x1b[0m"), "{masked:?}");
    }
}
