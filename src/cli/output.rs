//! Small output helpers shared by the commands: hex, times, kroner, tables.

use chrono::{DateTime, Utc};

use crate::domain::format_kroner;

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// µs since the epoch as RFC 3339 UTC with microseconds.
pub(super) fn time_us(us: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(us)
        .map(|time| time.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
        .unwrap_or_else(|| format!("<{us} µs>"))
}

pub(super) fn kroner(ore: i64) -> String {
    format_kroner(i128::from(ore))
}

/// Prints rows as a left/right aligned text table: columns whose header starts
/// with '>' are right-aligned (the '>' is not printed).
pub(super) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = headers
        .iter()
        .enumerate()
        .map(|(column, header)| {
            rows.iter()
                .map(|row| row[column].chars().count())
                .fold(header.trim_start_matches('>').chars().count(), usize::max)
        })
        .collect();
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let rendered: Vec<String> = cells
            .iter()
            .zip(headers)
            .zip(&widths)
            .map(|((cell, header), &width)| {
                if header.starts_with('>') {
                    format!("{cell:>width$}")
                } else {
                    format!("{cell:<width$}")
                }
            })
            .collect();
        out.push_str(rendered.join("  ").trim_end());
        out.push('\n');
    };
    line(headers.iter().map(|h| h.trim_start_matches('>')).collect());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// Text from outside (a file name in KY's inbox, a path) ready for a terminal:
/// control characters (C0, DEL, C1) and the invisible bidirectional controls are
/// written as Rust escapes (`\u{1b}`, `\n`), so that no escape sequence reaches
/// the terminal and no newline starts a line the program did not write. A
/// backslash is doubled, so an escape in the output always means one was there.
pub(super) fn printable(text: &str) -> String {
    let mut shown = String::with_capacity(text.len());
    for c in text.chars() {
        let bidi = matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if c == '\\' {
            shown.push_str("\\\\");
        } else if c.is_control() || bidi {
            shown.extend(c.escape_default());
        } else {
            shown.push(c);
        }
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn outside_text_is_printable() {
        assert_eq!(printable("2026-10-01.jsonl"), "2026-10-01.jsonl");
        assert_eq!(printable("æøå Ω.jsonl"), "æøå Ω.jsonl");
        assert_eq!(
            printable("a\u{1b}[31m\nFORGED\u{9b}\u{202e}\\"),
            "a\\u{1b}[31m\\nFORGED\\u{9b}\\u{202e}\\\\"
        );
    }
}
