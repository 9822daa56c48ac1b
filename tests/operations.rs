//! Operating `sf2520` in production, through the real binary: no silent ledger
//! creation, the exit-code contract, `status --check` and `metrics`, logs
//! (colour, JSON, CPR masking), the inbox, and the friendlier edges.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::cli::{command, mode, sf2520, Run};
use support::ledger::{agreement, lines, tamper_database, withholding, CPR};
use support::platform::{Answer, Platform};
use support::sshd::Sshd;

/// A temporary root with a data directory `data` not yet created.
struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new() -> Site {
        Site {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn data(&self) -> PathBuf {
        self.root().join("data")
    }

    fn run(&self, args: &[&str]) -> Run {
        sf2520(&self.data(), args)
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.root().join(name);
        fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    }

    /// `init`, then one agreement and one withholding of kommune 0751 ingested.
    fn given_one_entry(&self) {
        self.run(&["init"]).expect_success("init");
        let input = self.write(
            "first.jsonl",
            &lines(&[
                agreement("BA1", "0751", CPR, "2026-01-01"),
                withholding("KY-1", "BA1", "0751", "2026-10-01", "100.00"),
            ]),
        );
        self.run(&["ingest", &input]).expect_success("ingest");
    }
}

fn json(text: &str) -> Value {
    serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("not one JSON document ({e}): {text}"))
}

// ---- 1. No silent ledger creation ----------------------------------------

/// Regression: `--data-dir /var/lib/sf252 totals` (a typo) printed an empty
/// table, exited 0 and created a new ledger there.
#[test]
fn every_command_but_init_refuses_a_missing_ledger_and_creates_nothing() {
    let site = Site::new();
    let input = site.write(
        "in.jsonl",
        &lines(&[agreement("BA1", "0751", CPR, "2026-01-01")]),
    );
    let commands: Vec<Vec<&str>> = vec![
        vec!["totals"],
        vec!["verify"],
        vec!["log"],
        vec!["files"],
        vec!["ingest", &input],
        vec!["export"],
        vec!["export", "--deliver"],
        vec!["deliver"],
        vec!["reconstruct", "--kommune", "0751", "--seq", "1"],
        vec!["reissue", "--kommune", "0751", "--seq", "1"],
        vec!["status"],
        vec!["metrics"],
    ];
    for args in commands {
        let run = site
            .run(&args)
            .expect_code(6, &format!("{args:?} on a missing ledger"));
        let expected = format!("no ledger at {} (run `sf2520 init`)", site.data().display());
        assert!(run.stderr.contains(&expected), "{args:?}: {}", run.stderr);
        assert!(
            !site.data().exists(),
            "{args:?} created {}",
            site.data().display()
        );
    }
}

/// Regression: `files` run in the wrong directory created `./sf2520-data`.
#[test]
fn the_default_data_directory_is_not_created_by_a_read() {
    let site = Site::new();
    let run: Run = Command::new(env!("CARGO_BIN_EXE_sf2520"))
        .arg("files")
        .current_dir(site.root())
        .env_remove("SF2520_DATA_DIR")
        .output()
        .unwrap()
        .into();
    let run = run.expect_code(6, "files without a ledger");
    assert!(
        run.stderr.contains("no ledger at ./sf2520-data"),
        "{}",
        run.stderr
    );
    assert!(!site.root().join("sf2520-data").exists());
}

#[test]
fn init_creates_an_owner_only_ledger_and_a_second_init_changes_nothing() {
    let site = Site::new();
    let run = site.run(&["init"]).expect_success("init");
    assert!(
        run.stdout.contains("created an empty ledger"),
        "{}",
        run.stdout
    );
    assert_eq!(mode(&site.data()), 0o700);
    assert_eq!(mode(&site.data().join("ledger.sqlite3")), 0o600);
    site.run(&["verify"])
        .expect_success("verify of a new ledger");
    let input = site.write(
        "in.jsonl",
        &lines(&[agreement("BA1", "0751", CPR, "2026-01-01")]),
    );
    site.run(&["ingest", &input]).expect_success("ingest");
    let again = site.run(&["init", "--json"]).expect_success("init again");
    let doc = json(&again.stdout);
    assert_eq!(doc["created"], false);
    assert_eq!(doc["head_position"], 1, "the existing ledger is untouched");
}

// ---- 2. Exit codes --------------------------------------------------------

#[test]
fn help_and_operations_md_carry_the_same_exit_code_table() {
    let site = Site::new();
    let help = site.run(&["--help"]).expect_success("--help").stdout;
    let docs = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/operations.md"))
        .unwrap();
    for (_, code, meaning) in sf2520::cli::exit::TABLE {
        assert!(
            help.contains(&format!("{code:>5}  {meaning}")),
            "--help lacks {code}: {help}"
        );
        assert!(
            docs.contains(&format!("| {code} | {meaning} |")),
            "docs/operations.md lacks the row for {code}"
        );
    }
}

#[test]
fn rejected_input_damage_and_configuration_have_their_own_codes() {
    let site = Site::new();
    site.given_one_entry();
    let bad = site.write(
        "bad.jsonl",
        &lines(&[withholding("KY-2", "NOPE", "0751", "2026-10-01", "1.00")]),
    );
    site.run(&["ingest", &bad])
        .expect_code(3, "rejected ingest");
    let not_sf2520 = site.write("x.txt", "not a file\n");
    site.run(&["check", &not_sf2520])
        .expect_code(3, "invalid SF2520 file");
    site.run(&["totals", "--kommune", "9999"])
        .expect_code(3, "unknown kommune argument");
    site.run(&["--config", "/nonexistent/sf2520.toml", "config", "check"])
        .expect_code(6, "named config missing");
    let broken = site.root().join("broken.toml");
    fs::write(&broken, "[sftp]\nhost = 3\n").unwrap();
    fs::set_permissions(&broken, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    site.run(&["--config", broken.to_str().unwrap(), "deliver"])
        .expect_code(6, "invalid config");
    site.run(&["--bogus"]).expect_code(2, "usage error");
    assert!(tamper_database(&site.data(), b"KY-1") > 0);
    let damaged = site
        .run(&["verify"])
        .expect_code(4, "verify of a tampered ledger");
    assert!(damaged.stdout.contains("DAMAGED"), "{}", damaged.stdout);
}

/// Regression: with sf2520.toml missing, `export --deliver` exited 0 while the
/// file was only in the outbox.
#[test]
fn export_deliver_without_delivery_configured_is_not_complete() {
    let site = Site::new();
    site.given_one_entry();
    let run = site
        .run(&["export", "--deliver"])
        .expect_code(7, "export --deliver without [sftp]");
    assert!(
        run.stdout.contains("no [sftp] configuration"),
        "{}",
        run.stdout
    );
    site.run(&["deliver"])
        .expect_code(7, "deliver without [sftp]");
    let doc = json(
        &site
            .run(&["deliver", "--json"])
            .expect_code(7, "json")
            .stdout,
    );
    assert_eq!(doc["configured"], false);
    assert_eq!(doc["not_accepted"][0]["kommune"], "0751");
    assert_eq!(doc["not_accepted"][0]["kommune_name"], "Aarhus");
    site.run(&["export"])
        .expect_success("export alone does not promise delivery");
}

/// Regression: a rejected file turned green the next night ("nothing to
/// deliver", exit 0).
#[test]
fn a_rejected_file_keeps_deliver_non_zero_night_after_night_and_status_critical() {
    let site = Site::new();
    site.given_one_entry();
    let sshd = Sshd::start();
    let _platform = Platform::start(&sshd.root(), |_| Answer::Reject {
        code: 4711,
        code_description: "Ukendt modtager".into(),
        description: "Modtager findes ikke".into(),
    });
    let config = sshd.write_sf2520_config(site.root(), "receipt_timeout_secs = 10\n");
    let with_config = |args: &[&str]| {
        let mut all = vec!["--config", config.to_str().unwrap()];
        all.extend_from_slice(args);
        site.run(&all)
    };
    let first = with_config(&["export", "--deliver"]).expect_code(7, "rejected delivery");
    assert!(first.stdout.contains("REJECTED: 4711"), "{}", first.stdout);
    assert!(
        first.stderr.contains("deliver: 1 file(s) to"),
        "progress: {}",
        first.stderr
    );
    let next_night = with_config(&["export", "--deliver"]).expect_code(7, "the next night");
    assert!(
        next_night.stdout.contains("NOT ACCEPTED") && next_night.stdout.contains("4711"),
        "{}",
        next_night.stdout
    );
    with_config(&["deliver"]).expect_code(7, "deliver the next night");
    let check = with_config(&["status", "--check"]).expect_code(2, "status --check");
    assert!(
        check.stdout.starts_with("SF2520 CRITICAL - "),
        "{}",
        check.stdout
    );
    assert!(check.stdout.contains("4711"), "{}", check.stdout);
    let status = json(
        &with_config(&["status", "--json"])
            .expect_success("status")
            .stdout,
    );
    assert_eq!(status["files_by_state"]["rejected"], 1);
    assert_eq!(status["rejected"][0]["delivery"]["state"], "rejected");
    assert_eq!(status["config"]["sftp"], true);
    let metrics = with_config(&["metrics"]).expect_success("metrics").stdout;
    assert!(
        metrics.contains("sf2520_files{state=\"rejected\"} 1\n"),
        "{metrics}"
    );
}

#[test]
fn a_host_key_that_is_not_the_pinned_one_has_its_own_code() {
    let site = Site::new();
    site.given_one_entry();
    let sshd = Sshd::start();
    let impostor = support::sshd::generate_key(site.root(), "impostor");
    let impostor_line = fs::read_to_string(impostor.with_extension("pub")).unwrap();
    let config = sshd.write_sf2520_config(site.root(), "receipt_timeout_secs = 5\n");
    let text = fs::read_to_string(&config)
        .unwrap()
        .replace(&sshd.host_key_line(), impostor_line.trim());
    fs::write(&config, text).unwrap();
    let run = site
        .run(&["--config", config.to_str().unwrap(), "export", "--deliver"])
        .expect_code(8, "host key mismatch");
    assert!(run.stdout.contains("not the pinned one"), "{}", run.stdout);
    // Regression: the last line said "(exit code 7: delivery not complete)".
    let deliver = site
        .run(&["--config", config.to_str().unwrap(), "deliver"])
        .expect_code(8, "deliver against an impostor");
    for run in [&run, &deliver] {
        let last = run.stdout.lines().last().unwrap_or_default();
        let summary = run
            .stdout
            .lines()
            .find(|line| line.contains("official file(s) not accepted"))
            .unwrap_or_default();
        assert!(
            summary.contains("(exit code 8: the SFTP host key is not the pinned one)")
                && !run.stdout.contains("exit code 7"),
            "{last}\n{}",
            run.stdout
        );
    }
    site.run(&["--config", config.to_str().unwrap(), "config", "check"])
        .expect_code(8, "config check against an impostor");
}

// ---- 3. status and metrics ------------------------------------------------

#[test]
fn status_check_follows_the_monitoring_plugin_convention() {
    let site = Site::new();
    let unknown = site.run(&["status", "--check"]).expect_code(3, "no ledger");
    assert!(
        unknown.stdout.starts_with("SF2520 UNKNOWN - "),
        "{}",
        unknown.stdout
    );
    site.given_one_entry();
    let ok = site
        .run(&["status", "--check"])
        .expect_code(0, "nothing exported yet");
    assert!(ok.stdout.starts_with("SF2520 OK - "), "{}", ok.stdout);
    site.run(&["export"]).expect_success("export");
    let warning = site
        .run(&["status", "--check"])
        .expect_code(1, "a file waits and delivery is not configured");
    assert!(
        warning.stdout.contains("delivery is not configured"),
        "{}",
        warning.stdout
    );
    let late = site
        .run(&["status", "--check", "--warn-hours", "0"])
        .expect_code(1, "waiting longer than --warn-hours");
    assert!(late.stdout.contains("over 0 h"), "{}", late.stdout);
    let critical = site
        .run(&[
            "status",
            "--check",
            "--warn-hours",
            "0",
            "--critical-hours",
            "0",
        ])
        .expect_code(2, "waiting longer than --critical-hours");
    assert!(
        critical.stdout.starts_with("SF2520 CRITICAL - "),
        "{}",
        critical.stdout
    );
    let screen = site.run(&["status"]).expect_success("status");
    for fragment in [
        "ledger head     position 3",
        "last export",
        "exported 1",
        "oldest pending",
        "configuration",
    ] {
        assert!(
            screen.stdout.contains(fragment),
            "{fragment}: {}",
            screen.stdout
        );
    }
    let doc = json(
        &site
            .run(&["status", "--json"])
            .expect_success("json")
            .stdout,
    );
    assert_eq!(doc["head"]["position"], 3);
    assert_eq!(doc["files_by_state"]["exported"], 1);
    assert_eq!(doc["last_file_per_kommune"][0]["kommune"], "0751");
    assert_eq!(doc["last_file_per_kommune"][0]["kommune_name"], "Aarhus");
    assert_eq!(doc["config"]["present"], false);
    assert_eq!(doc["check"]["verdict"], "WARNING");
}

#[test]
fn metrics_are_valid_prometheus_text() {
    let site = Site::new();
    site.given_one_entry();
    site.run(&["export"]).expect_success("export");
    let text = site.run(&["metrics"]).expect_success("metrics").stdout;
    let mut samples = std::collections::HashMap::new();
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix("# ") {
            assert!(
                comment.starts_with("HELP ") || comment.starts_with("TYPE "),
                "{line}"
            );
            continue;
        }
        let (name, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        assert!(value.parse::<f64>().is_ok(), "value of {line}");
        samples.insert(name.to_owned(), value.to_owned());
    }
    assert_eq!(samples["sf2520_ledger_head_position"], "3");
    assert_eq!(samples["sf2520_files{state=\"exported\"}"], "1");
    assert_eq!(samples["sf2520_files{state=\"accepted\"}"], "0");
    assert_eq!(
        samples["sf2520_entries{kommune=\"0751\",kommune_name=\"Aarhus\"}"],
        "1"
    );
    assert_eq!(
        samples["sf2520_net_ore{kommune=\"0751\",kommune_name=\"Aarhus\"}"],
        "10000"
    );
    let last_export: f64 = samples["sf2520_last_export_timestamp_seconds"]
        .parse()
        .unwrap();
    assert!(last_export > 1.7e9, "{last_export}");
}

// ---- 4. Logs ----------------------------------------------------------------

/// A data directory whose name is CPR-shaped, so that the startup log line
/// carries a CPR to be masked.
fn cpr_site() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join(CPR);
    sf2520(&data, ["init"]).expect_success("init");
    (dir, data)
}

/// Regression: logs written to a pipe carried ANSI colour codes.
#[test]
fn text_logs_to_a_pipe_have_no_colour_and_mask_the_cpr() {
    let (_dir, data) = cpr_site();
    let run = sf2520(&data, ["totals"]).expect_success("totals");
    assert!(
        run.stderr.contains("starting"),
        "RUST_LOG=trace logs: {}",
        run.stderr
    );
    assert!(
        !run.stderr.contains('\x1b'),
        "colour in a pipe: {:?}",
        run.stderr
    );
    assert!(!run.stderr.contains(CPR), "{}", run.stderr);
    assert!(run.stderr.contains("010190-xxxx"), "{}", run.stderr);
}

#[test]
fn json_logs_are_one_object_per_line_with_the_cpr_masked() {
    let (_dir, data) = cpr_site();
    for run in [
        sf2520(&data, ["--log-format", "json", "totals"]),
        command(&data, ["totals"])
            .env("SF2520_LOG_FORMAT", "json")
            .output()
            .unwrap()
            .into(),
    ] {
        let run = run.expect_success("totals with JSON logs");
        let mut seen = 0;
        for line in run.stderr.lines() {
            let object = json(line);
            assert!(
                object["level"].is_string() && object["target"].is_string(),
                "{line}"
            );
            assert!(
                object["timestamp"]
                    .as_str()
                    .is_some_and(|t| t.ends_with('Z')),
                "{line}"
            );
            seen += 1;
        }
        assert!(seen > 0, "no log lines");
        assert!(
            run.stderr.contains("\"message\":\"starting\""),
            "{}",
            run.stderr
        );
        assert!(!run.stderr.contains(CPR), "{}", run.stderr);
        assert!(run.stderr.contains("010190-xxxx"), "{}", run.stderr);
    }
}

/// Every line of standard error, parsed as one JSON object each (panics naming
/// the line that is not).
fn json_lines(stderr: &str) -> Vec<Value> {
    stderr
        .lines()
        .map(|line| {
            let object = json(line);
            assert!(object.is_object(), "not an object: {line}");
            assert!(object["level"].is_string(), "no level: {line}");
            object
        })
        .collect()
}

/// The JSON line with `message`, or a panic listing what there is.
fn line_with<'a>(lines: &'a [Value], message: &str) -> &'a Value {
    lines
        .iter()
        .find(|line| line["message"] == message)
        .unwrap_or_else(|| panic!("no {message:?} line in {lines:#?}"))
}

/// Regression: with `--log-format json` the progress and result lines
/// (`deliver: 1 file(s) to …`, `error: no ledger …`, clap's usage error) were
/// plain text among the JSON objects; at `RUST_LOG=info` ingest, export and
/// deliver logged nothing; at debug the start line dumped the arguments' Rust
/// structs (`Totals(TotalsArgs { … })`).
#[test]
fn json_logs_are_every_stderr_line_and_info_names_each_file() {
    let site = Site::new();
    site.run(&["init"]).expect_success("init");
    let input = site.write(
        "first.jsonl",
        &lines(&[
            agreement("BA1", "0751", CPR, "2026-01-01"),
            withholding("KY-1", "BA1", "0751", "2026-10-01", "100.00"),
        ]),
    );
    let sshd = Sshd::start();
    let _platform = Platform::start(&sshd.root(), |_| Answer::Success);
    let config = sshd.write_sf2520_config(site.root(), "receipt_timeout_secs = 10\n");
    let config = config.to_str().unwrap();
    let at_info = |args: &[&str]| -> Run {
        command(&site.data(), ["--log-format", "json", "--config", config])
            .args(args)
            .env("RUST_LOG", "info")
            .output()
            .unwrap()
            .into()
    };
    let ingest = at_info(&["ingest", &input]).expect_success("ingest");
    let ingest = json_lines(&ingest.stderr);
    let ingested = line_with(&ingest, "file ingested");
    assert_eq!(ingested["command"], "ingest");
    assert_eq!(ingested["appended"], 2);
    assert!(
        ingested["head"]
            .as_str()
            .is_some_and(|head| head.starts_with("2:")),
        "{ingested}"
    );
    assert_eq!(
        line_with(&ingest, "ingest finished")["head"],
        ingested["head"]
    );

    let export = at_info(&["export", "--deliver"]).expect_success("export --deliver");
    let export = json_lines(&export.stderr);
    let exported = line_with(&export, "file exported");
    assert_eq!(exported["command"], "export");
    assert_eq!(exported["kommune"], "0751");
    assert_eq!(exported["løbenummer"], 1);
    assert!(line_with(&export, "export finished")["head"].is_string());
    let delivered = line_with(&export, "file delivered");
    assert_eq!(delivered["kommune"], "0751");
    assert_eq!(delivered["løbenummer"], 1);
    assert!(line_with(&export, "delivery finished")["head"].is_string());
    let progress = export
        .iter()
        .find(|line| {
            line["message"]
                .as_str()
                .is_some_and(|message| message.starts_with("deliver: 1 file(s) to "))
        })
        .unwrap_or_else(|| panic!("no progress line: {export:#?}"));
    assert_eq!(progress["level"], "INFO");

    // The final error and clap's usage error are JSON lines too.
    let missing = site.root().join("missing");
    let error = command(&missing, ["--log-format", "json", "files"])
        .output()
        .unwrap();
    let error = Run::from(error).expect_code(6, "no ledger");
    let error = json_lines(&error.stderr);
    let last = error.last().unwrap();
    assert_eq!(last["level"], "ERROR");
    assert!(
        last["message"]
            .as_str()
            .unwrap()
            .starts_with("no ledger at "),
        "{last}"
    );
    let usage = at_info(&["files", "--no-such-option"]).expect_code(2, "usage error");
    let usage = json_lines(&usage.stderr);
    assert!(
        usage[0]["message"]
            .as_str()
            .unwrap()
            .contains("--no-such-option"),
        "{usage:?}"
    );

    // At debug (and trace) the start line names the subcommand, not its arguments.
    let debug = site
        .run(&["--log-format", "json", "totals", "--kommune", "0751"])
        .expect_success("totals at trace");
    let debug_lines = json_lines(&debug.stderr);
    let starting = line_with(&debug_lines, "starting");
    assert_eq!(starting["command"], "totals");
    assert!(!debug.stderr.contains("TotalsArgs"), "{}", debug.stderr);
}

/// On a terminal (`script` gives the run a pseudo-terminal) text logs are
/// coloured, unless NO_COLOR is set; the CPR is masked even between colour codes.
#[test]
fn colour_only_on_a_terminal_and_never_with_no_color() {
    let (dir, data) = cpr_site();
    let on_terminal = |no_color: Option<&str>| -> String {
        let transcript = dir.path().join("typescript");
        let line = format!(
            "RUST_LOG=trace {} --data-dir {} totals",
            env!("CARGO_BIN_EXE_sf2520"),
            data.display()
        );
        let mut script = Command::new("script");
        script
            .arg("-qec")
            .arg(&line)
            .arg(&transcript)
            .env_remove("NO_COLOR");
        if let Some(value) = no_color {
            script.env("NO_COLOR", value);
        }
        let output = script.output().expect("run script(1)");
        assert!(output.status.success(), "{output:?}");
        // script(1)'s own header quotes the command line; only the log line counts.
        let transcript = fs::read_to_string(&transcript).unwrap();
        transcript
            .lines()
            .find(|line| line.contains("starting"))
            .unwrap_or_else(|| panic!("no log line: {transcript:?}"))
            .to_owned()
    };
    let coloured = on_terminal(None);
    assert!(
        coloured.contains('\x1b'),
        "no colour on a terminal: {coloured:?}"
    );
    assert!(!coloured.contains(CPR), "{coloured:?}");
    assert!(coloured.contains("010190-xxxx"), "{coloured:?}");
    let plain = on_terminal(Some("1"));
    assert!(
        !plain.contains('\x1b'),
        "colour despite NO_COLOR: {plain:?}"
    );
    assert!(!plain.contains(CPR), "{plain:?}");
}

// ---- 5. The inbox ---------------------------------------------------------

#[test]
fn the_inbox_archives_accepted_files_and_rejects_bad_ones_with_their_errors() {
    let site = Site::new();
    site.run(&["init"]).expect_success("init");
    let inbox = site.root().join("inbox");
    fs::create_dir(&inbox).unwrap();
    fs::write(
        inbox.join("2026-10-01.jsonl"),
        lines(&[
            agreement("BA1", "0751", CPR, "2026-01-01"),
            withholding("KY-1", "BA1", "0751", "2026-10-01", "100.00"),
        ]),
    )
    .unwrap();
    fs::write(
        inbox.join("2026-10-02.jsonl"),
        lines(&[withholding("KY-2", "NOPE", "0751", "2026-10-02", "5.00")]),
    )
    .unwrap();
    // Still being written: the rename-into-place convention keeps it hidden.
    fs::write(inbox.join(".2026-10-03.jsonl.tmp"), "{\"type\": \"agre").unwrap();
    fs::write(inbox.join("notes.txt"), "not input").unwrap();
    let run = site
        .run(&["ingest", "--inbox", inbox.to_str().unwrap()])
        .expect_code(3, "an inbox with a rejected file");
    assert!(
        run.stdout.contains("2 file(s), 1 accepted, 1 rejected"),
        "{}",
        run.stdout
    );
    assert!(inbox.join("archive/2026-10-01.jsonl").is_file());
    assert!(inbox.join("rejected/2026-10-02.jsonl").is_file());
    let errors = fs::read_to_string(inbox.join("rejected/2026-10-02.jsonl.errors.txt")).unwrap();
    assert!(
        errors.contains("2026-10-02.jsonl:1: agreement NOPE is not registered"),
        "{errors}"
    );
    let errors =
        json(&fs::read_to_string(inbox.join("rejected/2026-10-02.jsonl.errors.json")).unwrap());
    assert_eq!(errors["rejected"][0]["line"], 1);
    assert!(
        inbox.join(".2026-10-03.jsonl.tmp").is_file(),
        "a half-written file is left alone"
    );
    assert!(inbox.join("notes.txt").is_file());
    assert_eq!(
        json(&site.run(&["totals", "--json"]).stdout)["rows"][0]["totals"]["entries"],
        1
    );
    // The writer finishes and renames into place; the next run takes it.
    fs::write(
        inbox.join(".2026-10-03.jsonl.tmp"),
        lines(&[withholding("KY-3", "BA1", "0751", "2026-10-03", "1.00")]),
    )
    .unwrap();
    fs::rename(
        inbox.join(".2026-10-03.jsonl.tmp"),
        inbox.join("2026-10-03.jsonl"),
    )
    .unwrap();
    let doc = json(
        &site
            .run(&["ingest", "--inbox", inbox.to_str().unwrap(), "--json"])
            .expect_success("the next run")
            .stdout,
    );
    assert_eq!(doc["files"][0]["file"], "2026-10-03.jsonl");
    assert_eq!(doc["files"][0]["appended"], 1);
    assert_eq!(doc["rejected"], 0);
}

#[test]
fn a_second_inbox_run_is_refused_and_names_the_holder() {
    let site = Site::new();
    let (inbox, _) = inbox_with_one_file(&site);
    // This test holds the lock the way a running `ingest --inbox` does.
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(inbox.join(".sf2520-inbox.lock"))
        .unwrap();
    lock.try_lock().unwrap();
    fs::write(
        inbox.join(".sf2520-inbox.lock"),
        "pid 4242 since 2026-12-01T02:30:00Z",
    )
    .unwrap();
    let run = site
        .run(&["ingest", "--inbox", inbox.to_str().unwrap()])
        .expect_refusal("held by pid 4242 since 2026-12-01T02:30:00Z");
    assert!(inbox.join("a.jsonl").is_file(), "nothing was moved");
    assert_eq!(run.code, Some(1));
    drop(lock);
    site.run(&["ingest", "--inbox", inbox.to_str().unwrap()])
        .expect_success("once the lock is free");
    assert!(inbox.join("archive/a.jsonl").is_file());
}

/// An inbox in `site` with `a.jsonl` (one agreement) waiting, and the inbox's path
/// as an argument.
fn inbox_with_one_file(site: &Site) -> (PathBuf, String) {
    site.run(&["init"]).expect_success("init");
    let inbox = site.root().join("inbox");
    fs::create_dir(&inbox).unwrap();
    fs::write(
        inbox.join("a.jsonl"),
        lines(&[agreement("BA1", "0751", CPR, "2026-01-01")]),
    )
    .unwrap();
    let arg = inbox.to_str().unwrap().to_string();
    (inbox, arg)
}

fn entries_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Regression: `.sf2520-inbox.lock` planted as a symbolic link made sf2520
/// overwrite the file it pointed to with its holder note (anyone who can write
/// the inbox could overwrite any file the service user can write).
#[test]
fn a_lock_planted_as_a_link_is_refused_and_its_target_kept() {
    let site = Site::new();
    let (inbox, arg) = inbox_with_one_file(&site);
    let precious = site.root().join("precious.conf");
    fs::write(&precious, "keep me").unwrap();
    std::os::unix::fs::symlink(&precious, inbox.join(".sf2520-inbox.lock")).unwrap();
    let run = site
        .run(&["ingest", "--inbox", &arg])
        .expect_refusal("symbolic link");
    assert!(run.stderr.contains(".sf2520-inbox.lock"), "{}", run.stderr);
    assert_eq!(fs::read_to_string(&precious).unwrap(), "keep me");
    assert!(inbox.join("a.jsonl").is_file(), "nothing was taken");
}

/// Regression: `archive/` and `rejected/` planted as links to directories
/// elsewhere were followed: KY's batches (full CPRs) landed in 0755 directories
/// of the attacker's choosing.
#[test]
fn archive_and_rejected_planted_as_links_are_refused_and_nothing_is_moved() {
    for planted in ["archive", "rejected"] {
        let site = Site::new();
        let (inbox, arg) = inbox_with_one_file(&site);
        let elsewhere = site.root().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, inbox.join(planted)).unwrap();
        let run = site
            .run(&["ingest", "--inbox", &arg])
            .expect_refusal("symbolic link");
        assert!(run.stderr.contains(planted), "{}", run.stderr);
        assert!(
            entries_in(&elsewhere).is_empty(),
            "{planted}: written through the link"
        );
        assert!(
            inbox.join("a.jsonl").is_file(),
            "{planted}: the file was moved"
        );
        assert_eq!(
            json(&site.run(&["totals", "--json"]).stdout)["rows"]
                .as_array()
                .map(Vec::len),
            Some(0),
            "{planted}: nothing is ingested from an inbox that is refused"
        );
    }
}

/// Regression: file names were printed raw, so an ESC sequence reached the
/// terminal and a newline in a name forged an output line.
#[test]
fn inbox_file_names_are_escaped_when_printed() {
    let site = Site::new();
    let (inbox, arg) = inbox_with_one_file(&site);
    let forged = "b\u{1b}[31mred\nFORGED: 0 files rejected.jsonl";
    fs::write(
        inbox.join(forged),
        lines(&[withholding("KY-1", "NOPE", "0751", "2026-10-01", "1.00")]),
    )
    .unwrap();
    let run = site
        .run(&["ingest", "--inbox", &arg])
        .expect_code(3, "a rejected file");
    for text in [&run.stdout, &run.stderr] {
        assert!(!text.contains('\u{1b}'), "{text}");
        assert!(
            !text.lines().any(|line| line.starts_with("FORGED")),
            "{text}"
        );
    }
    assert!(
        run.stdout.contains(r"b\u{1b}[31mred\nFORGED"),
        "{}",
        run.stdout
    );
    let errors = fs::read_dir(inbox.join("rejected"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.to_string_lossy().ends_with(".errors.txt"))
        .expect("the rejected file's errors");
    let errors = fs::read_to_string(errors).unwrap();
    assert!(!errors.contains('\u{1b}'), "{errors}");
}

/// Regression: a file still being written in place was ingested up to where it
/// was, then archived whole: the lines written after the read never reached the
/// ledger, and nothing said so. A file without its final newline is incomplete:
/// left in the inbox while it may still be written, and reported (exit 3, moved
/// to `rejected/`) once it has stayed incomplete for an hour.
#[test]
fn an_incomplete_inbox_file_is_left_for_the_next_run_and_reported_when_it_stays() {
    let site = Site::new();
    let (inbox, arg) = inbox_with_one_file(&site);
    let partial = inbox.join("b.jsonl");
    let whole = lines(&[
        withholding("KY-1", "BA1", "0751", "2026-10-01", "1.00"),
        withholding("KY-2", "BA1", "0751", "2026-10-02", "2.00"),
    ]);
    // The writer has written the first line and half of the second.
    let cut = whole.find('\n').unwrap() + 10;
    fs::write(&partial, &whole[..cut]).unwrap();
    let run = site
        .run(&["ingest", "--inbox", &arg])
        .expect_success("an inbox with a file still being written");
    assert!(run.stdout.contains("b.jsonl: incomplete"), "{}", run.stdout);
    assert!(
        partial.is_file(),
        "the incomplete file stays for the next run"
    );
    assert!(inbox.join("archive/a.jsonl").is_file());
    assert_eq!(
        json(&site.run(&["totals", "--json"]).stdout)["rows"]
            .as_array()
            .map(Vec::len),
        Some(0),
        "nothing of the incomplete file was ingested"
    );
    // The writer finishes in place: the next run takes the whole file.
    fs::write(&partial, &whole).unwrap();
    site.run(&["ingest", "--inbox", &arg])
        .expect_success("the next run");
    assert!(inbox.join("archive/b.jsonl").is_file());
    assert_eq!(
        json(&site.run(&["totals", "--json"]).stdout)["rows"][0]["totals"]["entries"],
        2
    );
    // A writer that died half-way: after an hour unchanged, reported and set aside.
    let stuck = inbox.join("c.jsonl");
    fs::write(&stuck, "{\"type\": \"withholding\", \"refer").unwrap();
    let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    fs::File::options()
        .write(true)
        .open(&stuck)
        .unwrap()
        .set_modified(two_hours_ago)
        .unwrap();
    let run = site
        .run(&["ingest", "--inbox", &arg])
        .expect_code(3, "a file that stays incomplete");
    assert!(run.stdout.contains("c.jsonl: incomplete"), "{}", run.stdout);
    assert!(inbox.join("rejected/c.jsonl").is_file());
    let errors = fs::read_to_string(inbox.join("rejected/c.jsonl.errors.txt")).unwrap();
    assert!(errors.contains("does not end with a newline"), "{errors}");
}

/// Regression: symbolic links, FIFOs and directories named `*.jsonl` were skipped
/// silently with exit 0. They are set aside in `rejected/` (moved, never opened:
/// a FIFO must not block the run) and reported.
#[test]
fn links_fifos_and_directories_named_jsonl_are_reported_and_never_opened() {
    let site = Site::new();
    let (inbox, arg) = inbox_with_one_file(&site);
    let elsewhere = site.root().join("elsewhere.jsonl");
    fs::write(
        &elsewhere,
        lines(&[agreement("BA9", "0751", CPR, "2026-01-01")]),
    )
    .unwrap();
    std::os::unix::fs::symlink(&elsewhere, inbox.join("link.jsonl")).unwrap();
    fs::create_dir(inbox.join("dir.jsonl")).unwrap();
    let fifo = std::ffi::CString::new(inbox.join("fifo.jsonl").to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path; mkfifo only creates the node.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let run = site
        .run(&["ingest", "--inbox", &arg])
        .expect_code(3, "an inbox with entries that are not files");
    for (name, kind) in [
        ("link.jsonl", "symbolic link"),
        ("dir.jsonl", "directory"),
        ("fifo.jsonl", "FIFO"),
    ] {
        assert!(
            run.stdout
                .lines()
                .any(|line| line.contains(name) && line.contains(kind)),
            "{name}: {}",
            run.stdout
        );
        assert!(
            fs::symlink_metadata(inbox.join("rejected").join(name)).is_ok(),
            "{name} is set aside"
        );
    }
    assert!(inbox.join("archive/a.jsonl").is_file());
    assert!(elsewhere.is_file(), "the link's target stays where it was");
    site.run(&["totals", "--agreement", "BA9"])
        .expect_code(3, "BA9 was never ingested (it is only behind the link)");
}

// ---- 6. Friendlier edges ----------------------------------------------------

/// Regression: re-ingesting a 60,000-line file printed 60,000 "duplicate" lines.
#[test]
fn duplicates_are_summarised_and_listed_with_verbose() {
    let site = Site::new();
    site.run(&["init"]).expect_success("init");
    let mut batch = vec![agreement("BA1", "0751", CPR, "2026-01-01")];
    for index in 0..40 {
        batch.push(withholding(
            &format!("KY-{index}"),
            "BA1",
            "0751",
            "2026-10-01",
            "1.00",
        ));
    }
    let input = site.write("batch.jsonl", &lines(&batch));
    site.run(&["ingest", &input]).expect_success("first");
    let again = site.run(&["ingest", &input]).expect_success("again");
    assert!(again.stdout.lines().count() <= 3, "{}", again.stdout);
    assert!(
        again.stdout.contains("41 line(s) already recorded with identical content (duplicates): line(s) 1, 2, 3, 4, 5 and 36 more"),
        "{}",
        again.stdout
    );
    let verbose = site
        .run(&["ingest", "--verbose", &input])
        .expect_success("verbose");
    assert_eq!(
        verbose
            .stdout
            .matches("duplicate (already recorded")
            .count(),
        41
    );
}

/// Regression: a registered agreement without entries failed with "has no
/// entries", the same words as an unknown agreement.
#[test]
fn totals_of_an_agreement_without_entries_are_zero_and_an_unknown_one_is_an_error() {
    let site = Site::new();
    site.given_one_entry();
    let input = site.write(
        "ba2.jsonl",
        &lines(&[agreement("BA2", "0101", CPR, "2026-01-01")]),
    );
    site.run(&["ingest", &input]).expect_success("ingest");
    let doc = json(
        &site
            .run(&["totals", "--agreement", "BA2", "--json"])
            .expect_success("BA2")
            .stdout,
    );
    assert_eq!(doc["totals"]["entries"], 0);
    assert_eq!(doc["totals"]["net_ore"], 0);
    assert_eq!(doc["kommune"], "0101");
    assert_eq!(doc["kommune_name"], "København");
    let unknown = site
        .run(&["totals", "--agreement", "NOPE"])
        .expect_code(3, "unknown agreement");
    assert!(
        unknown.stderr.contains("agreement NOPE is not registered"),
        "{}",
        unknown.stderr
    );
    let rows = json(&site.run(&["totals", "--json"]).expect_success("all").stdout);
    assert_eq!(rows["rows"][0]["kommune"], "0751");
    assert_eq!(rows["rows"][0]["kommune_name"], "Aarhus");
}

/// Regression: `--as-of 2026-12-01` failed with "premature end of input".
#[test]
fn as_of_takes_a_date_or_an_rfc3339_time_and_names_the_forms() {
    let site = Site::new();
    site.given_one_entry();
    let past = json(
        &site
            .run(&["totals", "--as-of", "2026-01-01", "--json"])
            .expect_success("date")
            .stdout,
    );
    assert_eq!(past["position"], 0);
    let future = json(
        &site
            .run(&["totals", "--as-of", "2999-01-01T00:00:00+01:00", "--json"])
            .expect_success("time")
            .stdout,
    );
    assert_eq!(future["position"], 2);
    let bad = site
        .run(&["totals", "--as-of", "yesterday"])
        .expect_code(2, "bad --as-of");
    assert!(
        bad.stderr.contains("YYYY-MM-DD") && bad.stderr.contains("RFC 3339"),
        "{}",
        bad.stderr
    );
}

/// Regression: OS errors were printed three times ("Permission denied (os error
/// 13): Permission denied (os error 13): …").
#[test]
fn an_os_error_is_said_once_with_its_path() {
    let site = Site::new();
    site.run(&["init"]).expect_success("init");
    let directory = site.root().join("a-directory.jsonl");
    fs::create_dir(&directory).unwrap();
    let run = site
        .run(&["ingest", directory.to_str().unwrap()])
        .expect_refusal("a-directory.jsonl");
    let error_line = run
        .stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap();
    assert_eq!(error_line.matches("os error").count(), 1, "{error_line}");
    // Before: "cannot create data directory …: Not a directory (os error 20): Not
    // a directory (os error 20)".
    let under_a_file = site.root().join("a-file");
    fs::write(&under_a_file, "").unwrap();
    let run =
        sf2520(&under_a_file.join("data"), ["init"]).expect_refusal("cannot create data directory");
    let error_line = run
        .stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap();
    assert_eq!(error_line.matches("os error").count(), 1, "{error_line}");
}

#[test]
fn a_partial_retry_table_takes_the_defaults() {
    let site = Site::new();
    site.run(&["init"]).expect_success("init");
    let sshd = Sshd::start();
    let config = sshd.write_sf2520_config(site.root(), "[sftp.retry]\nmax_attempts = 2\n");
    let run = site
        .run(&["--config", config.to_str().unwrap(), "config", "check"])
        .expect_success("config check with a partial [sftp.retry]");
    assert!(run.stdout.contains("host key matches"), "{}", run.stdout);
}

/// Every command that reports something has `--json` printing one document.
#[test]
fn every_reporting_command_prints_one_json_document() {
    let site = Site::new();
    site.given_one_entry();
    let input = site.write(
        "more.jsonl",
        &lines(&[withholding("KY-9", "BA1", "0751", "2026-10-02", "2.00")]),
    );
    let backup = site.root().join("backup.sqlite3");
    let backup = backup.to_str().unwrap();
    let outbox_file = || {
        fs::read_dir(site.data().join("outbox"))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .find(|path| path.extension().is_some_and(|e| e == "txt"))
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    let runs: Vec<(Vec<String>, i32)> = vec![
        (vec!["init".into(), "--json".into()], 0),
        (
            vec![
                "ingest".into(),
                "--json".into(),
                input.clone(),
                input.clone(),
            ],
            0,
        ),
        (vec!["totals".into(), "--json".into()], 0),
        (vec!["verify".into(), "--json".into()], 0),
        (vec!["export".into(), "--json".into()], 0),
        (
            vec!["export".into(), "--deliver".into(), "--json".into()],
            7,
        ),
        (vec!["deliver".into(), "--json".into()], 7),
        (vec!["files".into(), "--json".into()], 0),
        (vec!["status".into(), "--json".into()], 0),
        (vec!["config".into(), "check".into(), "--json".into()], 0),
        (
            vec![
                "reconstruct".into(),
                "--kommune".into(),
                "0751".into(),
                "--seq".into(),
                "1".into(),
                "--json".into(),
            ],
            0,
        ),
        (
            vec![
                "reissue".into(),
                "--kommune".into(),
                "0751".into(),
                "--seq".into(),
                "1".into(),
                "--json".into(),
            ],
            0,
        ),
        (vec!["backup".into(), backup.into(), "--json".into()], 0),
        (vec!["restore".into(), backup.into(), "--json".into()], 0),
    ];
    for (args, code) in runs {
        let run = site.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let run = run.expect_code(code, &format!("{args:?}"));
        json(&run.stdout);
    }
    let file = outbox_file();
    let checked = json(
        &site
            .run(&["check", "--json", &file])
            .expect_success("check")
            .stdout,
    );
    assert_eq!(checked["files"][0]["valid"], true);
    json(
        &site
            .run(&["show", "--json", &file])
            .expect_success("show")
            .stdout,
    );
    let demo = Site::new();
    json(
        &demo
            .run(&["demo", "--json"])
            .expect_success("demo --json")
            .stdout,
    );
}

// ---- Another user, and a directory it may not write ----------------------

/// Runs a copy of the binary (that user may not reach `target/`) as `nobody`
/// (uid 65534) on the site's data directory. The suite runs as root, as CI does.
fn as_nobody(site: &Site, args: &[&str]) -> Run {
    use std::os::unix::fs::PermissionsExt;
    // SAFETY: geteuid has no preconditions and cannot fail.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "running a command as another user needs root (scripts/test.sh runs as root)"
    );
    let binary = site.root().join("sf2520-for-nobody");
    if !binary.exists() {
        fs::copy(env!("CARGO_BIN_EXE_sf2520"), &binary).unwrap();
        fs::set_permissions(&binary, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(site.root(), fs::Permissions::from_mode(0o711)).unwrap();
    }
    let output = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&binary)
        .arg("--data-dir")
        .arg(site.data())
        .args(args)
        .current_dir(site.root())
        .env_remove("SF2520_DATA_DIR")
        .env_remove("SF2520_DATABASE_URL")
        .output()
        .unwrap();
    Run::from(output)
}

/// Regression: `status --check` on a data directory it could not read exited 1
/// with a plain error ("cannot read the configuration file …"); a monitor
/// expects its one `SF2520 UNKNOWN - …` line and exit code 3.
#[test]
fn status_check_on_a_data_directory_it_cannot_read_is_unknown() {
    let site = Site::new();
    site.given_one_entry();
    let run = as_nobody(&site, &["status", "--check"]).expect_code(3, "unreadable data directory");
    assert!(
        run.stdout.starts_with("SF2520 UNKNOWN - "),
        "{}",
        run.stdout
    );
    assert_eq!(run.stdout.lines().count(), 1, "{}", run.stdout);
}

/// Regression: a check the monitor could not start as written (an option this
/// version does not know, say, after an upgrade) printed clap's usage error and
/// exited 2, which Nagios reads as CRITICAL about the ledger; and with JSON logs
/// the check's stderr held text. It is the check's one `SF2520 UNKNOWN - …` line
/// and exit code 3, as for everything else that keeps it from looking.
#[test]
fn status_check_is_unknown_whatever_keeps_it_from_looking() {
    let site = Site::new();
    site.given_one_entry();
    for args in [
        &["status", "--check", "--no-such-option"][..],
        &["--log-format", "json", "status", "--check"][..],
        &[
            "--log-format",
            "json",
            "status",
            "--check",
            "--warn-hours",
            "soon",
        ][..],
        &["--config", "/nonexistent/sf2520.toml", "status", "--check"][..],
    ] {
        let run = as_nobody(&site, args).expect_code(3, &format!("{args:?}"));
        assert!(
            run.stdout.starts_with("SF2520 UNKNOWN - "),
            "{args:?}: {}",
            run.stdout
        );
        assert_eq!(run.stdout.lines().count(), 1, "{args:?}: {}", run.stdout);
        if args.contains(&"json") {
            for line in run.stderr.lines() {
                json(line);
            }
        }
    }
}

/// Regression: `ingest` and `export` on a read-only data directory said only
/// "unable to open database file: Error code 14" (or SQLITE_READONLY_DIRECTORY).
#[test]
fn ingest_and_export_on_a_read_only_data_directory_name_it_and_say_what_to_do() {
    use std::os::unix::fs::PermissionsExt;
    let site = Site::new();
    site.given_one_entry();
    let input = site.write(
        "more.jsonl",
        &lines(&[withholding("KY-2", "BA1", "0751", "2026-10-02", "1.00")]),
    );
    fs::set_permissions(&input, fs::Permissions::from_mode(0o644)).unwrap();
    let data = site.data();
    for entry in fs::read_dir(&data).unwrap() {
        std::os::unix::fs::chown(entry.unwrap().path(), Some(65534), Some(65534)).unwrap();
    }
    std::os::unix::fs::chown(&data, Some(65534), Some(65534)).unwrap();
    fs::set_permissions(&data, fs::Permissions::from_mode(0o500)).unwrap();
    for args in [vec!["ingest", input.as_str()], vec!["export"]] {
        let run = as_nobody(&site, &args).expect_code(6, "a read-only data directory");
        assert!(
            run.stderr
                .contains(&format!("{} is read-only", data.display()))
                && run.stderr.contains("chmod 700"),
            "{args:?}: {}",
            run.stderr
        );
        assert!(!run.stderr.contains("Error code"), "{}", run.stderr);
    }
    as_nobody(&site, &["files"]).expect_success("reading still works");
}

/// Regression: `config check` as another user on a 0755 data directory it does
/// not own exited 0, while every other command refused it.
#[test]
fn config_check_refuses_a_data_directory_as_every_other_command_does() {
    use std::os::unix::fs::PermissionsExt;
    let site = Site::new();
    site.given_one_entry();
    fs::set_permissions(site.data(), fs::Permissions::from_mode(0o755)).unwrap();
    let status = as_nobody(&site, &["status"]).expect_code(6, "status as another user");
    assert!(
        status.stderr.contains("belongs to uid 0"),
        "{}",
        status.stderr
    );
    let check =
        as_nobody(&site, &["config", "check"]).expect_code(6, "config check as another user");
    assert!(
        check.stderr.contains("belongs to uid 0"),
        "{}",
        check.stderr
    );
    let own = site
        .run(&["config", "check"])
        .expect_code(6, "config check on a 0755 directory");
    assert!(own.stderr.contains("chmod 700"), "{}", own.stderr);
}

// ---- 7. The data directory: planted links, and what it records ------------

/// An official export of one entry made, and a planted link: `name` in the data
/// directory pointing at `target`.
fn plant(site: &Site, name: &str, target: &Path) {
    std::os::unix::fs::symlink(target, site.data().join(name)).unwrap();
}

/// Regression: `export.lock` and `ledger.writer` planted as links made sf2520
/// overwrite the files they pointed to.
#[test]
fn lock_and_writer_note_planted_as_links_are_never_written_through() {
    let site = Site::new();
    site.given_one_entry();
    let precious = site.root().join("precious.conf");
    fs::write(&precious, "keep me").unwrap();
    fs::remove_file(site.data().join("ledger.writer")).ok();
    plant(&site, "export.lock", &precious);
    plant(&site, "ledger.writer", &precious);
    let run = site.run(&["export"]).expect_refusal("symbolic link");
    assert!(run.stderr.contains("export.lock"), "{}", run.stderr);
    assert_eq!(fs::read_to_string(&precious).unwrap(), "keep me");
    // The writer note is only a note: a write goes on without it, and says so.
    let input = site.write(
        "more.jsonl",
        &lines(&[withholding("KY-2", "BA1", "0751", "2026-10-02", "1.00")]),
    );
    let run = site.run(&["ingest", &input]).expect_success("ingest");
    assert!(
        run.stderr.contains("could not write the writer note"),
        "{}",
        run.stderr
    );
    assert_eq!(fs::read_to_string(&precious).unwrap(), "keep me");
}

/// Regression: `outbox/.quarantine` planted as a link moved a killed run's
/// leftover (with CPRs) into a 0755 directory elsewhere, and `test-files/` as a
/// link made `export --test` write its files there.
#[test]
fn quarantine_and_test_files_planted_as_links_are_refused() {
    let site = Site::new();
    site.given_one_entry();
    site.run(&["export"]).expect_success("the first export");
    let outbox = site.data().join("outbox");
    let marker = fs::read_to_string(outbox.join(".sf2520-outbox")).unwrap();
    let ledger_id = marker.trim().rsplit(' ').next().unwrap().to_string();
    let leftover = format!(".SF2520_0751_20991231_000009.txt.{ledger_id}-deadbeef0002.partial");
    fs::write(outbox.join(&leftover), "half a file with CPRs").unwrap();
    let elsewhere = site.root().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, outbox.join(".quarantine")).unwrap();
    let run = site.run(&["export"]).expect_refusal("symbolic link");
    assert!(run.stderr.contains(".quarantine"), "{}", run.stderr);
    assert!(entries_in(&elsewhere).is_empty(), "moved through the link");
    assert!(outbox.join(&leftover).is_file(), "the leftover stays");

    plant(&site, "test-files", &elsewhere);
    let run = site
        .run(&["export", "--test"])
        .expect_refusal("symbolic link");
    assert!(run.stderr.contains("test-files"), "{}", run.stderr);
    assert!(
        entries_in(&elsewhere).is_empty(),
        "written through the link"
    );
}

/// Regression: `ledger.writer` and the export lock recorded the command line's
/// words: `--log-format json` named the command "json", and a libpq `key=value`
/// database URL (or any value without a '/') was written out whole, password
/// included. They name the subcommand only.
#[test]
fn lock_holders_and_writer_notes_name_the_subcommand_and_no_argument() {
    let site = Site::new();
    site.run(&["init"]).expect_success("init");
    // A value without a '/': the name of a config file in the current directory.
    fs::write(site.root().join("password=hunter2"), "").unwrap();
    let input = site.write(
        "first.jsonl",
        &lines(&[
            agreement("BA1", "0751", CPR, "2026-01-01"),
            withholding("KY-1", "BA1", "0751", "2026-10-01", "100.00"),
        ]),
    );
    let global = ["--log-format", "json", "--config", "password=hunter2"];
    let ingest: Vec<&str> = global.iter().copied().chain(["ingest", &input]).collect();
    site.run(&ingest).expect_success("ingest");
    let note = fs::read_to_string(site.data().join("ledger.writer")).unwrap();
    assert!(note.contains("by `sf2520 ingest` (pid"), "{note}");
    let export: Vec<&str> = global.iter().copied().chain(["export"]).collect();
    site.run(&export).expect_success("export");
    let holder = fs::read_to_string(site.data().join("export.lock")).unwrap();
    assert!(holder.ends_with(": sf2520 export"), "{holder}");
    for text in [note, holder] {
        assert!(
            !text.contains("hunter2") && !text.contains("json"),
            "{text}"
        );
    }
}

/// Regression: `ingest --dry-run` printed `head: POSITION:HASH`, a head that never
/// exists, where auditors collect `^head:` lines; in `--json` it was `"head"`.
#[test]
fn a_dry_run_prints_a_would_be_head_that_cannot_be_taken_for_a_real_one() {
    let site = Site::new();
    site.given_one_entry();
    let input = site.write(
        "second.jsonl",
        &lines(&[withholding("KY-2", "BA1", "0751", "2026-10-01", "5.00")]),
    );
    let run = site
        .run(&["ingest", "--dry-run", &input])
        .expect_success("dry run");
    assert!(
        !run.stdout.lines().any(|line| line.starts_with("head:")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .lines()
            .any(|line| line.starts_with("would-be head: 3:")
                && line.ends_with("(dry run: not in the log)")),
        "{}",
        run.stdout
    );
    let run = site
        .run(&["ingest", "--dry-run", "--json", &input])
        .expect_success("dry run --json");
    let file = &json(&run.stdout)["files"][0];
    assert!(file.get("head").is_none(), "{file}");
    assert!(file.get("head_position").is_none(), "{file}");
    assert_eq!(file["would_be_head_position"], 3, "{file}");
    assert!(file["would_be_head"].as_str().unwrap().starts_with("3:"));
    // The real run still prints `head:`, for the journal.
    let run = site.run(&["ingest", &input]).expect_success("ingest");
    assert!(
        run.stdout.lines().any(|line| line.starts_with("head: 3:")),
        "{}",
        run.stdout
    );
}

/// Regression: `init` told the package's postinst to put the configuration in
/// `/var/lib/sf2520/sf2520.toml` while the units read `/etc/sf2520/sf2520.toml`: it
/// names the configuration the commands actually read (SF2520_CONFIG or
/// `--config`, else `<data-dir>/sf2520.toml`).
#[test]
fn init_names_the_configuration_path_the_commands_read() {
    let site = Site::new();
    let named = site.root().join("etc").join("sf2520.toml");
    let run: Run = command(&site.data(), ["init"])
        .env("SF2520_CONFIG", &named)
        .output()
        .unwrap()
        .into();
    let run = run.expect_success("init with SF2520_CONFIG");
    let expected = format!("put the [sftp] configuration in {}, then", named.display());
    assert!(run.stdout.contains(&expected), "{}", run.stdout);
    let other = site.root().join("other");
    let run = sf2520(&other, ["init", "--json"]).expect_success("init --json");
    assert_eq!(
        json(&run.stdout)["config"],
        other.join("sf2520.toml").display().to_string()
    );
    let third = site.root().join("third");
    let named = site.root().join("third.toml");
    let run = sf2520(&third, ["--config", named.to_str().unwrap(), "init"])
        .expect_success("init --config");
    let expected = format!("put the [sftp] configuration in {}, then", named.display());
    assert!(run.stdout.contains(&expected), "{}", run.stdout);
}

/// Regression: after `ingest --inbox` set a file aside in `rejected/` (exit 3),
/// `status --check` said OK and `metrics` had no inbox series.
#[test]
fn a_rejected_inbox_file_is_a_warning_and_a_metric() {
    let site = Site::new();
    let (inbox, arg) = inbox_with_one_file(&site);
    fs::write(
        inbox.join("b.jsonl"),
        lines(&[withholding("KY-2", "NOPE", "0751", "2026-10-02", "5.00")]),
    )
    .unwrap();
    site.run(&["ingest", "--inbox", &arg])
        .expect_code(3, "an inbox with a rejected file");
    let check = site
        .run(&["status", "--check", "--inbox", &arg])
        .expect_code(1, "status --check with a rejected inbox file");
    assert!(
        check
            .stdout
            .starts_with("SF2520 WARNING - 1 inbox file(s) rejected in "),
        "{}",
        check.stdout
    );
    // Without --inbox, the configuration's `[retention] inbox` names it.
    site.write(
        "data/sf2520.toml",
        &format!("[retention]\ninbox = {:?}\n", inbox.to_str().unwrap()),
    );
    let check = site
        .run(&["status", "--check"])
        .expect_code(1, "status --check, the inbox from the configuration");
    assert!(
        check.stdout.contains("1 inbox file(s) rejected"),
        "{}",
        check.stdout
    );
    let status = json(
        &site
            .run(&["status", "--json"])
            .expect_success("status")
            .stdout,
    );
    assert_eq!(status["inbox"]["rejected"], 1);
    assert_eq!(status["inbox"]["waiting"], 0);
    // A file waiting since long ago (the inbox unit is not running).
    let waiting = inbox.join("c.jsonl");
    fs::write(
        &waiting,
        lines(&[agreement("BA2", "0751", CPR, "2026-01-01")]),
    )
    .unwrap();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(30 * 3600);
    fs::File::options()
        .write(true)
        .open(&waiting)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let metrics = site.run(&["metrics"]).expect_success("metrics").stdout;
    for name in [
        "sf2520_inbox_rejected_files",
        "sf2520_inbox_waiting_files",
        "sf2520_inbox_oldest_waiting_seconds",
    ] {
        assert_eq!(
            metrics.matches(&format!("# HELP {name} ")).count(),
            1,
            "{metrics}"
        );
        assert_eq!(
            metrics.matches(&format!("# TYPE {name} gauge\n")).count(),
            1,
            "{metrics}"
        );
    }
    assert!(
        metrics.contains("\nsf2520_inbox_rejected_files 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("\nsf2520_inbox_waiting_files 1\n"),
        "{metrics}"
    );
    let age: f64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("sf2520_inbox_oldest_waiting_seconds "))
        .unwrap()
        .parse()
        .unwrap();
    assert!((30.0 * 3600.0..31.0 * 3600.0).contains(&age), "{age}");
    let check = site
        .run(&["status", "--check"])
        .expect_code(1, "a file waiting for 30 h");
    assert!(
        check.stdout.contains("1 inbox file(s) waiting in ") && check.stdout.contains("for 30 h"),
        "{}",
        check.stdout
    );
    // Once the rejected file is dealt with and the waiting one taken: OK.
    for name in ["b.jsonl", "b.jsonl.errors.txt", "b.jsonl.errors.json"] {
        fs::remove_file(inbox.join("rejected").join(name)).unwrap();
    }
    site.run(&["ingest", "--inbox", &arg])
        .expect_success("the waiting file");
    let check = site
        .run(&["status", "--check"])
        .expect_code(0, "a clean inbox");
    assert!(check.stdout.starts_with("SF2520 OK - "), "{}", check.stdout);
}

/// Regression: one flipped byte made `verify` exit 4 while `status --check` said
/// OK. `verify` records its outcome in `verify.last`; a damaged one is CRITICAL
/// until a later verify finds the ledger intact.
#[test]
fn a_damaged_verify_makes_status_check_critical_until_a_good_one() {
    let site = Site::new();
    site.given_one_entry();
    site.run(&["status", "--check"])
        .expect_code(0, "no verify ran yet");
    let database = site.data().join(sf2520::ledger::DATABASE_FILE);
    let intact = fs::read(&database).unwrap();
    assert!(tamper_database(&site.data(), b"KY-1") > 0);
    let damaged = site
        .run(&["verify"])
        .expect_code(4, "verify of a tampered ledger");
    assert!(damaged.stdout.contains("DAMAGED"), "{}", damaged.stdout);
    let record = site.data().join("verify.last");
    assert_eq!(mode(&record) & 0o777, 0o600);
    let check = site
        .run(&["status", "--check"])
        .expect_code(2, "status --check after a damaged verify");
    assert!(
        check.stdout.starts_with("SF2520 CRITICAL - verify at ")
            && check.stdout.contains("found the ledger DAMAGED"),
        "{}",
        check.stdout
    );
    let metrics = site.run(&["metrics"]).expect_success("metrics").stdout;
    assert!(metrics.contains("\nsf2520_last_verify_ok 0\n"), "{metrics}");
    fs::write(&database, intact).unwrap();
    site.run(&["verify"])
        .expect_success("verify of the repaired ledger");
    let check = site
        .run(&["status", "--check"])
        .expect_code(0, "status --check after a good verify");
    assert!(check.stdout.starts_with("SF2520 OK - "), "{}", check.stdout);
    let status = json(
        &site
            .run(&["status", "--json"])
            .expect_success("status")
            .stdout,
    );
    assert_eq!(status["last_verify"]["ok"], true);
    // The record is never written through a link planted in its place.
    let target = site.root().join("elsewhere");
    fs::write(&target, "kept").unwrap();
    fs::remove_file(&record).unwrap();
    std::os::unix::fs::symlink(&target, &record).unwrap();
    site.run(&["verify"])
        .expect_success("verify with a planted link");
    assert_eq!(fs::read_to_string(&target).unwrap(), "kept");
    assert!(!fs::symlink_metadata(&record)
        .unwrap()
        .file_type()
        .is_symlink());
}
