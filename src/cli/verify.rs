//! `sf2520 verify`: the hash chain, the projections against a replay, the heads the
//! operator anchored (plain or in signed checkpoints), and the outbox against the
//! `FileExported` events. `sf2520 checkpoint`: a signed head.

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::bail;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::audit::checkpoint::{parse_public_key, verify_checkpoint, CheckpointError};
use crate::audit::{read_anchors, verify, Anchor, AuditChecks};
use crate::export::default_outbox;
use crate::ledger::{read_small_file, replace_small_file, Ledger, VERIFY_RECORD_FILE};

use super::exit::Exit;
use super::output::for_terminal;
use super::{CheckpointArgs, VerifyArgs};
use crate::audit::checkpoint::{load_config, load_key, public_key_hex, sign};
use crate::export::outbox::write_bytes_atomically;

/// The checks `args` ask for: anchors from the flags and the file, and the outbox
/// (`--outbox DIR`, else the data directory's default outbox if it exists).
fn checks(data_dir: &Path, args: &VerifyArgs) -> anyhow::Result<AuditChecks> {
    let mut anchors: Vec<Anchor> = args.expect_head.clone();
    for path in &args.expect_heads {
        anchors.extend(read_anchors(path).map_err(anyhow::Error::msg)?);
    }
    if !args.checkpoint.is_empty() {
        let Some(public_key) = &args.public_key else {
            bail!("--checkpoint needs --public-key HEX: the key you trust, not the one the file names");
        };
        let trusted = parse_public_key(public_key)?;
        for path in &args.checkpoint {
            anchors.push(verify_checkpoint(path, &trusted)?);
        }
    }
    let outbox = match &args.outbox {
        Some(dir) if !dir.is_dir() => bail!(
            "--outbox {} is not a directory; name the directory the official files were exported into",
            dir.display()
        ),
        Some(dir) => Some(dir.clone()),
        None if args.no_outbox => None,
        None => Some(default_outbox(data_dir)).filter(|dir| dir.is_dir()),
    };
    Ok(AuditChecks { anchors, outbox })
}

/// What `verify` says of the ledger's personal data: files retention removed
/// (not missing), and a warning while events hold plain CPRs.
fn print_privacy(out: &mut dyn Write, report: &crate::ledger::VerifyReport) -> io::Result<()> {
    if !report.retired.is_empty() {
        writeln!(
            out,
            "ok: {} official file(s) left the outbox under retention (RetentionApplied); the \
             register keeps their SHA-256",
            report.retired.len()
        )?;
    }
    if report.plain_cprs > 0 {
        writeln!(
            out,
            "warning: {} event(s) hold a CPR in plain: this ledger was written before CPRs were \
             sealed. Seal it with `sf2520 seal --to DIR` (docs/operations.md, \"Sealing an older \
             ledger\")",
            report.plain_cprs
        )?;
    }
    Ok(())
}

/// What the last `sf2520 verify` found, as it wrote it into the data
/// directory's [`VERIFY_RECORD_FILE`] for `status --check`.
#[derive(Serialize, Deserialize)]
pub(super) struct VerifyRecord {
    /// When it ran (µs since the epoch).
    pub at_us: i64,
    pub ok: bool,
    /// How many problems it found, and the first.
    pub problems: usize,
    pub first_problem: Option<String>,
}

impl VerifyRecord {
    /// The record in `data_dir`: `None` when no verify ran there; an error says
    /// why the record cannot be read.
    pub(super) fn read(data_dir: &Path) -> Option<Result<VerifyRecord, String>> {
        let path = data_dir.join(VERIFY_RECORD_FILE);
        match read_small_file(data_dir, VERIFY_RECORD_FILE) {
            Ok(None) => None,
            Ok(Some(text)) => Some(
                serde_json::from_str(&text)
                    .map_err(|error| format!("{} is not a verify record: {error}", path.display())),
            ),
            Err(error) => Some(Err(error.to_string())),
        }
    }

    /// Records `problems` (none: the ledger passed) as the last verify's
    /// outcome. A data directory this user cannot write (an auditor's copy) is
    /// said on stderr and changes nothing else.
    fn write(data_dir: &Path, problems: &[String]) {
        let record = VerifyRecord {
            at_us: chrono::Utc::now().timestamp_micros(),
            ok: problems.is_empty(),
            problems: problems.len(),
            first_problem: problems.first().cloned(),
        };
        let text = format!("{}\n", json!(record));
        if let Err(error) = replace_small_file(data_dir, VERIFY_RECORD_FILE, text.as_bytes()) {
            super::logging::to_stderr(
                tracing::Level::WARN,
                &format!(
                    "the outcome was not recorded for `status --check`: {}",
                    for_terminal(&error.to_string())
                ),
            );
        }
    }
}

pub(super) fn run(data_dir: &Path, args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let checks = checks(data_dir, args)?;
    let ledger = Ledger::open_read_only(data_dir)?;
    let verification = verify(&ledger, &checks)?;
    VerifyRecord::write(data_dir, &verification.problems());
    let mut out = io::stdout().lock();
    let head = Anchor::of(&ledger.head()?);
    if args.json {
        writeln!(
            out,
            "{}",
            json!({
                "ok": verification.passed(), "head": head.to_string(),
                "anchors_checked": checks.anchors.len(),
                "outbox": verification.outbox_checked.as_ref().map(|dir| dir.display().to_string()),
                "problems": verification.problems(),
                "plain_cpr_events": verification.ledger.as_ref().map_or(0, |r| r.plain_cprs),
                "files_removed_under_retention": verification.ledger.as_ref().map_or(0, |r| r.retired.len()),
            })
        )?;
    } else if verification.passed() {
        let report = verification.ledger.as_ref().expect("passed");
        writeln!(
            out,
            "ok: {} event(s), hash chain intact, {} projection row(s) equal a replay",
            report.events, report.projection_rows
        )?;
        writeln!(out, "head: {head}")?;
        if !checks.anchors.is_empty() {
            writeln!(
                out,
                "ok: the log still holds all {} expected head(s)",
                checks.anchors.len()
            )?;
        }
        match &verification.outbox_checked {
            Some(dir) => writeln!(
                out,
                "ok: all {} official file(s) in {} have the SHA-256 of their FileExported event",
                report.files.len(),
                dir.display()
            )?,
            None => writeln!(out, "outbox: not checked (no outbox directory)")?,
        }
        print_privacy(&mut out, report)?;
    } else {
        for problem in verification.problems() {
            writeln!(out, "DAMAGED: {problem}")?;
        }
    }
    Ok(if verification.passed() {
        ExitCode::SUCCESS
    } else {
        Exit::LedgerDamaged.into()
    })
}

/// `sf2520 checkpoint`: signs the current head with the `[audit] signing_key`.
pub(super) fn run_checkpoint(
    data_dir: &Path,
    config: Option<&Path>,
    args: &CheckpointArgs,
) -> anyhow::Result<ExitCode> {
    let path = super::deliver::config_path(data_dir, config);
    let audit = load_config(&path)?;
    let Some(key_path) = audit.signing_key else {
        return Err(CheckpointError::Config {
            path,
            message: "has no [audit] signing_key: add `signing_key = \"PATH\"` naming an ed25519 \
                      key in PKCS#8 DER (`openssl genpkey -algorithm ed25519 -outform DER -out PATH`)"
                .into(),
        }
        .into());
    };
    let key = load_key(&key_path)?;
    let ledger = Ledger::open_read_only(data_dir)?;
    let head = Anchor::of(&ledger.witness_head()?);
    let made = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let text = sign(&key, &head, &made);
    let Some(name) = args.out.file_name().and_then(|name| name.to_str()) else {
        bail!("--out {} is not a file name", args.out.display());
    };
    let dir = match args.out.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    write_bytes_atomically(dir, name, text.as_bytes())?;
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "checkpoint: head {head} signed into {}\npublic key {} (give this to auditors: `sf2520 verify --checkpoint FILE --public-key KEY`)",
        args.out.display(),
        public_key_hex(&key)
    )?;
    Ok(ExitCode::SUCCESS)
}
