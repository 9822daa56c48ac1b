//! `sf2520 deliver` and `sf2520 config check`: delivery over SFTP and its configuration.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use serde_json::{json, Value};

use crate::domain::Kommune;
use crate::export::{
    default_outbox, deliver, files_in_scope, pending_deliveries, DeliverRequest, DeliveryReport,
    DeliveryResult,
};
use crate::ledger::{DeliveryState, Ledger, OfficialFile};
use crate::transport::{load, SftpClient, SftpConfig};

use super::exit::Exit;
use super::output::{for_terminal, table};
use super::DeliverArgs;

/// The config file to use: the one named, or `<data-dir>/sf2520.toml`.
pub(super) fn config_path(data_dir: &Path, named: Option<&Path>) -> PathBuf {
    named.map_or_else(|| data_dir.join("sf2520.toml"), Path::to_path_buf)
}

/// The `[sftp]` section, if delivery goes over SFTP. A missing default config file
/// means "local outbox only"; a missing named one is an error.
pub(super) fn sftp_config(
    data_dir: &Path,
    named: Option<&Path>,
) -> anyhow::Result<Option<SftpConfig>> {
    let path = config_path(data_dir, named);
    if named.is_none() && !path.exists() {
        return Ok(None);
    }
    Ok(load(&path)?)
}

/// Official files in the scope of `request` that are not accepted, with their
/// state: exported or reissued and not yet uploaded, uploaded and waiting for a
/// receipt, or rejected and waiting for a reissue.
pub(super) fn not_accepted(
    ledger: &Ledger,
    request: &DeliverRequest,
) -> anyhow::Result<Vec<(OfficialFile, DeliveryState)>> {
    Ok(files_in_scope(ledger, request)?
        .into_iter()
        .map(|(file, status)| (file, status.state))
        .filter(|(_, state)| *state != DeliveryState::Accepted)
        .collect())
}

/// The exit code of a delivery: success only when every official file in scope
/// is accepted (a file rejected in an earlier run and not reissued keeps it
/// non-zero night after night); a file the platform already holds other bytes
/// for, and a host key that is not the pinned one, have their own codes.
pub(super) fn delivery_exit(
    ledger: &Ledger,
    request: &DeliverRequest,
    reports: &[DeliveryReport],
) -> anyhow::Result<Exit> {
    if reports
        .iter()
        .any(|r| matches!(r.result, DeliveryResult::NameTaken { .. }))
    {
        return Ok(Exit::NameTaken);
    }
    if reports.iter().any(|r| {
        matches!(
            r.result,
            DeliveryResult::Failed {
                host_key_mismatch: true,
                ..
            }
        )
    }) {
        return Ok(Exit::HostKeyMismatch);
    }
    Ok(if not_accepted(ledger, request)?.is_empty() {
        Exit::Success
    } else {
        Exit::DeliveryIncomplete
    })
}

/// An empty JSON document to fill when `json`, else text output.
pub(super) fn document(json: bool) -> Option<Value> {
    json.then(|| json!({}))
}

/// What a run without `[sftp]` says, and its exit code: files that are not
/// accepted mean delivery is not complete.
pub(super) fn not_configured(
    ledger: &Ledger,
    request: &DeliverRequest,
    why: &str,
    json: Option<Value>,
) -> anyhow::Result<Exit> {
    let waiting = not_accepted(ledger, request)?;
    let exit = if waiting.is_empty() {
        Exit::Success
    } else {
        Exit::DeliveryIncomplete
    };
    let mut out = io::stdout().lock();
    if let Some(mut document) = json {
        let files: Vec<_> = waiting
            .iter()
            .map(|(file, state)| waiting_json(file, state))
            .collect();
        document["deliveries"] = json!([]);
        document["configured"] = json!(false);
        document["reason"] = json!(why);
        document["not_accepted"] = json!(files);
        writeln!(out, "{document}")?;
    } else {
        writeln!(
            out,
            "deliver: {why}; {} official file(s) not accepted{}",
            waiting.len(),
            if waiting.is_empty() {
                String::new()
            } else {
                format!(" ({})", exit.explained())
            }
        )?;
    }
    Ok(exit)
}

fn waiting_json(file: &OfficialFile, state: &DeliveryState) -> serde_json::Value {
    json!({
        "kommune": file.kommune.code(), "kommune_name": file.kommune.name(),
        "sequence": file.sequence, "file_name": file.file_name, "delivery": state,
    })
}

/// Delivers pending files and prints one line per file as it finishes plus a
/// table; returns the run's exit code (see [`delivery_exit`]).
pub(super) fn deliver_and_report(
    ledger: Ledger,
    config: &SftpConfig,
    request: &DeliverRequest,
    outbox: &Path,
    json: Option<Value>,
) -> anyhow::Result<(Ledger, Exit)> {
    let pending = pending_deliveries(&ledger, request)?.len();
    let (ledger, reports) =
        super::progress::while_delivering(json.is_some(), pending, config, line, |on_done| {
            deliver(ledger, config, request, outbox, on_done)
        })?;
    let exit = delivery_exit(&ledger, request, &reports)?;
    let waiting = not_accepted(&ledger, request)?;
    let mut out = io::stdout().lock();
    // The head the run left (uploads and receipts append), for the journal.
    let head = crate::audit::Anchor::of(&ledger.witness_head()?).to_string();
    log_delivered(&reports, waiting.len(), &head);
    if let Some(mut document) = json {
        let items: Vec<_> = reports.iter().map(report_json).collect();
        let files: Vec<_> = waiting
            .iter()
            .map(|(file, state)| waiting_json(file, state))
            .collect();
        document["deliveries"] = json!(items);
        document["configured"] = json!(true);
        document["not_accepted"] = json!(files);
        document["deliver_head"] = json!(head);
        writeln!(out, "{document}")?;
        return Ok((ledger, exit));
    }
    print_reports(&mut out, &reports)?;
    let others = not_accepted(&ledger, &DeliverRequest::default())?.len() - waiting.len();
    let asked = Asked {
        request,
        others,
        nothing_sent: reports.is_empty(),
        name_taken: reports
            .iter()
            .filter(|r| matches!(r.result, DeliveryResult::NameTaken { .. }))
            .map(|r| r.file_name.as_str())
            .collect(),
    };
    print_waiting(&mut out, &waiting, &asked, exit)?;
    writeln!(out, "head: {head}")?;
    Ok((ledger, exit))
}

/// One log line per file this run delivered and one for the run (info), with
/// the fields an operator searches for: `kommune`, `løbenummer`, `file`, `head`.
fn log_delivered(reports: &[DeliveryReport], not_accepted: usize, head: &str) {
    for report in reports {
        tracing::info!(
            file = %for_terminal(&report.file_name),
            kommune = %report.kommune,
            "løbenummer" = report.sequence,
            senders_file_id = %report.senders_file_id,
            outcome = %outcome(&report.result),
            "file delivered"
        );
    }
    tracing::info!(
        files = reports.len(),
        not_accepted,
        head,
        "delivery finished"
    );
}

/// The table of what this run did, and its summary: files delivered and how many
/// of them were accepted, and business receipts recorded for files accepted before.
fn print_reports(out: &mut dyn Write, reports: &[DeliveryReport]) -> io::Result<()> {
    if reports.is_empty() {
        return Ok(());
    }
    let rows: Vec<Vec<String>> = reports
        .iter()
        .map(|r| {
            vec![
                format!("{} {}", r.kommune, r.kommune.name()),
                r.sequence.to_string(),
                r.file_name.clone(),
                outcome(&r.result),
            ]
        })
        .collect();
    write!(
        out,
        "{}",
        table(&["kommune", ">løbenummer", "file", "outcome"], &rows)
    )?;
    let business = reports
        .iter()
        .filter(|r| matches!(r.result, DeliveryResult::Business { .. }))
        .count();
    let delivered = reports.len() - business;
    let accepted = reports
        .iter()
        .filter(|r| matches!(r.result, DeliveryResult::Accepted { .. }))
        .count();
    let mut parts = Vec::new();
    if delivered > 0 {
        parts.push(format!("{accepted} of {delivered} file(s) accepted"));
    }
    if business > 0 {
        parts.push(format!("{business} business receipt(s) recorded"));
    }
    let refused: Vec<&str> = reports
        .iter()
        .filter(|r| matches!(r.result, DeliveryResult::NameTaken { .. }))
        .map(|r| r.file_name.as_str())
        .collect();
    if !refused.is_empty() {
        parts.push(format!(
            "{} file(s) refused, the platform holding another file under the name: {}",
            refused.len(),
            refused.join(", ")
        ));
    }
    writeln!(out, "deliver: {}", parts.join("; "))
}

/// What a run was asked to cover, for its last line: the files in its scope, and
/// how many official files outside it are not accepted (they do not change the
/// exit code, but a summary must not claim them).
struct Asked<'a> {
    request: &'a DeliverRequest,
    others: usize,
    nothing_sent: bool,
    /// Files this run refused to upload: the platform holds another file under
    /// their names.
    name_taken: Vec<&'a str>,
}

impl Asked<'_> {
    /// "every official file is accepted", narrowed to the kommune or file asked for.
    fn all_accepted(&self) -> String {
        let kommune = |k: &Kommune| format!("kommune {k} {}", k.name());
        match (&self.request.kommune, self.request.sequence) {
            (None, None) => "every official file is accepted".to_owned(),
            (Some(k), None) => format!("every official file of {} is accepted", kommune(k)),
            (Some(k), Some(sequence)) => {
                format!("{} løbenummer {sequence} is accepted", kommune(k))
            }
            (None, Some(sequence)) => {
                format!("every official file with løbenummer {sequence} is accepted")
            }
        }
    }

    /// The note on files outside the scope that are not accepted, if any.
    fn others_note(&self) -> String {
        if self.others == 0 {
            return String::new();
        }
        format!(
            "; {} other official file(s) not accepted (outside what was asked; see `sf2520 files`)",
            self.others
        )
    }
}

/// The files still not accepted after a run: rejected ones first-class, since
/// only an operator's reissue moves them; the last line names the run's `exit`
/// and speaks only of what the run was asked to cover.
fn print_waiting(
    out: &mut dyn Write,
    waiting: &[(OfficialFile, DeliveryState)],
    asked: &Asked,
    exit: Exit,
) -> io::Result<()> {
    if waiting.is_empty() {
        return writeln!(
            out,
            "deliver: {}{}{}",
            if asked.nothing_sent {
                "nothing to deliver; "
            } else {
                ""
            },
            asked.all_accepted(),
            asked.others_note()
        );
    }
    for (file, state) in waiting {
        let advice = match state {
            _ if asked.name_taken.contains(&file.file_name.as_str()) => {
                "; REFUSED: the platform holds another file under this name; \
                 agree the correction with UDK before anything is sent (docs/operations.md)"
            }
            DeliveryState::Rejected { .. } => "; fix the cause, then `sf2520 reissue`",
            _ => "; run `sf2520 deliver` again",
        };
        writeln!(
            out,
            "NOT ACCEPTED: {} (kommune {} løbenummer {}): {}{advice}",
            file.file_name,
            file.kommune,
            file.sequence,
            for_terminal(&state.label())
        )?;
    }
    writeln!(
        out,
        "deliver: {} official file(s) not accepted ({}){}",
        waiting.len(),
        exit.explained(),
        asked.others_note()
    )
}

/// What became of one file, ready for the terminal: receipts and server
/// messages are text from outside.
fn outcome(result: &DeliveryResult) -> String {
    for_terminal(&outcome_text(result))
}

fn outcome_text(result: &DeliveryResult) -> String {
    match result {
        DeliveryResult::Accepted { file_transfer_uuid } => {
            format!("accepted (FileTransferUUID {file_transfer_uuid})")
        }
        DeliveryResult::Rejected { errors } => {
            let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
            format!(
                "REJECTED: {}; fix the cause, then `sf2520 reissue`",
                errors.join("; ")
            )
        }
        DeliveryResult::Business {
            acceptance,
            recipient,
            reason,
        } => match reason {
            Some(reason) => format!(
                "business receipt: {} by {recipient}: {reason}",
                acceptance.as_str()
            ),
            None => format!("business receipt: {} by {recipient}", acceptance.as_str()),
        },
        DeliveryResult::NameTaken { reason } => format!("REFUSED: {reason}"),
        DeliveryResult::Failed { reason, .. } => {
            format!("not delivered: {reason}; run `sf2520 deliver` again")
        }
    }
}

fn line(report: &DeliveryReport) -> String {
    format!(
        "{} løbenummer {}: {}",
        report.kommune,
        report.sequence,
        outcome(&report.result)
    )
}

fn report_json(report: &DeliveryReport) -> serde_json::Value {
    let (state, detail) = match &report.result {
        DeliveryResult::Accepted { file_transfer_uuid } => (
            "accepted",
            json!({"file_transfer_uuid": file_transfer_uuid}),
        ),
        DeliveryResult::Rejected { errors } => (
            "rejected",
            json!({"errors": errors.iter().map(|e| json!({"code": e.code, "code_description": e.code_description, "description": e.description})).collect::<Vec<_>>()}),
        ),
        DeliveryResult::Business {
            acceptance,
            recipient,
            reason,
        } => (
            "business_receipt",
            json!({"acceptance": acceptance.as_str(), "recipient": recipient, "reason": reason}),
        ),
        DeliveryResult::NameTaken { reason } => ("name_taken", json!({"reason": reason})),
        DeliveryResult::Failed { reason, .. } => ("failed", json!({"reason": reason})),
    };
    json!({
        "kommune": report.kommune.code(), "kommune_name": report.kommune.name(),
        "sequence": report.sequence, "file_name": report.file_name,
        "senders_file_id": report.senders_file_id.to_string(), "state": state, "detail": detail,
    })
}

pub(super) fn run_deliver(
    data_dir: &Path,
    config: Option<&Path>,
    args: &DeliverArgs,
) -> anyhow::Result<ExitCode> {
    let ledger = Ledger::open_existing(data_dir)?;
    let outbox = args.out.clone().unwrap_or_else(|| default_outbox(data_dir));
    let request = DeliverRequest {
        kommune: args.kommune.as_deref().map(Kommune::parse).transpose()?,
        sequence: args.seq,
    };
    let Some(sftp) = sftp_config(data_dir, config)? else {
        let why = format!(
            "no [sftp] section in {}; official files stay in the local outbox {}",
            config_path(data_dir, config).display(),
            outbox.display()
        );
        return Ok(not_configured(&ledger, &request, &why, document(args.json))?.into());
    };
    let (_, exit) = deliver_and_report(ledger, &sftp, &request, &outbox, document(args.json))?;
    Ok(exit.into())
}

/// Logs in and lists the remote OUT and IN directories, giving their entry counts.
fn list_remote_dirs(sftp: &SftpConfig) -> anyhow::Result<(usize, usize)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("async runtime")?;
    let (out_listing, in_listing) = runtime.block_on(async {
        let client = SftpClient::connect(sftp).await?;
        let out_listing = client.list_dir(&sftp.remote_out_dir).await;
        let in_listing = client.list_dir(&sftp.remote_in_dir).await;
        client.close().await;
        Ok::<_, crate::transport::TransportError>((out_listing, in_listing))
    })?;
    let out_listing = out_listing?;
    let in_listing = in_listing.with_context(|| {
        format!(
            "remote_in_dir {:?} cannot be listed: receipts arrive there; ask the platform \
             operator for the right directory and set [sftp] remote_in_dir",
            sftp.remote_in_dir
        )
    })?;
    Ok((out_listing.len(), in_listing.len()))
}

/// The config file `config check` checks, once the data directory passes as it
/// does for every other command (this user's, not open to others); one not made
/// yet is fine: the configuration may be checked before `sf2520 init`.
fn config_to_check(data_dir: &Path, config: Option<&Path>) -> anyhow::Result<PathBuf> {
    match std::fs::metadata(data_dir) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        _ => crate::ledger::check_private_dir(data_dir)?,
    }
    Ok(config_path(data_dir, config))
}

pub(super) fn run_config_check(
    data_dir: &Path,
    config: Option<&Path>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let path = config_to_check(data_dir, config)?;
    let shown = path.display().to_string();
    let (database, success) = database_preamble(data_dir, json);
    // One line of text, or one JSON document (with the database), per outcome.
    let say = |fields: Value, text: String| -> io::Result<()> {
        let document = merged(json!({"path": shown, "database": database}), &fields);
        let line = if json { document.to_string() } else { text };
        writeln!(io::stdout().lock(), "{line}")
    };
    if !path.exists() {
        say(
            json!({"exists": false, "sftp": false}),
            format!(
                "{shown} does not exist: delivery uses the local outbox only (no [sftp] section)"
            ),
        )?;
        return Ok(if config.is_some() {
            Exit::Configuration.into()
        } else {
            success
        });
    }
    let Some(sftp) = load(&path)? else {
        say(
            json!({"exists": true, "sftp": false}),
            format!("{shown}: valid; no [sftp] section, so delivery uses the local outbox only"),
        )?;
        return Ok(success);
    };
    let warnings = sftp.warnings();
    if !json {
        for warning in &warnings {
            println!("warning: {warning}");
        }
        println!(
            "{shown}: valid; connecting to {} as {} …",
            sftp.address(),
            sftp.user
        );
    }
    let (out_listing, in_listing) = list_remote_dirs(&sftp)?;
    say(
        json!({
            "exists": true, "sftp": true, "address": sftp.address(), "user": sftp.user,
            "host_key": sftp.host_key.fingerprint().to_string(), "remote_out_dir": sftp.remote_out_dir,
            "remote_out_entries": out_listing, "remote_in_dir": sftp.remote_in_dir,
            "remote_in_entries": in_listing, "warnings": warnings,
        }),
        format!(
            "ok: host key matches the pinned {}; logged in; {} holds {} entr(y/ies); {} is readable and holds {}",
            sftp.host_key.fingerprint(),
            sftp.remote_out_dir,
            out_listing,
            sftp.remote_in_dir,
            in_listing
        ),
    )?;
    Ok(success)
}

/// `document` with the fields of `fields` added.
fn merged(mut document: Value, fields: &Value) -> Value {
    if let (Some(document), Some(fields)) = (document.as_object_mut(), fields.as_object()) {
        document.extend(fields.clone());
    }
    document
}

/// The database part of `config check`: its JSON, printed first as a line of
/// text, and the code a check with nothing else wrong exits with (12 when a
/// required synchronous standby is missing: the database's finding too).
fn database_preamble(data_dir: &Path, json: bool) -> (Value, ExitCode) {
    let (database, line, unsafe_database) = database_check(data_dir);
    if let (false, Some(line)) = (json, &line) {
        println!("{line}");
    }
    let success = if unsafe_database {
        Exit::NoSynchronousStandby.into()
    } else {
        ExitCode::SUCCESS
    };
    (database, success)
}

/// The ledger's database as `config check` reports it: on PostgreSQL the
/// primary's replication (JSON, a line of text, and whether a required
/// synchronous standby is missing); `null` and nothing on SQLite.
fn database_check(data_dir: &Path) -> (Value, Option<String>, bool) {
    let Some(url) = crate::ledger::Location::of(data_dir).database else {
        return (Value::Null, None, false);
    };
    let described = url.describe();
    let replication = Ledger::open_read_only(data_dir).and_then(|ledger| ledger.replication());
    match replication {
        Ok(Some((replication, required))) => {
            let shortfall = replication.shortfall();
            let line = match &shortfall {
                None => format!(
                    "database {described}: synchronous ({}): a committed write survives a failover",
                    for_terminal(&replication.describe_standbys())
                ),
                Some(why) => format!(
                    "database {described}: NOT synchronous: {}{}",
                    for_terminal(why),
                    if required {
                        "; [database] require_synchronous is on, so writes are refused (exit 12)"
                    } else {
                        "; a failover may lose acknowledged writes (docs/operations.md, \"A synchronous pair\")"
                    }
                ),
            };
            let unsafe_database = required && shortfall.is_some();
            (
                json!({"url": described, "synchronous": shortfall.is_none(), "required": required,
                       "shortfall": shortfall, "standbys": replication.describe_standbys()}),
                Some(line),
                unsafe_database,
            )
        }
        Ok(None) => (Value::Null, None, false),
        Err(error) => {
            let text = for_terminal(&error.to_string());
            (
                json!({"url": described, "error": text}),
                Some(format!("database {described}: cannot be checked: {text}")),
                false,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::FileAcceptance;

    fn report(kommune: &str, result: DeliveryResult) -> DeliveryReport {
        DeliveryReport {
            kommune: Kommune::parse(kommune).expect("a kommune"),
            sequence: 1,
            file_name: format!("SF2520_{kommune}_20261201_000001.txt"),
            senders_file_id: uuid::Uuid::nil(),
            result,
        }
    }

    fn printed(reports: &[DeliveryReport]) -> String {
        let mut out = Vec::new();
        print_reports(&mut out, reports).expect("written to memory");
        String::from_utf8(out).expect("UTF-8")
    }

    /// A business receipt for a file accepted earlier is not a delivery that
    /// failed: the issue saw "0 of 1 file(s) accepted" above "every official file
    /// is accepted".
    #[test]
    fn business_receipts_are_counted_apart_from_deliveries() {
        let business = report(
            "0751",
            DeliveryResult::Business {
                acceptance: FileAcceptance::Accepted,
                recipient: "UDK-DEBITOR".into(),
                reason: None,
            },
        );
        let out = printed(std::slice::from_ref(&business));
        assert!(
            out.contains("deliver: 1 business receipt(s) recorded\n"),
            "{out}"
        );
        assert!(!out.contains("file(s) accepted"), "{out}");
        let accepted = report(
            "0101",
            DeliveryResult::Accepted {
                file_transfer_uuid: "t-1".into(),
            },
        );
        let out = printed(&[accepted, business]);
        assert!(
            out.contains("deliver: 1 of 1 file(s) accepted; 1 business receipt(s) recorded\n"),
            "{out}"
        );
        assert_eq!(printed(&[]), "");
    }

    #[test]
    fn the_last_line_names_what_was_asked() {
        let kommune = Kommune::parse("0751").expect("a kommune");
        let line = |request: &DeliverRequest, others: usize| {
            let asked = Asked {
                request,
                others,
                nothing_sent: false,
                name_taken: Vec::new(),
            };
            format!("{}{}", asked.all_accepted(), asked.others_note())
        };
        assert_eq!(
            line(&DeliverRequest::default(), 0),
            "every official file is accepted"
        );
        let one_kommune = DeliverRequest {
            kommune: Some(kommune),
            sequence: None,
        };
        assert_eq!(
            line(&one_kommune, 2),
            "every official file of kommune 0751 Aarhus is accepted; 2 other official \
             file(s) not accepted (outside what was asked; see `sf2520 files`)"
        );
        let one_file = DeliverRequest {
            kommune: Some(kommune),
            sequence: Some(3),
        };
        assert_eq!(
            line(&one_file, 0),
            "kommune 0751 Aarhus løbenummer 3 is accepted"
        );
    }
}
