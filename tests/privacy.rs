//! Privacy (ARCHITECTURE.md, invariant 6): every command, run with `RUST_LOG=trace`, never prints
//! a full CPR number on stdout or stderr (only SF2520 files may hold one); every
//! file and directory the program creates is owner-only even under `umask 000`;
//! a config or private key that others can read is refused.

mod support;

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sf2520::demo::{demo_month, DEMO_SEED};
use sf2520::domain::Command;
use sf2520::transport::{self, ConfigError};
use support::cli::{mode, sf2520, Run};
use support::ledger::{agreement, lines, withholding, CPR};

/// A debtor of this test's own input (the demo's debtors are added to these).
const OTHER_CPR: &str = "1507855678";

/// Every full CPR number the ledger will hold: the demo month's and this test's.
fn known_cprs() -> HashSet<String> {
    let mut cprs: HashSet<String> = demo_month(DEMO_SEED)
        .iter()
        .filter_map(|command| match command {
            Command::RegisterAgreement(agreement) => {
                Some(agreement.cpr.plain().expect("plain").digits().to_string())
            }
            Command::RecordWithholding(withholding) => {
                Some(withholding.cpr.plain().expect("plain").digits().to_string())
            }
            _ => None,
        })
        .collect();
    cprs.extend([CPR.to_string(), OTHER_CPR.to_string()]);
    cprs
}

/// The known CPR numbers found anywhere in `text`, also inside longer digit runs
/// (one pass over the text, as `log --json` prints megabytes).
fn leaked<'a>(text: &str, cprs: &'a HashSet<String>) -> Vec<&'a str> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    for start in 0..bytes.len().saturating_sub(9) {
        let window = &bytes[start..start + 10];
        if window.iter().all(u8::is_ascii_digit) {
            let window = std::str::from_utf8(window).expect("digits are UTF-8");
            if let Some(cpr) = cprs.get(window) {
                found.push(cpr.as_str());
            }
        }
    }
    found
}

/// Runs commands and remembers what each printed.
struct Session {
    _dir: tempfile::TempDir,
    root: PathBuf,
    data_dir: PathBuf,
    runs: Vec<(String, Run)>,
}

impl Session {
    fn new() -> Session {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        Session {
            data_dir: root.join("data"),
            root,
            _dir: dir,
            runs: Vec::new(),
        }
    }

    fn path(&self, name: &str) -> String {
        self.root.join(name).to_string_lossy().into_owned()
    }

    fn write(&self, name: &str, text: &str) -> String {
        std::fs::write(self.root.join(name), text).unwrap();
        self.path(name)
    }

    /// Runs `sf2520 ARGS`; `must_succeed` false for runs that are refusals.
    fn run(&mut self, args: &[&str], must_succeed: bool) -> &Run {
        let run = sf2520(&self.data_dir, args);
        assert!(
            run.success == must_succeed,
            "sf2520 {args:?}: success {} expected {must_succeed}\nstdout: {}\nstderr: {}",
            run.success,
            run.stdout,
            run.stderr
        );
        self.runs.push((args.join(" "), run));
        &self.runs.last().unwrap().1
    }

    fn ok(&mut self, args: &[&str]) -> &Run {
        self.run(args, true)
    }

    fn refused(&mut self, args: &[&str]) -> &Run {
        self.run(args, false)
    }
}

/// The first outbox file of kommune 0751 (the demo exports one for every kommune).
fn outbox_file(s: &Session) -> PathBuf {
    let outbox = s.data_dir.join("outbox");
    std::fs::read_dir(&outbox)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.to_string_lossy().contains("SF2520_0751_"))
        .min()
        .expect("an outbox file of 0751")
}

/// An SF2520 file whose first detail record has a broken amount: `check` and
/// `show` must report it without repeating the record's CPR.
fn broken_copy(s: &Session, file: &Path) -> String {
    let mut bytes = std::fs::read(file).unwrap();
    // Record 2 (the first detail) starts at byte 130; the amount is at 67–79.
    bytes[130 + 70] = b'X';
    std::fs::write(s.root.join("broken.txt"), bytes).unwrap();
    s.path("broken.txt")
}

/// Given the demo month and more of our own input, every command in its every
/// variant, good input and bad.
fn when_every_command_runs(s: &mut Session) {
    s.ok(&["--help"]);
    for command in [
        "ingest",
        "totals",
        "log",
        "verify",
        "demo",
        "export",
        "reconstruct",
        "files",
        "reissue",
        "check",
        "show",
        "backup",
        "restore",
        "init",
        "status",
        "metrics",
        "report",
    ] {
        s.ok(&[command, "--help"]);
    }
    s.ok(&["demo"]);
    let good = s.write(
        "good.jsonl",
        &lines(&[
            agreement("BA-P1", "0751", OTHER_CPR, "2026-01-01"),
            withholding("KY-P1", "BA-P1", "0751", "2026-10-01", "10.00").replace(CPR, OTHER_CPR),
        ]),
    );
    s.ok(&["ingest", "--dry-run", &good]);
    s.ok(&["ingest", &good]);
    s.ok(&["ingest", "--json", &good]);
    when_bad_input_is_ingested(s);
    when_totals_and_log_are_read(s);
    when_files_are_made_and_checked(s);
    let backup = s.path("backup.sqlite3");
    s.ok(&["backup", &backup]);
    s.refused(&["backup", &backup]);
    s.ok(&["restore", &backup]);
    s.ok(&["verify"]);
}

/// Bad lines that carry a CPR where it does not belong, or in the wrong shape.
fn when_bad_input_is_ingested(s: &mut Session) {
    let bad = s.write(
        "bad.jsonl",
        &lines(&[
            // A CPR in the kommune field and a kommune in the CPR field.
            agreement("BA-P2", OTHER_CPR, "0751", "2026-01-01"),
            // A CPR as a JSON number.
            agreement("BA-P3", "0751", OTHER_CPR, "2026-01-01")
                .replace(&format!("\"{OTHER_CPR}\""), OTHER_CPR),
            // Another debtor's CPR on a registered agreement.
            withholding("KY-P2", "BA-P1", "0751", "2026-10-01", "1.00"),
            // A CPR in a date field, and an invalid CPR.
            agreement("BA-P4", "0751", CPR, OTHER_CPR),
            agreement("BA-P5", "0751", "3102901234", "2026-01-01"),
        ]),
    );
    s.refused(&["ingest", &bad]);
    s.refused(&["ingest", "--json", &bad]);
    s.refused(&["ingest", "--dry-run", &bad]);
    // A CPR typed where an option wants something else.
    s.refused(&["totals", "--kommune", OTHER_CPR]);
    s.refused(&["totals", "--agreement", OTHER_CPR]);
}

fn when_totals_and_log_are_read(s: &mut Session) {
    s.ok(&["totals"]);
    s.ok(&["totals", "--json"]);
    s.ok(&["totals", "--kommune", "0751"]);
    s.ok(&["totals", "--kommune", "0751", "--json"]);
    s.ok(&["totals", "--agreement", "BA-P1"]);
    s.ok(&["totals", "--agreement", "BA-P1", "--json"]);
    s.ok(&["totals", "--at-position", "5"]);
    s.ok(&[
        "totals",
        "--as-of",
        "2099-01-01T00:00:00Z",
        "--kommune",
        "0101",
    ]);
    s.ok(&["log"]);
    s.ok(&["log", "--json"]);
    s.ok(&["log", "--from", "3", "--to", "9", "--json"]);
    s.ok(&["verify"]);
    s.ok(&["status"]);
    s.ok(&["status", "--json"]);
    s.ok(&["metrics"]);
    s.ok(&["--log-format", "json", "totals", "--agreement", "BA-P1"]);
}

fn when_files_are_made_and_checked(s: &mut Session) {
    // Before the official export, so that these have entries to render.
    let as_of = s.path("as-of");
    s.ok(&[
        "export",
        "--as-of",
        "2099-01-01T00:00:00Z",
        "--out",
        &as_of,
        "--json",
    ]);
    s.ok(&["export", "--test"]);
    s.ok(&["export"]);
    s.ok(&["files"]);
    s.ok(&["files", "--json"]);
    s.ok(&["files", "--kommune", "0751"]);
    let rebuilt = s.path("rebuilt.txt");
    s.ok(&[
        "reconstruct",
        "--kommune",
        "0751",
        "--seq",
        "1",
        "--out",
        &rebuilt,
    ]);
    // Without --out it writes into the current directory (the test's root).
    s.ok(&["reconstruct", "--kommune", "0101", "--seq", "1"]);
    s.ok(&["reissue", "--kommune", "0751", "--seq", "1"]);
    for (lang, page) in [("da", "report-da.html"), ("en", "report-en.html")] {
        let page = s.path(page);
        s.ok(&[
            "report",
            "--kommune",
            "0751",
            "--lang",
            lang,
            "--out",
            &page,
        ]);
    }
    let file = outbox_file(s);
    let file = file.to_str().unwrap();
    s.ok(&["check", file]);
    s.ok(&["show", file]);
    s.ok(&["show", "--json", file]);
    let broken = broken_copy(s, Path::new(file));
    s.refused(&["check", &broken]);
    s.refused(&["show", &broken]);
}

/// Every file under `dir` that is not owner-only (0600; directories 0700).
fn open_permissions(dir: &Path, found: &mut Vec<String>) {
    let expected = if dir.is_dir() { 0o700 } else { 0o600 };
    if mode(dir) != expected {
        found.push(format!("{} is {:o}", dir.display(), mode(dir)));
    }
    if dir.is_dir() {
        for entry in std::fs::read_dir(dir).unwrap() {
            open_permissions(&entry.unwrap().path(), found);
        }
    }
}

#[test]
fn no_command_prints_a_full_cpr_and_everything_created_is_owner_only() {
    let mut s = Session::new();
    when_every_command_runs(&mut s);
    let cprs = known_cprs();
    assert!(
        cprs.len() > 100,
        "the demo has many debtors: {}",
        cprs.len()
    );
    let mut leaks = Vec::new();
    for (command, run) in &s.runs {
        for (stream, text) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
            for cpr in leaked(text, &cprs) {
                leaks.push(format!("`sf2520 {command}` {stream}: {}-xxxx", &cpr[..6]));
            }
        }
    }
    // The reconciliation report's pages, in both languages.
    for page in ["report-da.html", "report-en.html"] {
        let text = std::fs::read_to_string(s.root.join(page)).unwrap();
        for cpr in leaked(&text, &cprs) {
            leaks.push(format!("{page}: {}-xxxx", &cpr[..6]));
        }
    }
    assert!(
        leaks.is_empty(),
        "full CPR numbers printed:\n{}",
        leaks.join("\n")
    );
    assert!(
        s.runs.iter().any(|(_, run)| run.stderr.contains("TRACE")
            || run.stderr.contains("DEBUG")
            || run.stderr.contains("INFO")),
        "RUST_LOG=trace must have produced log lines to inspect"
    );

    let mut open = Vec::new();
    for created in [
        s.data_dir.clone(),
        s.root.join("as-of"),
        s.root.join("backup.sqlite3"),
        s.root.join("rebuilt.txt"),
        s.root.join("report-da.html"),
        s.root.join("report-en.html"),
    ] {
        open_permissions(&created, &mut open);
    }
    let rebuilt_in_cwd = std::fs::read_dir(&s.root)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.to_string_lossy().contains("SF2520_0101_"))
        .expect("reconstruct without --out writes into the current directory");
    open_permissions(&rebuilt_in_cwd, &mut open);
    assert!(open.is_empty(), "not owner-only:\n{}", open.join("\n"));
}

/// The bad-input runs above must really have been refused for the CPR-bearing
/// reasons, so that the leak check looked at those messages.
#[test]
fn refusals_that_quote_input_mask_the_cpr() {
    let mut s = Session::new();
    s.ok(&["init"]);
    s.ok(&[
        "ingest",
        &s.write(
            "one.jsonl",
            &lines(&[agreement("BA-1", "0751", CPR, "2026-01-01")]),
        ),
    ]);
    let bad = s.write(
        "bad.jsonl",
        &lines(&[
            agreement("BA-2", OTHER_CPR, "0751", "2026-01-01"),
            agreement(
                "BA-3",
                "0751",
                CPR,
                &format!("{}-{}", &OTHER_CPR[..6], &OTHER_CPR[6..]),
            ),
        ]),
    );
    let run = s.refused(&["ingest", &bad]);
    assert!(
        run.stdout
            .contains("kommune \"150785-xxxx\" is not one of the 98"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("\"150785-xxxx\" is not a date"),
        "{}",
        run.stdout
    );
    let run = s.refused(&["totals", "--agreement", OTHER_CPR]);
    assert!(
        run.stderr
            .contains("agreement 150785-xxxx is not registered"),
        "{}",
        run.stderr
    );
}

/// Regression: a CPR written in Arabic-Indic or full-width digits in `kommune`
/// or `reference` was echoed in full; any run of ten Unicode decimal digits is
/// masked, as ASCII ones are.
#[test]
fn a_cpr_in_other_scripts_digits_is_masked_too() {
    let mut s = Session::new();
    s.ok(&["init"]);
    let in_script = |zero: char| -> String {
        OTHER_CPR
            .chars()
            .map(|digit| {
                let value = digit.to_digit(10).unwrap();
                char::from_u32(u32::from(zero) + value).unwrap()
            })
            .collect()
    };
    let arabic_indic = in_script('\u{660}');
    let full_width = in_script('\u{ff10}');
    let devanagari = in_script('\u{966}');
    let bad = s.write(
        "scripts.jsonl",
        &lines(&[
            agreement("BA-1", &arabic_indic, CPR, "2026-01-01"),
            agreement("BA-2", "0751", CPR, "2026-01-01"),
            withholding(&full_width, "BA-2", "0751", "2026-10-01", "1.00"),
            withholding("KY-3", "BA-2", &devanagari, "2026-10-01", "1.00"),
        ]),
    );
    for args in [
        vec!["ingest", bad.as_str()],
        vec!["ingest", "--json", bad.as_str()],
    ] {
        let run = s.refused(&args);
        let printed = format!("{}{}", run.stdout, run.stderr);
        for number in [&arabic_indic, &full_width, &devanagari] {
            assert!(!printed.contains(number.as_str()), "{number} in {printed}");
            let head: String = number.chars().take(6).collect();
            assert!(
                printed.contains(&format!("{head}-xxxx")),
                "{head}: {printed}"
            );
        }
    }
}

// The transport config through the public API: secrets and where they go must not
// be readable by others.

use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::ssh_key::LineEnding;
use russh::keys::PrivateKey;

/// A config file and private key (from fixed seeds) with the given modes.
fn given_config(config_mode: u32, key_mode: u32) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let key = PrivateKey::from(Ed25519Keypair::from_seed(&[7; 32]));
    let host = PrivateKey::from(Ed25519Keypair::from_seed(&[8; 32]));
    let key_path = dir.path().join("id_ed25519");
    std::fs::write(
        &key_path,
        key.to_openssh(LineEnding::LF).unwrap().as_bytes(),
    )
    .unwrap();
    let config_path = dir.path().join("sf2520.toml");
    let config = format!(
        "[sftp]\nhost = \"sftp.example\"\nuser = \"ky\"\nprivate_key = \"id_ed25519\"\n\
         host_key = \"{}\"\nsender = \"KY\"\nrecipients = [\"UDK\"]\n",
        host.public_key().to_openssh().unwrap()
    );
    std::fs::write(&config_path, config).unwrap();
    for (path, mode) in [(&key_path, key_mode), (&config_path, config_mode)] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    (dir, config_path, key_path)
}

#[test]
fn a_config_or_private_key_others_can_read_is_refused_with_the_fix() {
    let (_dir, config, _key) = given_config(0o600, 0o600);
    assert!(transport::load(&config).unwrap().is_some());

    for config_mode in [0o644, 0o640, 0o604, 0o660] {
        let (_dir, config, _key) = given_config(config_mode, 0o600);
        let error = transport::load(&config).unwrap_err();
        assert!(
            matches!(error, ConfigError::TooOpen { what: "config file", mode, .. } if mode == config_mode),
            "{config_mode:o}: {error:?}"
        );
        let message = error.to_string();
        assert!(
            message.contains(&format!("chmod 600 {}", config.display())),
            "{message}"
        );
    }
    for key_mode in [0o644, 0o640, 0o604, 0o606] {
        let (_dir, config, key) = given_config(0o600, key_mode);
        let error = transport::load(&config).unwrap_err();
        assert!(
            matches!(
                error,
                ConfigError::TooOpen {
                    what: "private key",
                    ..
                }
            ),
            "{key_mode:o}: {error:?}"
        );
        let message = error.to_string();
        assert!(
            message.contains(&format!("chmod 600 {}", key.display())),
            "{message}"
        );
        assert!(
            !message.contains("BEGIN OPENSSH"),
            "the key itself is never quoted"
        );
    }
}

/// The leak check above can fail: it finds a known number anywhere, and only that.
#[test]
fn the_leak_detector_finds_a_known_cpr_even_inside_longer_digits() {
    let cprs = HashSet::from([CPR.to_string()]);
    assert_eq!(leaked(&format!("cpr={CPR}."), &cprs), [CPR]);
    assert_eq!(leaked(&format!("9{CPR}9"), &cprs), [CPR]);
    assert!(leaked("010190-xxxx 0101901235", &cprs).is_empty());
}
