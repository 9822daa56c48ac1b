//! House rules the build enforces, in the manner of rust-analyzer's tidy test: each
//! rule reads the repository's own files and names every place that breaks it.
//!
//! The rules (docs/ARCHITECTURE.md, "House rules"):
//! - every `.rs` file in `src/`, `tests/` and `benches/` opens with a `//!` line;
//! - in `src/`: no `as` between numeric types;
//! - anywhere: no `try_from(..)` followed by `.unwrap_or…`, no `.unwrap_or(0)` and no
//!   `.unwrap_or(<int>::MAX)`: a damaged value must be an error, not a plausible
//!   default;
//! - in `src/`: a function body is at most [`FUNCTION_LINES_MAX`] lines;
//! - `anyhow` only in `src/main.rs` and `src/cli/`;
//! - `rusqlite` and `postgres` only in the storage layer, `src/ledger/`;
//! - the generated format document `docs/sf2520-format.md` is current.
//!
//! An exception is explicit and says why: a comment `tidy: allow(RULE): reason` on
//! the line itself or the line above, where RULE is `cast`, `unwrap-or` or
//! `long-fn`. Comments, strings and character literals are blanked before a rule
//! looks at code, so a rule quoted in a comment or a message is not a violation.
//! Each rule is also run on a planted violation below, so a rule that stops
//! finding anything fails here too.

use std::fmt;
use std::path::{Path, PathBuf};

use sf2520::sf2520::doc;

/// The longest function body the house style allows, in lines from `fn` to `}`.
const FUNCTION_LINES_MAX: usize = 70;

/// Numeric types that an `as` cast may silently truncate, wrap or round between.
const NUMERIC_TYPES: [&str; 14] = [
    "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32", "i64", "i128", "isize", "f32",
    "f64",
];

/// The rules that accept an explicit, commented exception.
const EXCEPTIONS: [&str; 3] = ["cast", "unwrap-or", "long-fn"];

// ---- the repository's files ----------------------------------------------------------

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// One Rust file: its path relative to the crate root, its text, and its code with
/// comments and literals blanked (same length, same lines).
struct Source {
    path: String,
    text: String,
    code: String,
}

impl Source {
    fn new(path: &str, text: &str) -> Source {
        Source {
            path: path.to_owned(),
            text: text.to_owned(),
            code: blank_comments_and_literals(text),
        }
    }

    fn in_dir(&self, dir: &str) -> bool {
        self.path.starts_with(dir)
    }

    /// The 1-based line of byte `offset`.
    fn line_of(&self, offset: usize) -> usize {
        self.code[..offset].matches('\n').count() + 1
    }

    /// Whether line `line` (1-based) or the line above carries
    /// `tidy: allow(rule): reason` with a non-empty reason.
    fn allows(&self, rule: &str, line: usize) -> bool {
        let marker = format!("tidy: allow({rule}):");
        let lines: Vec<&str> = self.text.lines().collect();
        [line.checked_sub(1), line.checked_sub(2)]
            .into_iter()
            .flatten()
            .filter_map(|index| lines.get(index))
            .any(|text| {
                text.split_once(&marker)
                    .is_some_and(|(_, reason)| !reason.trim().is_empty())
            })
    }
}

fn sources() -> Vec<Source> {
    let mut files = Vec::new();
    for dir in ["src", "tests", "benches"] {
        collect_rust_files(&root().join(dir), &mut files);
    }
    files.sort();
    files
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path)
                .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
            let relative = path.strip_prefix(root()).expect("under the crate root");
            Source::new(&relative.to_string_lossy(), &text)
        })
        .collect()
}

fn collect_rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("cannot list {}: {error}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            collect_rust_files(&path, out);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            out.push(path);
        }
    }
}

// ---- blanking comments and literals ----------------------------------------------------

/// `text` with every comment and the inside of every string and character literal
/// replaced by spaces (newlines kept), so rules match code only. Byte offsets and
/// line numbers stay those of `text`.
fn blank_comments_and_literals(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = bytes.to_vec();
    let mut at = 0;
    while at < bytes.len() {
        let end = match bytes[at] {
            b'/' if bytes.get(at + 1) == Some(&b'/') => line_end(bytes, at),
            b'/' if bytes.get(at + 1) == Some(&b'*') => block_comment_end(bytes, at),
            b'"' => string_end(bytes, at + 1),
            b'r' | b'b' if !continues_identifier(bytes, at) => match raw_string_end(bytes, at) {
                Some(end) => end,
                None => {
                    at += 1;
                    continue;
                }
            },
            b'\'' => match char_literal_end(bytes, at) {
                Some(end) => end,
                None => {
                    at += 1;
                    continue;
                }
            },
            _ => {
                at += 1;
                continue;
            }
        };
        for byte in &mut out[at..end] {
            if *byte != b'\n' {
                *byte = b' ';
            }
        }
        at = end;
    }
    String::from_utf8(out).expect("only ASCII bytes were replaced, by ASCII")
}

/// Whether the byte before `at` belongs to an identifier (so `r`/`b` at `at` is
/// not a literal's prefix).
fn continues_identifier(bytes: &[u8], at: usize) -> bool {
    at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_')
}

fn line_end(bytes: &[u8], at: usize) -> usize {
    bytes[at..]
        .iter()
        .position(|&byte| byte == b'\n')
        .map_or(bytes.len(), |offset| at + offset)
}

/// The end of the (possibly nested) block comment opening at `at`.
fn block_comment_end(bytes: &[u8], at: usize) -> usize {
    let mut depth = 0;
    let mut index = at;
    while index + 1 < bytes.len() {
        match (bytes[index], bytes[index + 1]) {
            (b'/', b'*') => {
                depth += 1;
                index += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                index += 2;
                if depth == 0 {
                    return index;
                }
            }
            _ => index += 1,
        }
    }
    bytes.len()
}

/// The end of a string whose contents start at `from` (just past its `"`).
fn string_end(bytes: &[u8], from: usize) -> usize {
    let mut index = from;
    while index < bytes.len() {
        match bytes[index] {
            b'\\' => index += 2,
            b'"' => return index + 1,
            _ => index += 1,
        }
    }
    bytes.len()
}

/// The end of a literal opening with a prefix at `at`: `r"…"`, `r#"…"#`, `b"…"`,
/// `br#"…"#`, `b'…'`; `None` when `at` starts no literal.
fn raw_string_end(bytes: &[u8], at: usize) -> Option<usize> {
    let mut index = at;
    if bytes[index] == b'b' {
        index += 1;
        match bytes.get(index) {
            Some(b'"') => return Some(string_end(bytes, index + 1)),
            Some(b'\'') => return char_literal_end(bytes, index),
            Some(b'r') => {}
            _ => return None,
        }
    }
    index += 1;
    let hashes = bytes[index..]
        .iter()
        .take_while(|&&byte| byte == b'#')
        .count();
    index += hashes;
    if bytes.get(index) != Some(&b'"') {
        return None;
    }
    let closing: Vec<u8> = std::iter::once(b'"')
        .chain(std::iter::repeat_n(b'#', hashes))
        .collect();
    let body = index + 1;
    Some(
        bytes[body..]
            .windows(closing.len())
            .position(|window| window == closing.as_slice())
            .map_or(bytes.len(), |offset| body + offset + closing.len()),
    )
}

/// The end of a character literal opening at `at`, or `None` for a lifetime.
fn char_literal_end(bytes: &[u8], at: usize) -> Option<usize> {
    if bytes.get(at + 1) == Some(&b'\\') {
        let close = bytes[at + 2..].iter().position(|&byte| byte == b'\'')?;
        return Some(at + 2 + close + 1);
    }
    // One character, which may take up to four bytes in UTF-8.
    (2..=5)
        .find(|&width| bytes.get(at + width) == Some(&b'\''))
        .filter(|&width| std::str::from_utf8(&bytes[at + 1..at + width]).is_ok())
        .map(|width| at + width + 1)
}

// ---- violations ------------------------------------------------------------------------

/// One broken rule at one place.
#[derive(Debug, PartialEq, Eq)]
struct Violation {
    path: String,
    line: usize,
    rule: &'static str,
    what: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: [{}] {}",
            self.path, self.line, self.rule, self.what
        )
    }
}

fn violation(source: &Source, offset: usize, rule: &'static str, what: String) -> Violation {
    Violation {
        path: source.path.clone(),
        line: source.line_of(offset),
        rule,
        what,
    }
}

/// Byte offsets where `word` occurs in `code` as a whole word.
fn word_offsets<'a>(code: &'a str, word: &'a str) -> impl Iterator<Item = usize> + 'a {
    code.match_indices(word).filter_map(move |(offset, _)| {
        let bytes = code.as_bytes();
        let before = offset.checked_sub(1).map(|index| bytes[index]);
        let after = bytes.get(offset + word.len()).copied();
        let is_word =
            |byte: Option<u8>| byte.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
        (!is_word(before) && !is_word(after)).then_some(offset)
    })
}

/// The identifier that starts `text` after optional whitespace.
fn next_word(text: &str) -> &str {
    let trimmed = text.trim_start();
    let end = trimmed
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(trimmed.len());
    &trimmed[..end]
}

// ---- the rules -------------------------------------------------------------------------

fn opens_with_module_doc(source: &Source) -> Vec<Violation> {
    if source.text.starts_with("//!") {
        return Vec::new();
    }
    vec![Violation {
        path: source.path.clone(),
        line: 1,
        rule: "module-doc",
        what: "the file does not open with a `//!` line saying what it owns".into(),
    }]
}

fn numeric_casts(source: &Source) -> Vec<Violation> {
    word_offsets(&source.code, "as")
        .filter(|&offset| NUMERIC_TYPES.contains(&next_word(&source.code[offset + 2..])))
        .filter(|&offset| !source.allows("cast", source.line_of(offset)))
        .map(|offset| {
            let target = next_word(&source.code[offset + 2..]);
            violation(
                source,
                offset,
                "cast",
                format!("`as {target}` may lose bits; use `{target}::try_from` and return an error, or `{target}::from`"),
            )
        })
        .collect()
}

/// `try_from(..)` ending in `.unwrap_or…` within its statement, `.unwrap_or(0)`,
/// and `.unwrap_or(<int>::MAX | <int>::MIN)`: each turns a damaged value into a
/// plausible one.
fn silent_defaults(source: &Source) -> Vec<Violation> {
    let code = &source.code;
    let mut found: Vec<(usize, String)> = Vec::new();
    for (offset, _) in code.match_indices("try_from(") {
        let statement_end = code[offset..]
            .find([';', '{'])
            .map_or(code.len(), |end| offset + end);
        if let Some(defaulted) = code[offset..statement_end].find(".unwrap_or") {
            found.push((
                offset + defaulted,
                "`try_from(..)` then `.unwrap_or…` turns a value that does not fit into a plausible one; return a typed error".into(),
            ));
        }
    }
    for (offset, _) in code.match_indices(".unwrap_or(") {
        let argument = code[offset + ".unwrap_or(".len()..]
            .split(')')
            .next()
            .unwrap_or_default()
            .trim();
        let clamps = argument == "0"
            || NUMERIC_TYPES
                .iter()
                .any(|ty| argument == format!("{ty}::MAX") || argument == format!("{ty}::MIN"));
        if clamps && !found.iter().any(|(at, _)| *at == offset) {
            found.push((
                offset,
                format!("`.unwrap_or({argument})` hides a missing or damaged value; return a typed error or say why the default is right"),
            ));
        }
    }
    found
        .into_iter()
        .filter(|(offset, _)| !source.allows("unwrap-or", source.line_of(*offset)))
        .map(|(offset, what)| violation(source, offset, "unwrap-or", what))
        .collect()
}

fn long_functions(source: &Source) -> Vec<Violation> {
    let code = &source.code;
    let mut out = Vec::new();
    for offset in word_offsets(code, "fn") {
        let name = next_word(&code[offset + 2..]);
        if name.is_empty() {
            continue; // `fn(` as a type
        }
        let Some(body) = body_start(code, offset) else {
            continue; // a declaration without a body
        };
        let Some(end) = matching_brace(code, body) else {
            continue;
        };
        let (first, last) = (source.line_of(offset), source.line_of(end));
        let lines = last - first + 1;
        if lines > FUNCTION_LINES_MAX && !source.allows("long-fn", first) {
            out.push(violation(
                source,
                offset,
                "long-fn",
                format!("`fn {name}` is {lines} lines (at most {FUNCTION_LINES_MAX}); keep decisions in the parent and loops in the leaves"),
            ));
        }
    }
    out
}

/// The offset of the `{` opening the body of the `fn` at `offset`, or `None` when
/// a `;` ends the signature first (a trait method without a body).
fn body_start(code: &str, offset: usize) -> Option<usize> {
    let mut depth = 0i32;
    for (index, byte) in code.bytes().enumerate().skip(offset) {
        match byte {
            b'(' | b'[' | b'<' => depth += 1,
            b')' | b']' => depth -= 1,
            // `->` is not a closing angle bracket.
            b'>' if code.as_bytes()[index - 1] != b'-' => depth -= 1,
            b'{' if depth <= 0 => return Some(index),
            b';' if depth <= 0 => return None,
            _ => {}
        }
    }
    None
}

fn matching_brace(code: &str, open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (index, byte) in code.bytes().enumerate().skip(open) {
        match byte {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(index);
                }
            }
            _ => {}
        }
    }
    None
}

/// `crates` used (as `name::` or `use name`) in `source`.
fn crate_uses(
    source: &Source,
    crates: &[&'static str],
    rule: &'static str,
    allowed: &str,
) -> Vec<Violation> {
    let code = &source.code;
    let mut out = Vec::new();
    for name in crates {
        for offset in word_offsets(code, name) {
            let after = code[offset + name.len()..].trim_start();
            let before = code[..offset].trim_end();
            let used = after.starts_with("::")
                || before.ends_with("use")
                || before.ends_with("extern crate");
            // `foo::anyhow::…` is someone else's item, not the crate.
            if used && !before.ends_with("::") {
                out.push(violation(
                    source,
                    offset,
                    rule,
                    format!("`{name}` is used here; it belongs only in {allowed}"),
                ));
            }
        }
    }
    out
}

fn anyhow_outside_cli(source: &Source) -> Vec<Violation> {
    if !source.in_dir("src/") || source.path == "src/main.rs" || source.in_dir("src/cli/") {
        return Vec::new();
    }
    crate_uses(
        source,
        &["anyhow"],
        "anyhow",
        "src/main.rs and src/cli/ (elsewhere, a closed error enum)",
    )
}

fn storage_outside_ledger(source: &Source) -> Vec<Violation> {
    if !source.in_dir("src/") || source.in_dir("src/ledger/") {
        return Vec::new();
    }
    crate_uses(
        source,
        &["rusqlite", "postgres"],
        "storage",
        "the storage layer, src/ledger/ (nothing outside it knows SQL exists)",
    )
}

/// Every rule on one file, in the order the module documentation lists them.
fn check(source: &Source) -> Vec<Violation> {
    let mut out = opens_with_module_doc(source);
    // Tests and benches may cast and run long, but a silent default there hides a
    // failure as well as it hides damage in src/.
    out.extend(silent_defaults(source));
    if source.in_dir("src/") {
        out.extend(numeric_casts(source));
        out.extend(long_functions(source));
    }
    out.extend(anyhow_outside_cli(source));
    out.extend(storage_outside_ledger(source));
    out
}

// ---- the repository keeps the rules ---------------------------------------------------

#[test]
fn the_repository_keeps_the_house_rules() {
    let sources = sources();
    assert!(
        sources.iter().any(|source| source.path == "src/lib.rs"),
        "the walk found no src/lib.rs; it reads the wrong directory"
    );
    let violations: Vec<String> = sources
        .iter()
        .flat_map(check)
        .map(|violation| violation.to_string())
        .collect();
    assert!(
        violations.is_empty(),
        "{} house-rule violations (an exception is a `tidy: allow(RULE): reason` comment on the line or the line above):\n{}",
        violations.len(),
        violations.join("\n")
    );
}

#[test]
fn every_exception_names_a_rule_that_takes_one_and_says_why() {
    let mut bad = Vec::new();
    for source in sources() {
        for (index, line) in source.text.lines().enumerate() {
            let Some((_, rest)) = line.split_once("tidy: allow(") else {
                continue;
            };
            let (rule, reason) = rest.split_once("):").unwrap_or((rest, ""));
            if !EXCEPTIONS.contains(&rule) || reason.trim().is_empty() {
                bad.push(format!("{}:{}: {line}", source.path, index + 1));
            }
        }
    }
    // This file quotes the marker in its documentation and planted cases.
    bad.retain(|place| !place.starts_with("tests/tidy.rs:"));
    assert!(
        bad.is_empty(),
        "exceptions must read `tidy: allow(cast|unwrap-or|long-fn): reason`:\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_committed_format_document_is_the_generated_one() {
    let generated = doc::format_document().expect("the layout table renders");
    assert!(generated.contains("| 67–79 | 13 | N | amount in øre (absolute) |"));
    let path = root().join("docs/sf2520-format.md");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &generated).expect("docs/sf2520-format.md is writable");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_else(|error| {
        panic!(
            "{}: {error}; run UPDATE_GOLDEN=1 cargo test --test tidy",
            path.display()
        )
    });
    assert!(
        committed == generated,
        "docs/sf2520-format.md differs from what src/sf2520/layout.rs generates; review, then run UPDATE_GOLDEN=1 cargo test --test tidy"
    );
}

// ---- each rule finds a planted violation ------------------------------------------------

fn rules_broken(path: &str, text: &str) -> Vec<&'static str> {
    check(&Source::new(path, text))
        .into_iter()
        .map(|violation| violation.rule)
        .collect()
}

#[test]
fn a_file_without_a_module_doc_is_found() {
    assert_eq!(rules_broken("src/x.rs", "fn f() {}\n"), ["module-doc"]);
    assert_eq!(
        rules_broken("tests/x.rs", "// a plain comment\n"),
        ["module-doc"]
    );
    assert!(rules_broken("benches/x.rs", "//! Owns x.\n").is_empty());
}

#[test]
fn a_numeric_cast_is_found_unless_excepted_with_a_reason() {
    let planted = "//! x\nfn f(n: u64) -> u32 {\n    n as u32\n}\n";
    let found = check(&Source::new("src/x.rs", planted));
    assert_eq!(found.len(), 1);
    assert_eq!((found[0].rule, found[0].line), ("cast", 3));
    assert_eq!(
        rules_broken("src/x.rs", "//! x\nfn f(n: i64) -> f64 { n as f64 }\n"),
        ["cast"]
    );
    // Quoted in a comment or a string, or a cast that is not between numbers: fine.
    let quoted = "//! x\n// n as u32\nconst S: &str = \"n as u32\";\nuse a as b;\nfn f() -> char { 'a' as char }\n";
    assert!(rules_broken("src/x.rs", quoted).is_empty());
    let excepted = "//! x\nfn f(n: u16) -> u8 {\n    // tidy: allow(cast): masked to 8 bits first\n    (n & 0xff) as u8\n}\n";
    assert!(rules_broken("src/x.rs", excepted).is_empty());
    let without_reason =
        "//! x\nfn f(n: u16) -> u8 {\n    (n & 0xff) as u8 // tidy: allow(cast):\n}\n";
    assert_eq!(rules_broken("src/x.rs", without_reason), ["cast"]);
    // Outside src/, tests may cast.
    assert!(rules_broken("tests/x.rs", "//! x\nfn f(n: u64) -> u32 { n as u32 }\n").is_empty());
}

#[test]
fn a_silent_default_is_found() {
    let planted = "//! x\nfn f(n: u64) -> i64 {\n    i64::try_from(n)\n        .unwrap_or(0)\n}\n";
    let found = check(&Source::new("src/x.rs", planted));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!((found[0].rule, found[0].line), ("unwrap-or", 4));
    for planted in [
        "//! x\nfn f(n: u64) -> i64 { i64::try_from(n).unwrap_or(i64::MAX) }\n",
        "//! x\nfn f(n: u64) -> i64 { i64::try_from(n).unwrap_or_default() }\n",
        "//! x\nfn f(n: Option<u64>) -> u64 { n.unwrap_or(0) }\n",
        "//! x\nfn f(n: Option<i64>) -> i64 { n.checked_neg().unwrap_or(i64::MAX) }\n",
    ] {
        assert_eq!(
            rules_broken("src/x.rs", planted),
            ["unwrap-or"],
            "{planted}"
        );
    }
    let fine = "//! x\nfn f(n: Option<u64>, s: Option<&str>) -> u64 {\n    s.unwrap_or(\"?\");\n    n.unwrap_or(7)\n}\n";
    assert!(rules_broken("src/x.rs", fine).is_empty());
    let excepted = "//! x\nfn f(n: Option<u64>) -> u64 {\n    // tidy: allow(unwrap-or): no files yet means none waiting\n    n.unwrap_or(0)\n}\n";
    assert!(rules_broken("src/x.rs", excepted).is_empty());
}

#[test]
fn a_long_function_is_found() {
    let body = |lines: usize| "    step();\n".repeat(lines);
    // 1 line for the signature, the body, 1 line for the closing brace.
    let at_limit = format!("//! x\nfn f() {{\n{}}}\n", body(FUNCTION_LINES_MAX - 2));
    assert!(rules_broken("src/x.rs", &at_limit).is_empty());
    let over = format!("//! x\nfn f() {{\n{}}}\n", body(FUNCTION_LINES_MAX - 1));
    assert_eq!(rules_broken("src/x.rs", &over), ["long-fn"]);
    // Braces inside strings and comments do not count; a body-less declaration is skipped.
    let tricky = format!(
        "//! x\ntrait T {{ fn g(&self) -> Vec<u8>; }}\nfn f() -> Result<(), ()> {{\n    let _ = \"}}\";\n    // }}\n{}    Ok(())\n}}\n",
        body(FUNCTION_LINES_MAX - 5)
    );
    assert!(
        rules_broken("src/x.rs", &tricky).is_empty(),
        "{:?}",
        rules_broken("src/x.rs", &tricky)
    );
    let excepted = format!(
        "//! x\n// tidy: allow(long-fn): one table, read top to bottom\nfn f() {{\n{}}}\n",
        body(FUNCTION_LINES_MAX)
    );
    assert!(rules_broken("src/x.rs", &excepted).is_empty());
}

#[test]
fn anyhow_outside_the_cli_is_found() {
    let planted = "//! x\nuse anyhow::Context;\nfn f() -> anyhow::Result<()> { Ok(()) }\n";
    assert_eq!(
        rules_broken("src/export/x.rs", planted),
        ["anyhow", "anyhow"]
    );
    assert!(rules_broken("src/cli/x.rs", planted).is_empty());
    assert!(rules_broken("src/main.rs", planted).is_empty());
    let mentioned = "//! `anyhow` lives in cli\nconst NOTE: &str = \"anyhow::Error\";\n";
    assert!(rules_broken("src/lib.rs", mentioned).is_empty());
}

#[test]
fn storage_outside_the_ledger_is_found() {
    let planted = "//! x\nuse rusqlite::Connection;\nfn f(c: &mut postgres::Client) {}\n";
    assert_eq!(
        rules_broken("src/export/x.rs", planted),
        ["storage", "storage"]
    );
    assert!(rules_broken("src/ledger/x.rs", planted).is_empty());
    // Tests and benches reach the database to tamper with it or to run a peer.
    assert!(rules_broken("tests/x.rs", planted).is_empty());
    let named = "//! x\nenum Backend { Postgres }\nconst URL: &str = \"postgres://x\";\n";
    assert!(rules_broken("src/export/x.rs", named).is_empty());
}

#[test]
fn literals_and_comments_are_blanked_without_moving_lines() {
    let text = "let a = r#\"as u8 \"quoted\" \"#; /* as u8 /* nested */ as u8 */\nlet c = '\\''; let d = '\"'; let l: &'static str = b\"as u8\";\n";
    let code = blank_comments_and_literals(text);
    assert_eq!(code.len(), text.len());
    assert_eq!(code.lines().count(), text.lines().count());
    assert!(!code.contains("as u8"), "{code}");
    assert!(
        code.contains("&'static str"),
        "a lifetime is not a literal: {code}"
    );
}
