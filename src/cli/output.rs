//! Small output helpers shared by the commands: hex, times, kroner, tables, and
//! [`for_terminal`], the one way text from outside reaches the operator's terminal.

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

/// Text from outside (a receipt, a server's message, a file name, an error that
/// quotes input), ready for a terminal: every control character (C0, DEL, C1:
/// ESC and CSI start terminal sequences, CR and LF forge lines) and every
/// invisible character that reorders or hides text (bidirectional overrides and
/// isolates, zero-width characters, BOM) is shown as a Rust escape (`\u{1b}`,
/// `\n`); everything else is kept, Danish letters included. Every command that
/// prints such text passes it through here; `--json` output is escaped by JSON.
pub(crate) fn for_terminal(text: &str) -> String {
    if !text.chars().any(needs_escape) {
        return text.to_owned();
    }
    let mut shown = String::with_capacity(text.len() + 16);
    for character in text.chars() {
        match character {
            '\n' => shown.push_str("\\n"),
            '\r' => shown.push_str("\\r"),
            '\t' => shown.push_str("\\t"),
            c if needs_escape(c) => shown.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => shown.push(c),
        }
    }
    shown
}

fn needs_escape(character: char) -> bool {
    character.is_control()
        || matches!(
            character,
            '\u{061c}'
                | '\u{180e}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2069}'
                | '\u{feff}'
        )
}

/// `cell` padded with spaces to `width` characters, on the left (`right_aligned`)
/// or the right. Padded by hand: `format!("{cell:<width$}")` panics when `width`
/// exceeds `u16::MAX` ("Formatting argument out of range"), and a cell is as
/// long as whatever a receipt said.
fn padded(cell: &str, width: usize, right_aligned: bool) -> String {
    let padding = " ".repeat(width.saturating_sub(cell.chars().count()));
    if right_aligned {
        padding + cell
    } else {
        format!("{cell}{padding}")
    }
}

/// Prints rows as a left/right aligned text table: columns whose header starts
/// with '>' are right-aligned (the '>' is not printed). Cells of any length are
/// fine (see [`padded`]).
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
            .map(|((cell, header), &width)| padded(cell, width, header.starts_with('>')))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a receipt's ErrorDescription of 100,000 characters made
    /// `export --deliver` and then every `files` panic with "Formatting argument
    /// out of range" (a width beyond `u16::MAX`).
    #[test]
    fn a_table_holds_a_cell_of_any_length() {
        let long = "x".repeat(100_000);
        let rows = vec![
            vec!["0751".to_owned(), long.clone()],
            vec!["0101".to_owned(), "short".to_owned()],
        ];
        let text = table(&[">kommune", "delivery"], &rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], "kommune  delivery");
        assert_eq!(lines[1], format!("   0751  {long}"));
        assert_eq!(lines[2], "   0101  short");
    }

    #[test]
    fn text_from_outside_reaches_the_terminal_escaped() {
        assert_eq!(for_terminal("Ukendt modtager: æøå"), "Ukendt modtager: æøå");
        assert_eq!(
            for_terminal("a\u{1b}[2Jb\u{9b}31mc\u{7f}"),
            "a\\u{1b}[2Jb\\u{9b}31mc\\u{7f}"
        );
        assert_eq!(
            for_terminal("line\nFORGED: 0 files\r"),
            "line\\nFORGED: 0 files\\r"
        );
        assert_eq!(
            for_terminal("txt.\u{202e}fdp\u{200b}"),
            "txt.\\u{202e}fdp\\u{200b}"
        );
        let escaped = for_terminal("\u{1b}\u{9b}\u{0}\u{2066}\u{feff}");
        assert!(!escaped.chars().any(needs_escape), "{escaped:?}");
    }

    /// KY's file names in the inbox go through the same function (issue 23, item 8).
    #[test]
    fn an_inbox_file_name_is_printable() {
        assert_eq!(for_terminal("2026-10-01.jsonl"), "2026-10-01.jsonl");
        assert_eq!(for_terminal("æøå Ω.jsonl"), "æøå Ω.jsonl");
        assert_eq!(
            for_terminal("a\u{1b}[31m\nFORGED\u{9b}\u{202e}"),
            "a\\u{1b}[31m\\nFORGED\\u{9b}\\u{202e}"
        );
    }
}
