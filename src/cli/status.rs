//! `sf2520 status [--json] [--check]`: the operator's one screen, and a check in
//! the monitoring-plugin convention (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN).
//!
//! The facts are gathered once ([`Snapshot`]) from the files register and the
//! ledger's head; `metrics` prints the same facts for Prometheus.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use serde_json::{json, Value};

use crate::export::{default_outbox, files_in_scope, DeliverRequest};
use crate::ledger::{DeliveryState, Head, Ledger, OfficialFile, Replication};
use crate::transport::load;

use super::deliver::config_path;
use super::inbox_state::{self, inbox_dir, InboxState};
use super::output::{for_terminal, hex, time_us};
use super::verify::VerifyRecord;
use super::StatusArgs;

/// One official file and where it stands.
pub(super) struct FileStatus {
    pub file: OfficialFile,
    pub state: DeliveryState,
}

impl FileStatus {
    /// The state's name without details: exported, uploaded, accepted, rejected, reissued.
    pub(super) fn state_name(&self) -> &'static str {
        state_name(&self.state)
    }

    /// Not accepted and not rejected: delivery still has work to do.
    pub(super) fn pending(&self) -> bool {
        !matches!(
            self.state,
            DeliveryState::Accepted | DeliveryState::Rejected { .. }
        )
    }
}

/// Kommuner whose last file is not accepted that the screen lists by name.
const BEHIND_SHOWN: usize = 10;

pub(super) const STATE_NAMES: [&str; 5] =
    ["exported", "uploaded", "accepted", "rejected", "reissued"];

pub(super) fn state_name(state: &DeliveryState) -> &'static str {
    match state {
        DeliveryState::Exported => "exported",
        DeliveryState::Uploaded { .. } => "uploaded",
        DeliveryState::Accepted => "accepted",
        DeliveryState::Rejected { .. } => "rejected",
        DeliveryState::Reissued => "reissued",
    }
}

/// Whether delivery is configured, and if the configuration can be read.
pub(super) enum ConfigState {
    /// No config file at the default place: files stay in the local outbox.
    Absent,
    /// A config file without `[sftp]`.
    NoSftp,
    /// `[sftp]` present and valid: delivery to this address.
    Sftp { address: String },
    /// The file cannot be read or is invalid (the message says why).
    Invalid { message: String },
}

/// Everything `status` and `metrics` report, read once.
pub(super) struct Snapshot {
    pub head: Head,
    pub files: Vec<FileStatus>,
    pub config: ConfigState,
    pub config_path: String,
    /// Files not yet accepted that were published into `<data-dir>/outbox` and
    /// are no longer there, newest first (decision 0007: never put back by an
    /// export). Empty when that outbox does not exist.
    pub left_outbox: Vec<OfficialFile>,
    /// KY's inbox as listed now, if one is named (`--inbox` or `[retention]
    /// inbox`); the error says what could not be listed.
    pub inbox: Option<Result<InboxState, String>>,
    /// What the last `sf2520 verify` recorded (`verify.last`), if one ran here.
    pub last_verify: Option<Result<VerifyRecord, String>>,
    /// On PostgreSQL: the primary's standbys and whether a synchronous one is
    /// required; the error says what could not be read.
    pub replication: Option<Result<(Replication, bool), String>>,
}

/// A verify older than this is a WARNING (the timer runs it weekly).
const VERIFY_STALE_DAYS: i64 = 8;

/// Missing-file names the check line quotes.
const LEFT_OUTBOX_SHOWN: usize = 5;

/// The pending files among `files` that are missing from `outbox`, newest first.
fn left_outbox(files: &[FileStatus], outbox: &Path) -> Vec<OfficialFile> {
    if !outbox.is_dir() {
        return Vec::new();
    }
    let mut missing: Vec<OfficialFile> = files
        .iter()
        .filter(|file| file.pending())
        .filter(|file| {
            matches!(
                std::fs::symlink_metadata(outbox.join(&file.file.file_name)),
                Err(error) if error.kind() == io::ErrorKind::NotFound
            )
        })
        .map(|file| file.file.clone())
        .collect();
    missing.sort_by_key(|file| std::cmp::Reverse(file.position));
    missing
}

impl Snapshot {
    pub(super) fn read(
        ledger: &Ledger,
        data_dir: &Path,
        named: Option<&Path>,
        inbox: Option<&Path>,
    ) -> anyhow::Result<Snapshot> {
        let head = ledger.head()?;
        let files: Vec<FileStatus> = files_in_scope(ledger, &DeliverRequest::default())?
            .into_iter()
            .map(|(file, status)| FileStatus {
                file,
                state: status.state,
            })
            .collect();
        let left_outbox = left_outbox(&files, &default_outbox(data_dir));
        let path = config_path(data_dir, named);
        let config = if named.is_none() && !path.exists() {
            ConfigState::Absent
        } else {
            match load(&path) {
                Ok(None) => ConfigState::NoSftp,
                Ok(Some(sftp)) => ConfigState::Sftp {
                    address: sftp.address(),
                },
                Err(error) => ConfigState::Invalid {
                    message: error.to_string(),
                },
            }
        };
        Ok(Snapshot {
            head,
            files,
            config,
            config_path: path.display().to_string(),
            left_outbox,
            inbox: inbox_dir(data_dir, named, inbox).map(|dir| inbox_state::read(&dir)),
            last_verify: VerifyRecord::read(data_dir),
            replication: ledger.replication().map_err(|e| e.to_string()).transpose(),
        })
    }

    /// Files per state name (every state listed, zeros included).
    pub(super) fn counts(&self) -> BTreeMap<&'static str, usize> {
        let mut counts: BTreeMap<&'static str, usize> =
            STATE_NAMES.iter().map(|name| (*name, 0)).collect();
        for file in &self.files {
            *counts.entry(file.state_name()).or_default() += 1;
        }
        counts
    }

    /// The time of the newest official file (µs), if any.
    pub(super) fn last_export_us(&self) -> Option<i64> {
        self.files.iter().map(|f| f.file.created_at_us).max()
    }

    /// The oldest file still on its way (exported, uploaded or reissued).
    pub(super) fn oldest_pending(&self) -> Option<&FileStatus> {
        self.files
            .iter()
            .filter(|f| f.pending())
            .min_by_key(|f| f.file.created_at_us)
    }

    pub(super) fn rejected(&self) -> impl Iterator<Item = &FileStatus> {
        self.files
            .iter()
            .filter(|f| matches!(f.state, DeliveryState::Rejected { .. }))
    }

    /// The last file of each kommune that has one, by kommune.
    pub(super) fn last_per_kommune(&self) -> Vec<&FileStatus> {
        let mut last: BTreeMap<u16, &FileStatus> = BTreeMap::new();
        for file in &self.files {
            let entry = last.entry(file.file.kommune.number()).or_insert(file);
            if file.file.sequence > entry.file.sequence {
                *entry = file;
            }
        }
        last.into_values().collect()
    }

    fn delivery_configured(&self) -> bool {
        matches!(self.config, ConfigState::Sftp { .. })
    }
}

/// The verdict of `status --check`, in the monitoring-plugin convention.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Verdict {
    Ok = 0,
    Warning = 1,
    Critical = 2,
    Unknown = 3,
}

impl Verdict {
    fn label(self) -> &'static str {
        match self {
            Verdict::Ok => "OK",
            Verdict::Warning => "WARNING",
            Verdict::Critical => "CRITICAL",
            Verdict::Unknown => "UNKNOWN",
        }
    }

    fn exit_code(self) -> ExitCode {
        ExitCode::from(match self {
            Verdict::Ok => 0,
            Verdict::Warning => 1,
            Verdict::Critical => 2,
            Verdict::Unknown => 3,
        })
    }
}

/// The verdict and the reasons for it (worst first), as of `now_us`.
pub(super) fn judge(snapshot: &Snapshot, args: &StatusArgs, now_us: i64) -> (Verdict, Vec<String>) {
    let mut findings: Vec<(Verdict, String)> = Vec::new();
    for file in snapshot.rejected() {
        findings.push((
            Verdict::Critical,
            format!(
                "{} rejected ({}) and not reissued",
                file.file.file_name,
                for_terminal(&file.state.label())
            ),
        ));
    }
    if let ConfigState::Invalid { message } = &snapshot.config {
        let message = for_terminal(message);
        findings.push((Verdict::Critical, format!("configuration: {message}")));
    }
    let hours = |limit: u32| i64::from(limit) * 3_600_000_000;
    let pending: Vec<&FileStatus> = snapshot.files.iter().filter(|f| f.pending()).collect();
    if let Some(oldest) = snapshot.oldest_pending() {
        // A file is dated up to a second after its export fixed the cut-off
        // (decision 0007): one "from the future" has waited for no time yet.
        let age_us = now_us.saturating_sub(oldest.file.created_at_us).max(0);
        let age_hours = age_us / 3_600_000_000;
        let what = format!(
            "{} file(s) not yet accepted; the oldest, {}, is {} ({age_hours} h old)",
            pending.len(),
            oldest.file.file_name,
            for_terminal(&oldest.state.label())
        );
        if age_us >= hours(args.critical_hours) {
            findings.push((
                Verdict::Critical,
                format!("{what}, over {} h", args.critical_hours),
            ));
        } else if age_us >= hours(args.warn_hours) {
            findings.push((
                Verdict::Warning,
                format!("{what}, over {} h", args.warn_hours),
            ));
        }
        let waiting = pending.len().saturating_sub(snapshot.left_outbox.len());
        if !snapshot.delivery_configured() && waiting > 0 {
            findings.push((
                Verdict::Warning,
                format!(
                    "{waiting} file(s) wait in the outbox and delivery is not configured ({})",
                    snapshot.config_path
                ),
            ));
        }
    }
    if let Some(finding) = left_outbox_finding(&snapshot.left_outbox) {
        findings.push((Verdict::Warning, finding));
    }
    findings.extend(verify_finding(snapshot, now_us));
    findings.extend(replication_finding(snapshot));
    let inbox = inbox_findings(snapshot.inbox.as_ref(), now_us, hours(args.warn_hours));
    findings.extend(inbox.into_iter().map(|finding| (Verdict::Warning, finding)));
    findings.sort_by_key(|(verdict, _)| std::cmp::Reverse(*verdict));
    let verdict = findings
        .first()
        .map_or(Verdict::Ok, |(verdict, _)| *verdict);
    (
        verdict,
        findings.into_iter().map(|(_, text)| text).collect(),
    )
}

/// A PostgreSQL ledger that requires a synchronous standby and has none: CRITICAL
/// (writes are refused until one is attached; decision 0011).
fn replication_finding(snapshot: &Snapshot) -> Option<(Verdict, String)> {
    match snapshot.replication.as_ref()? {
        Ok((replication, true)) => replication.shortfall().map(|why| {
            (
                Verdict::Critical,
                format!("database: {}; writes are refused", for_terminal(&why)),
            )
        }),
        Ok((_, false)) => None,
        Err(error) => Some((
            Verdict::Warning,
            format!(
                "database: cannot read the primary's replication: {}",
                for_terminal(error)
            ),
        )),
    }
}

/// Whether `error` is a database that lacks history this node acknowledged
/// (exit 10): not "cannot look" but the worst finding there is.
fn history_lost(error: &anyhow::Error) -> bool {
    matches!(
        error.downcast_ref::<crate::ledger::LedgerError>(),
        Some(
            crate::ledger::LedgerError::BehindMark(_) | crate::ledger::LedgerError::MarkMismatch(_)
        )
    )
}

/// The replication line of `status` (PostgreSQL only).
fn replication_line(replication: &Result<(Replication, bool), String>) -> String {
    match replication {
        Ok((replication, required)) => {
            let promise = match replication.shortfall() {
                None => "synchronous: a committed write is on a standby".to_string(),
                Some(why) => format!("NOT synchronous: {why}"),
            };
            format!(
                "{promise}; standbys: {}; synchronous standby {}",
                for_terminal(&replication.describe_standbys()),
                if *required {
                    "required"
                } else {
                    "not required"
                }
            )
        }
        Err(error) => format!("cannot be read: {}", for_terminal(error)),
    }
}

/// For `status --check`, a run that cannot read what it reports on (the data
/// directory, the configuration, the ledger) prints its one UNKNOWN line and
/// exits 3, as a monitor expects; any other command fails with `error`.
pub(super) fn unknown_if_checking(
    command: &super::Command,
    data_dir: &Path,
    error: anyhow::Error,
) -> anyhow::Result<ExitCode> {
    match command {
        super::Command::Status(args) if args.check => Ok(unknown(data_dir, &error)),
        _ => Err(error),
    }
}

/// `status --check` with a command line clap refused (an option this version
/// does not know, a typo in the monitor's configuration): the check's one
/// `SF2520 UNKNOWN - …` line and exit code 3, as for anything else that keeps it
/// from looking, rather than clap's usage error and exit code 2.
pub(super) fn unknown_command_line(problem: &str) -> ExitCode {
    println!(
        "SF2520 UNKNOWN - cannot run the check: {}",
        for_terminal(problem)
    );
    Verdict::Unknown.exit_code()
}

/// Prints `SF2520 UNKNOWN - …` for `error`; when the data directory itself is
/// not this user's to read (another owner, open to others), that is said first,
/// since it is the cause of whatever else failed.
fn unknown(data_dir: &Path, error: &anyhow::Error) -> ExitCode {
    let cause = match crate::ledger::check_private_dir(data_dir) {
        Err(refusal) if data_dir.is_dir() => super::error_text(&refusal.into()),
        _ => super::error_text(error),
    };
    println!(
        "SF2520 UNKNOWN - cannot read the ledger: {}",
        crate::domain::mask_in_text(&cause)
    );
    Verdict::Unknown.exit_code()
}

/// The last `sf2520 verify`: CRITICAL when it found the ledger damaged,
/// WARNING when it ran more than [`VERIFY_STALE_DAYS`] ago or its record
/// cannot be read; nothing when none ran here.
fn verify_finding(snapshot: &Snapshot, now_us: i64) -> Option<(Verdict, String)> {
    let record = match snapshot.last_verify.as_ref()? {
        Ok(record) => record,
        Err(message) => {
            let message = for_terminal(message);
            return Some((Verdict::Warning, format!("last verify: {message}")));
        }
    };
    if !record.ok {
        let first = record.first_problem.as_deref().unwrap_or_default();
        return Some((
            Verdict::Critical,
            format!(
                "verify at {} found the ledger DAMAGED ({} problem(s)): {}; run `sf2520 \
                 verify` and see docs/operations.md, \"Disaster recovery\"",
                time_us(record.at_us),
                record.problems,
                for_terminal(&crate::domain::mask_in_text(first))
            ),
        ));
    }
    let days = now_us.saturating_sub(record.at_us) / (24 * 3_600_000_000);
    (days >= VERIFY_STALE_DAYS).then(|| {
        (
            Verdict::Warning,
            format!(
                "the last verify ran {days} day(s) ago, at {}: is sf2520-verify.timer enabled?",
                time_us(record.at_us)
            ),
        )
    })
}

/// KY's inbox, if one is named: rejected files, a file waiting longer than
/// `warn_us`, or an inbox that cannot be listed.
fn inbox_findings(
    inbox: Option<&Result<InboxState, String>>,
    now_us: i64,
    warn_us: i64,
) -> Vec<String> {
    let inbox = match inbox {
        None => return Vec::new(),
        Some(Ok(inbox)) => inbox,
        Some(Err(message)) => return vec![format!("inbox: {}", for_terminal(message))],
    };
    let dir = for_terminal(&inbox.dir.display().to_string());
    let mut findings = Vec::new();
    if inbox.rejected > 0 {
        findings.push(format!(
            "{} inbox file(s) rejected in {dir}/rejected: read their .errors.txt, have KY send \
             a corrected file, then remove them from rejected/",
            inbox.rejected
        ));
    }
    if let Some(oldest) = inbox.oldest_waiting_us {
        let age_us = now_us.saturating_sub(oldest).max(0);
        if age_us >= warn_us {
            findings.push(format!(
                "{} inbox file(s) waiting in {dir}, the oldest for {} h: is the \
                 `sf2520 ingest --inbox` unit running?",
                inbox.waiting,
                age_us / 3_600_000_000
            ));
        }
    }
    findings
}

/// Pending files that left the outbox after they were published, named.
fn left_outbox_finding(missing: &[OfficialFile]) -> Option<String> {
    let newest = missing.first()?;
    let names: Vec<&str> = missing
        .iter()
        .take(LEFT_OUTBOX_SHOWN)
        .map(|file| file.file_name.as_str())
        .collect();
    let more = missing.len().saturating_sub(LEFT_OUTBOX_SHOWN);
    Some(format!(
        "{} file(s) not yet accepted have left the outbox since they were published (taken \
         by a transfer agent, or moved; an export does not put them back): {}{}; \
         `sf2520 reissue --kommune {} --seq {}` puts one back to be delivered again",
        missing.len(),
        names.join(", "),
        if more > 0 {
            format!(" and {more} more (`sf2520 status --json` lists each)")
        } else {
            String::new()
        },
        newest.kommune,
        newest.sequence
    ))
}

pub(super) fn run(
    data_dir: &Path,
    config: Option<&Path>,
    args: &StatusArgs,
) -> anyhow::Result<ExitCode> {
    let snapshot = Ledger::open_existing(data_dir)
        .map_err(anyhow::Error::from)
        .and_then(|ledger| Snapshot::read(&ledger, data_dir, config, args.inbox.as_deref()));
    let snapshot = match snapshot {
        Ok(snapshot) => snapshot,
        Err(error) if args.check && history_lost(&error) => {
            println!(
                "SF2520 CRITICAL - {}",
                crate::domain::mask_in_text(&super::error_text(&error))
            );
            return Ok(Verdict::Critical.exit_code());
        }
        Err(error) if args.check => return Ok(unknown(data_dir, &error)),
        Err(error) => return Err(error),
    };
    let now_us = chrono::Utc::now().timestamp_micros();
    let (verdict, reasons) = judge(&snapshot, args, now_us);
    let mut out = io::stdout().lock();
    if args.check {
        let counts = snapshot.counts();
        let perfdata: Vec<String> = counts.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let summary = if reasons.is_empty() {
            format!(
                "{} official file(s), all accepted or on time; head position {}",
                snapshot.files.len(),
                snapshot.head.position
            )
        } else {
            reasons.join("; ")
        };
        writeln!(
            out,
            "SF2520 {} - {summary} | head={} {}",
            verdict.label(),
            snapshot.head.position,
            perfdata.join(" ")
        )?;
        return Ok(verdict.exit_code());
    }
    if args.json {
        writeln!(
            out,
            "{}",
            status_json(&snapshot, data_dir, verdict, &reasons)
        )?;
    } else {
        print_screen(&mut out, &snapshot, data_dir, verdict, &reasons)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn file_json(file: &FileStatus) -> Value {
    json!({
        "kommune": file.file.kommune.code(), "kommune_name": file.file.kommune.name(),
        "sequence": file.file.sequence, "file_name": file.file.file_name,
        "created_at": time_us(file.file.created_at_us), "delivery": file.state,
    })
}

fn config_json(snapshot: &Snapshot) -> Value {
    let path = &snapshot.config_path;
    match &snapshot.config {
        ConfigState::Absent => json!({"path": path, "present": false, "sftp": false}),
        ConfigState::NoSftp => json!({"path": path, "present": true, "sftp": false}),
        ConfigState::Sftp { address } => {
            json!({"path": path, "present": true, "sftp": true, "address": address})
        }
        ConfigState::Invalid { message } => {
            json!({"path": path, "present": true, "sftp": false, "error": message})
        }
    }
}

fn inbox_json(snapshot: &Snapshot) -> Value {
    match &snapshot.inbox {
        None => Value::Null,
        Some(Err(message)) => json!({"error": message}),
        Some(Ok(inbox)) => json!({
            "dir": inbox.dir.display().to_string(),
            "waiting": inbox.waiting,
            "oldest_waiting_modified_at": inbox.oldest_waiting_us.map(time_us),
            "rejected": inbox.rejected,
        }),
    }
}

fn status_json(
    snapshot: &Snapshot,
    data_dir: &Path,
    verdict: Verdict,
    reasons: &[String],
) -> Value {
    json!({
        "data_dir": data_dir.display().to_string(),
        "head": {
            "position": snapshot.head.position,
            "recorded_at": (snapshot.head.position > 0).then(|| time_us(snapshot.head.recorded_at_us)),
            "hash": hex(&snapshot.head.hash),
        },
        "last_export_at": snapshot.last_export_us().map(time_us),
        "files_by_state": snapshot.counts(),
        "oldest_pending": snapshot.oldest_pending().map(file_json),
        "rejected": snapshot.rejected().map(file_json).collect::<Vec<_>>(),
        "left_outbox": snapshot.left_outbox.iter().map(|file| file.file_name.as_str()).collect::<Vec<_>>(),
        "last_file_per_kommune": snapshot.last_per_kommune().into_iter().map(file_json).collect::<Vec<_>>(),
        "config": config_json(snapshot),
        "inbox": inbox_json(snapshot),
        "last_verify": match &snapshot.last_verify {
            None => Value::Null,
            Some(Err(message)) => json!({"error": message}),
            Some(Ok(record)) => json!({
                "at": time_us(record.at_us), "ok": record.ok, "problems": record.problems,
                "first_problem": record.first_problem.as_deref().map(crate::domain::mask_in_text),
            }),
        },
        "replication": match &snapshot.replication {
            None => Value::Null,
            Some(Err(message)) => json!({"error": message}),
            Some(Ok((replication, required))) => json!({
                "synchronous": replication.shortfall().is_none(),
                "required": required,
                "shortfall": replication.shortfall(),
                "synchronous_standby_names": replication.standby_names,
                "synchronous_commit": replication.synchronous_commit,
                "standbys": replication.standbys.iter()
                    .map(|(name, state)| json!({"name": name, "sync_state": state}))
                    .collect::<Vec<_>>(),
            }),
        },
        "check": {"verdict": verdict.label(), "reasons": reasons},
    })
}

fn print_screen(
    out: &mut dyn Write,
    snapshot: &Snapshot,
    data_dir: &Path,
    verdict: Verdict,
    reasons: &[String],
) -> io::Result<()> {
    writeln!(out, "data directory  {}", data_dir.display())?;
    print_head_and_files(out, snapshot)?;
    writeln!(out, "configuration   {}", config_line(snapshot))?;
    if let Some(line) = inbox_line(snapshot) {
        writeln!(out, "inbox           {line}")?;
    }
    writeln!(out, "last verify     {}", verify_line(snapshot))?;
    if let Some(replication) = &snapshot.replication {
        writeln!(out, "replication     {}", replication_line(replication))?;
    }
    print_kommuner_behind(out, &snapshot.last_per_kommune())?;
    writeln!(
        out,
        "check           {}{}",
        verdict.label(),
        if reasons.is_empty() {
            String::new()
        } else {
            format!(": {}", reasons.join("; "))
        }
    )
}

/// The head, the last export, the files by state, the oldest pending file and
/// every rejected one.
fn print_head_and_files(out: &mut dyn Write, snapshot: &Snapshot) -> io::Result<()> {
    let head = &snapshot.head;
    if head.position == 0 {
        writeln!(out, "ledger head     position 0 (empty log)")?;
    } else {
        writeln!(
            out,
            "ledger head     position {}, recorded {}, hash {}…",
            head.position,
            time_us(head.recorded_at_us),
            &hex(&head.hash)[..16]
        )?;
    }
    match snapshot.last_export_us() {
        Some(at) => writeln!(
            out,
            "last export     {} ({} kommune(r) have files)",
            time_us(at),
            snapshot.last_per_kommune().len()
        )?,
        None => writeln!(out, "last export     none yet; run `sf2520 export`")?,
    }
    let counts: Vec<String> = snapshot
        .counts()
        .iter()
        .map(|(state, count)| format!("{state} {count}"))
        .collect();
    writeln!(out, "files           {}", counts.join(", "))?;
    if let Some(oldest) = snapshot.oldest_pending() {
        writeln!(
            out,
            "oldest pending  {} (created {}): {}",
            oldest.file.file_name,
            time_us(oldest.file.created_at_us),
            for_terminal(&oldest.state.label())
        )?;
    }
    for file in snapshot.rejected() {
        writeln!(
            out,
            "REJECTED        {}: {}; fix the cause, then `sf2520 reissue --kommune {} --seq {}`",
            file.file.file_name,
            for_terminal(&file.state.label()),
            file.file.kommune,
            file.file.sequence
        )?;
    }
    Ok(())
}

fn config_line(snapshot: &Snapshot) -> String {
    match &snapshot.config {
        ConfigState::Absent => format!(
            "{} absent: files stay in the local outbox",
            snapshot.config_path
        ),
        ConfigState::NoSftp => format!(
            "{} has no [sftp] section: files stay in the local outbox",
            snapshot.config_path
        ),
        ConfigState::Sftp { address } => {
            format!("{}: delivery over SFTP to {address}", snapshot.config_path)
        }
        ConfigState::Invalid { message } => format!("INVALID: {}", for_terminal(message)),
    }
}

fn verify_line(snapshot: &Snapshot) -> String {
    match &snapshot.last_verify {
        None => "none recorded; run `sf2520 verify` (sf2520-verify.timer: weekly)".into(),
        Some(Err(message)) => format!("UNREADABLE: {}", for_terminal(message)),
        Some(Ok(record)) if record.ok => format!("{}: ok", time_us(record.at_us)),
        Some(Ok(record)) => format!(
            "{}: DAMAGED, {} problem(s)",
            time_us(record.at_us),
            record.problems
        ),
    }
}

fn inbox_line(snapshot: &Snapshot) -> Option<String> {
    Some(match snapshot.inbox.as_ref()? {
        Err(message) => format!("CANNOT LIST: {}", for_terminal(message)),
        Ok(inbox) => format!(
            "{}: {} file(s) waiting{}, {} rejected",
            for_terminal(&inbox.dir.display().to_string()),
            inbox.waiting,
            inbox
                .oldest_waiting_us
                .map(|at| format!(" (oldest modified {})", time_us(at)))
                .unwrap_or_default(),
            inbox.rejected
        ),
    })
}

fn print_kommuner_behind(out: &mut dyn Write, last: &[&FileStatus]) -> io::Result<()> {
    // The last file of each kommune whose last file is not accepted; the rest
    // are counted, so that 98 kommuner still fit one screen (--json lists all).
    let behind: Vec<&&FileStatus> = last
        .iter()
        .filter(|f| !matches!(f.state, DeliveryState::Accepted))
        .collect();
    for file in behind.iter().take(BEHIND_SHOWN) {
        writeln!(
            out,
            "  {} {}: last file løbenummer {} ({}), {}",
            file.file.kommune,
            file.file.kommune.name(),
            file.file.sequence,
            time_us(file.file.created_at_us),
            for_terminal(&file.state.label())
        )?;
    }
    if behind.len() > BEHIND_SHOWN {
        writeln!(
            out,
            "  … and {} more kommune(r) whose last file is not accepted (`sf2520 status --json` lists each)",
            behind.len() - BEHIND_SHOWN
        )?;
    }
    if !last.is_empty() {
        writeln!(
            out,
            "  {} kommune(r) with their last file accepted",
            last.len() - behind.len()
        )?;
    }
    Ok(())
}
