//! `sf2520 deliver` and `sf2520 config check`: delivery over SFTP and its configuration.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use serde_json::json;

use crate::domain::Kommune;
use crate::export::{default_outbox, deliver, DeliverRequest, DeliveryReport, DeliveryResult};
use crate::ledger::Ledger;
use crate::transport::{load, SftpClient, SftpConfig};

use super::output::table;
use super::DeliverArgs;

/// The config file to use: the one named, or `<data-dir>/sf2520.toml`.
pub fn config_path(data_dir: &Path, named: Option<&Path>) -> PathBuf {
    named.map_or_else(|| data_dir.join("sf2520.toml"), Path::to_path_buf)
}

/// The `[sftp]` section, if delivery goes over SFTP. A missing default config file
/// means "local outbox only"; a missing named one is an error.
pub fn sftp_config(data_dir: &Path, named: Option<&Path>) -> anyhow::Result<Option<SftpConfig>> {
    let path = config_path(data_dir, named);
    if named.is_none() && !path.exists() {
        return Ok(None);
    }
    Ok(load(&path)?)
}

/// Delivers pending files and prints one line per file as it finishes plus a
/// table; `false` if any file was not accepted.
pub fn deliver_and_report(
    ledger: Ledger,
    config: &SftpConfig,
    request: &DeliverRequest,
    outbox: &Path,
    json: bool,
) -> anyhow::Result<(Ledger, bool)> {
    let progress = |report: &DeliveryReport| {
        if !json {
            eprintln!("{}", line(report));
        }
    };
    let (ledger, reports) = deliver(ledger, config, request, outbox, &progress)?;
    let all_accepted = reports
        .iter()
        .all(|r| matches!(r.result, DeliveryResult::Accepted { .. }));
    let mut out = io::stdout().lock();
    // The head the run left (uploads and receipts append), for the journal.
    let head = crate::audit::Anchor::of(&ledger.head()?).to_string();
    if json {
        let items: Vec<_> = reports.iter().map(report_json).collect();
        writeln!(out, "{}", json!({"deliveries": items, "head": head}))?;
    } else if reports.is_empty() {
        writeln!(out, "deliver: nothing to deliver; every official file is accepted (or rejected and waiting for a reissue)")?;
    } else {
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
        let accepted = reports
            .iter()
            .filter(|r| matches!(r.result, DeliveryResult::Accepted { .. }))
            .count();
        writeln!(
            out,
            "deliver: {accepted} of {} file(s) accepted",
            reports.len()
        )?;
    }
    if !json {
        writeln!(out, "head: {head}")?;
    }
    Ok((ledger, all_accepted))
}

fn outcome(result: &DeliveryResult) -> String {
    match result {
        DeliveryResult::Accepted { file_transfer_uuid } => {
            format!("accepted (FileTransferUUID {file_transfer_uuid})")
        }
        DeliveryResult::Rejected { errors } => {
            let errors: Vec<String> = errors
                .iter()
                .map(|e| format!("{} {}: {}", e.code, e.code_description, e.description))
                .collect();
            format!(
                "REJECTED: {}; fix the cause, then `sf2520 reissue`",
                errors.join("; ")
            )
        }
        DeliveryResult::Failed { reason } => {
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
        DeliveryResult::Failed { reason } => ("failed", json!({"reason": reason})),
    };
    json!({
        "kommune": report.kommune.code(), "sequence": report.sequence, "file_name": report.file_name,
        "senders_file_id": report.senders_file_id.to_string(), "state": state, "detail": detail,
    })
}

pub fn run_deliver(
    data_dir: &Path,
    config: Option<&Path>,
    args: &DeliverArgs,
) -> anyhow::Result<ExitCode> {
    let ledger = Ledger::open(data_dir)?;
    let outbox = args.out.clone().unwrap_or_else(|| default_outbox(data_dir));
    let Some(sftp) = sftp_config(data_dir, config)? else {
        println!(
            "deliver: no [sftp] section in {}; official files stay in the local outbox {}",
            config_path(data_dir, config).display(),
            outbox.display()
        );
        return Ok(ExitCode::SUCCESS);
    };
    let request = DeliverRequest {
        kommune: args.kommune.as_deref().map(Kommune::parse).transpose()?,
        sequence: args.seq,
    };
    let (_, all_accepted) = deliver_and_report(ledger, &sftp, &request, &outbox, args.json)?;
    Ok(if all_accepted {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub fn run_config_check(data_dir: &Path, config: Option<&Path>) -> anyhow::Result<ExitCode> {
    let path = config_path(data_dir, config);
    let mut out = io::stdout().lock();
    if !path.exists() {
        writeln!(
            out,
            "{} does not exist: delivery uses the local outbox only (no [sftp] section)",
            path.display()
        )?;
        return Ok(if config.is_some() {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        });
    }
    let Some(sftp) = load(&path)? else {
        writeln!(
            out,
            "{}: valid; no [sftp] section, so delivery uses the local outbox only",
            path.display()
        )?;
        return Ok(ExitCode::SUCCESS);
    };
    writeln!(
        out,
        "{}: valid; connecting to {} as {} …",
        path.display(),
        sftp.address(),
        sftp.user
    )?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("async runtime")?;
    let listing = runtime.block_on(async {
        let client = SftpClient::connect(&sftp).await?;
        let listing = client.list_dir(&sftp.remote_out_dir).await;
        client.close().await;
        listing
    })?;
    writeln!(
        out,
        "ok: host key matches the pinned {}; logged in; {} holds {} entr(y/ies)",
        sftp.host_key.fingerprint(),
        sftp.remote_out_dir,
        listing.len()
    )?;
    Ok(ExitCode::SUCCESS)
}
