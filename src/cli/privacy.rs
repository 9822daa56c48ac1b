//! Personal data in the configuration and on disk: `[privacy] key_file` (which
//! key file seals the ledger's CPRs), `[retention]`, and `sf2520 retention`, which
//! erases what has outlived the bookkeeping period (decision 0010).

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use serde::Deserialize;
use serde_json::json;

use crate::domain::{Cpr, FileRef};
use crate::ledger::{FileExpiry, Ledger, RetentionPlan, RetentionRule};

use super::deliver::config_path;
use super::exit::Exit;
use super::RetentionArgs;

/// The parts of the configuration file this module reads.
#[derive(Deserialize, Default)]
struct ConfigFile {
    privacy: Option<PrivacySection>,
    retention: Option<RetentionSection>,
}

/// `[privacy]`: where the key file is.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PrivacySection {
    /// Relative to the configuration file's directory.
    key_file: PathBuf,
}

/// `[retention]`: how long personal data and files are kept.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionSection {
    /// Full financial years kept after the last one (the bookkeeping period).
    #[serde(default = "default_years")]
    years: u32,
    /// Days test files, quarantined files and the inbox's batches are kept.
    #[serde(default = "default_scratch_days")]
    scratch_days: u32,
    /// KY's inbox (`ingest --inbox DIR`), whose `archive/` and `rejected/` hold
    /// KY's lines as sent, CPRs included.
    inbox: Option<PathBuf>,
}

impl Default for RetentionSection {
    fn default() -> Self {
        RetentionSection {
            years: default_years(),
            scratch_days: default_scratch_days(),
            inbox: None,
        }
    }
}

fn default_years() -> u32 {
    5
}

fn default_scratch_days() -> u32 {
    90
}

/// The configuration file's privacy sections; none when there is no file (a
/// missing or unreadable one is reported by the command that needs the rest).
fn read_config(data_dir: &Path, config: Option<&Path>) -> anyhow::Result<(ConfigFile, PathBuf)> {
    let path = config_path(data_dir, config);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(_) => return Ok((ConfigFile::default(), path)),
    };
    let parsed: ConfigFile =
        toml::from_str(&text).map_err(|error| crate::transport::ConfigError::Parse {
            path: path.clone(),
            message: format!("[privacy] or [retention]: {}", error.message()),
        })?;
    Ok((parsed, path))
}

/// The key file this process's ledgers use: `--key-file` (or `SF2520_KEY_FILE`),
/// else `[privacy] key_file`, else `None` (the data directory's `ledger.kek`).
pub(super) fn key_file(
    data_dir: &Path,
    config: Option<&Path>,
    given: Option<&Path>,
) -> anyhow::Result<Option<PathBuf>> {
    if let Some(path) = given {
        return Ok(Some(path.to_path_buf()));
    }
    let (parsed, path) = read_config(data_dir, config)?;
    Ok(parsed.privacy.map(|privacy| {
        let base = path.parent().unwrap_or(Path::new("."));
        base.join(privacy.key_file)
    }))
}

/// `[retention] inbox`, the inbox whose `archive/` and `rejected/` retention prunes
/// and `status` and `metrics` report on; `None` without one, or when the
/// configuration cannot be read or parsed (the commands that need it say why).
pub(super) fn configured_inbox(data_dir: &Path, config: Option<&Path>) -> Option<PathBuf> {
    read_config(data_dir, config).ok()?.0.retention?.inbox
}

/// What `retention` removes from the disk, beside the ledger.
#[derive(Default)]
struct Removals {
    /// Official files' outbox copies, with their kommune and løbenummer.
    outbox: Vec<(FileRef, PathBuf)>,
    /// Archived receipts of the files that expired.
    receipts: Vec<PathBuf>,
    /// Test files, quarantined files, the inbox's batches, with why.
    scratch: Vec<(PathBuf, &'static str)>,
}

pub(super) fn run_retention(
    data_dir: &Path,
    config: Option<&Path>,
    args: &RetentionArgs,
) -> anyhow::Result<ExitCode> {
    let settings = read_config(data_dir, config)?
        .0
        .retention
        .unwrap_or_default();
    let today = chrono::Utc::now().date_naive();
    let as_of = args.as_of.unwrap_or(today);
    if args.apply && as_of > today {
        super::logging::to_stderr(
            tracing::Level::ERROR,
            &format!(
                "--as-of {as_of} is after today ({today}); retention is applied as of today \
                 or an earlier date, never ahead of time. Nothing was changed"
            ),
        );
        return Ok(Exit::InputRejected.into());
    }
    let rule = RetentionRule {
        as_of,
        years: settings.years,
    };
    let mut ledger = Ledger::open_existing(data_dir)?;
    if !ledger.seals_personal_data()? {
        anyhow::bail!(
            "the ledger at {} holds plain CPRs (it was written before sealing), so retention \
             cannot erase them by destroying keys; seal it first (docs/operations.md, \"Sealing \
             an older ledger\"). Nothing was changed",
            data_dir.display()
        );
    }
    // No export writes the outbox while files leave it.
    let _exports = match args.apply {
        true => Some(ledger.lock_exports(Duration::from_secs(60))?),
        false => None,
    };
    let plan = ledger.retention_plan(rule)?;
    let removals = find_removals(data_dir, &plan, &settings)?;
    let mut applied = None;
    if args.apply {
        remove_all(&removals)?;
        let agreements: Vec<_> = plan
            .agreements
            .iter()
            .map(|a| a.agreement.clone())
            .collect();
        let files: Vec<FileRef> = removals.outbox.iter().map(|(file, _)| *file).collect();
        applied = Some(ledger.apply_retention(rule, &agreements, &files)?);
        tracing::info!(
            command = "retention",
            agreements = agreements.len(),
            files = files.len(),
            position = applied,
            "personal data erased under retention"
        );
    }
    let mut out = io::stdout().lock();
    if args.json {
        writeln!(out, "{}", plan_json(&plan, &removals, applied))?;
    } else {
        print_plan(&mut out, &plan, &removals, applied, args.apply)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The files on disk the plan removes: outbox copies that are there, their
/// receipts, and scratch files that are old or hold an erased CPR.
fn find_removals(
    data_dir: &Path,
    plan: &RetentionPlan,
    settings: &RetentionSection,
) -> anyhow::Result<Removals> {
    let mut removals = Removals::default();
    let outbox = data_dir.join("outbox");
    let receipts = list_regular(&data_dir.join("receipts"))?;
    for (file, _) in &plan.files {
        let copy = outbox.join(&file.file_name);
        if is_regular(&copy) {
            let reference = FileRef {
                kommune: file.kommune,
                sequence: file.sequence,
            };
            removals.outbox.push((reference, copy));
        }
        let prefix = format!("{}.", file.file_name);
        removals.receipts.extend(
            receipts
                .iter()
                .filter(|path| file_name_starts(path, &prefix))
                .cloned(),
        );
    }
    let cprs: HashSet<[u8; 10]> = plan.agreements.iter().map(|a| digits(&a.cpr)).collect();
    let days = u64::from(settings.scratch_days);
    let as_of = plan
        .rule
        .as_of
        .and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc();
    let seconds = u64::try_from(as_of.timestamp()).context("--as-of lies before 1970")?;
    let as_of = SystemTime::UNIX_EPOCH + Duration::from_secs(seconds);
    let cutoff = as_of
        .checked_sub(Duration::from_secs(days * 86_400))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut dirs = vec![
        data_dir.join("test-files"),
        outbox.join(crate::export::outbox::QUARANTINE_DIR),
    ];
    if let Some(inbox) = &settings.inbox {
        dirs.extend([inbox.join("archive"), inbox.join("rejected")]);
    }
    for dir in dirs {
        for path in list_regular(&dir)? {
            if let Some(why) = scratch_reason(&path, cutoff, &cprs)? {
                removals.scratch.push((path, why));
            }
        }
    }
    Ok(removals)
}

fn digits(cpr: &Cpr) -> [u8; 10] {
    let mut out = [0u8; 10];
    out.copy_from_slice(cpr.digits().as_bytes());
    out
}

fn is_regular(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|meta| meta.is_file())
}

fn file_name_starts(path: &Path, prefix: &str) -> bool {
    path.file_name()
        .and_then(|name| name.to_str())
        .is_some_and(|name| name.starts_with(prefix))
}

/// The regular files directly in `dir` (none if it does not exist); links and
/// anything else are never followed.
fn list_regular(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error).with_context(|| format!("cannot list {}", dir.display())),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        if entry.file_type().is_ok_and(|kind| kind.is_file()) {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// Why a scratch file goes: older than the cut-off, or holding an erased CPR.
fn scratch_reason(
    path: &Path,
    cutoff: SystemTime,
    cprs: &HashSet<[u8; 10]>,
) -> anyhow::Result<Option<&'static str>> {
    let meta =
        fs::symlink_metadata(path).with_context(|| format!("cannot inspect {}", path.display()))?;
    if meta.modified().is_ok_and(|modified| modified < cutoff) {
        return Ok(Some("older than [retention] scratch_days"));
    }
    if !cprs.is_empty() && holds_any(path, cprs)? {
        return Ok(Some("holds the CPR of an agreement erased now"));
    }
    Ok(None)
}

/// Whether the file holds any of `cprs` as ten consecutive bytes, read in blocks.
fn holds_any(path: &Path, cprs: &HashSet<[u8; 10]>) -> anyhow::Result<bool> {
    let mut file =
        fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut buffer = vec![0u8; 1 << 20];
    let mut carried = 0;
    loop {
        let read = file
            .read(&mut buffer[carried..])
            .with_context(|| format!("cannot read {}", path.display()))?;
        let filled = carried + read;
        if buffer[..filled]
            .windows(10)
            .any(|window| window[0].is_ascii_digit() && cprs.contains(window))
        {
            return Ok(true);
        }
        if read == 0 {
            return Ok(false);
        }
        // The last nine bytes may begin a CPR that the next block ends.
        carried = filled.min(9);
        buffer.copy_within(filled - carried..filled, 0);
    }
}

/// Removes every file of `removals`, then makes the removals durable.
fn remove_all(removals: &Removals) -> anyhow::Result<()> {
    let paths = removals
        .outbox
        .iter()
        .map(|(_, path)| path)
        .chain(&removals.receipts)
        .chain(removals.scratch.iter().map(|(path, _)| path));
    let mut dirs = HashSet::new();
    for path in paths {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => {
                return Err(error).with_context(|| {
                    format!(
                        "cannot remove {}; nothing was erased in the ledger",
                        path.display()
                    )
                })
            }
        }
        if let Some(dir) = path.parent() {
            dirs.insert(dir.to_path_buf());
        }
    }
    for dir in dirs {
        fs::File::open(&dir)
            .and_then(|handle| handle.sync_all())
            .with_context(|| format!("cannot make the removals in {} durable", dir.display()))?;
    }
    Ok(())
}

fn expiry_text(expiry: &FileExpiry) -> String {
    match expiry {
        FileExpiry::OwnRetention => "its financial year is past retention".to_string(),
        FileExpiry::HoldsErased(agreements) => format!(
            "holds entries of erased agreement(s) {}",
            agreements
                .iter()
                .map(|a| a.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn plan_json(plan: &RetentionPlan, removals: &Removals, applied: Option<u64>) -> serde_json::Value {
    let on_disk: HashSet<(u16, u32)> = removals
        .outbox
        .iter()
        .map(|(file, _)| (file.kommune.number(), file.sequence))
        .collect();
    json!({
        "as_of": plan.rule.as_of.to_string(),
        "retention_years": plan.rule.years,
        "applied": applied.is_some(),
        "event_position": applied,
        "agreements": plan.agreements.iter().map(|a| json!({
            "agreement": a.agreement.as_str(), "kommune": a.kommune.code(),
            "last_financial_year": a.last_year,
        })).collect::<Vec<_>>(),
        "files": plan.files.iter().map(|(file, expiry)| json!({
            "kommune": file.kommune.code(), "sequence": file.sequence,
            "file_name": file.file_name, "why": expiry_text(expiry),
            "outbox_copy": on_disk.contains(&(file.kommune.number(), file.sequence)),
        })).collect::<Vec<_>>(),
        "receipts": removals.receipts.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "scratch": removals.scratch.iter().map(|(p, why)| json!({
            "path": p.display().to_string(), "why": why,
        })).collect::<Vec<_>>(),
    })
}

fn print_plan(
    out: &mut dyn Write,
    plan: &RetentionPlan,
    removals: &Removals,
    applied: Option<u64>,
    apply: bool,
) -> io::Result<()> {
    let verb = if applied.is_some() {
        "erased"
    } else {
        "would be erased"
    };
    writeln!(
        out,
        "retention as of {}: personal data kept {} full financial year(s) after the last one",
        plan.rule.as_of, plan.rule.years
    )?;
    writeln!(
        out,
        "agreements whose personal data {verb}: {}",
        plan.agreements.len()
    )?;
    for a in &plan.agreements {
        writeln!(
            out,
            "  {} (kommune {}, last financial year {})",
            a.agreement, a.kommune, a.last_year
        )?;
    }
    writeln!(out, "official files past retention: {}", plan.files.len())?;
    for (file, expiry) in &plan.files {
        writeln!(out, "  {}: {}", file.file_name, expiry_text(expiry))?;
    }
    let removed = if applied.is_some() {
        "removed"
    } else {
        "to remove"
    };
    writeln!(out, "outbox copies {removed}: {}", removals.outbox.len())?;
    writeln!(
        out,
        "archived receipts {removed}: {}",
        removals.receipts.len()
    )?;
    writeln!(
        out,
        "test, quarantined and inbox files {removed}: {}",
        removals.scratch.len()
    )?;
    for (path, why) in &removals.scratch {
        writeln!(out, "  {} ({why})", path.display())?;
    }
    match applied {
        Some(position) => writeln!(
            out,
            "recorded as RetentionApplied at position {position}; the files register, totals and \
             the hash chain are unchanged"
        ),
        None if apply => writeln!(out, "nothing new to erase in the ledger; no event recorded"),
        None => writeln!(
            out,
            "dry run: nothing was changed; run with --apply to erase"
        ),
    }
}
