//! `sf2520 log`: the events of the log, as text or JSON, with CPR numbers masked.

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use serde_json::{json, Value};

use crate::domain::Event;
use crate::ledger::{Ledger, LedgerError, StoredEvent};

use super::output::{for_terminal, hex, kroner, time_us};
use super::LogArgs;

/// The event's content for auditors: readable dates, kroner, masked CPR.
pub(super) fn describe(event: &Event) -> Value {
    match event {
        Event::AgreementRegistered(a) => json!({
            "agreement": a.agreement.as_str(), "kommune": a.kommune.code(), "cpr": a.cpr.masked(),
            "valid_from": a.valid_from.to_string(), "valid_to": a.valid_to.map(|d| d.to_string()),
        }),
        Event::AgreementEnded(e) => json!({
            "agreement": e.agreement.as_str(), "kommune": e.kommune.code(), "valid_to": e.valid_to.to_string(),
        }),
        Event::WithholdingRecorded(w) => json!({
            "reference": w.reference.as_str(), "agreement": w.agreement.as_str(), "kommune": w.kommune.code(),
            "cpr": w.cpr.masked(), "payout_date": w.payout_date.to_string(),
            "period_from": w.period_from.to_string(), "period_to": w.period_to.to_string(),
            "amount": w.amount.to_string(),
        }),
        Event::WithholdingCorrected(c) => json!({
            "reference": c.reference.as_str(), "corrects": c.corrects.as_str(), "kommune": c.kommune.code(),
            "amount": c.amount.to_string(), "reason": c.reason,
        }),
        Event::FileExported(f) => json!({
            "kommune": f.kommune.code(), "sequence": f.sequence, "file_name": f.file_name,
            "file_id": uuid::Uuid::from_bytes(f.file_id).to_string(), "created_at": time_us(f.created_at_us),
            "previous_cutoff_position": f.previous_cutoff_position, "cutoff_position": f.cutoff_position,
            "test": f.test_marker, "records": f.record_count, "plus": kroner(f.plus_ore),
            "minus": kroner(f.minus_ore), "sha256": hex(&f.sha256),
        }),
        Event::FileReissued(f) => json!({
            "kommune": f.kommune.code(), "sequence": f.sequence,
            "delivery_id": uuid::Uuid::from_bytes(f.delivery_id).to_string(),
        }),
        Event::FileUploaded(f) => json!({
            "kommune": f.kommune.code(), "sequence": f.sequence, "remote_path": f.remote_path,
            "size_bytes": f.size_bytes, "senders_file_id": uuid::Uuid::from_bytes(f.senders_file_id).to_string(),
            "attempt": f.attempt,
        }),
        Event::ReceiptReceived(r) => json!({
            "kommune": r.kommune.code(), "sequence": r.sequence,
            "senders_file_id": uuid::Uuid::from_bytes(r.senders_file_id).to_string(),
            "file_transfer_uuid": r.file_transfer_uuid, "accepted": r.accepted,
            "errors": r.errors.iter().map(|e| json!({
                "code": e.code, "code_description": e.code_description, "description": e.description,
            })).collect::<Vec<_>>(),
        }),
        Event::TechnicalReceiptReceived(r) => json!({
            "kommune": r.kommune.code(), "sequence": r.sequence,
            "senders_file_id": uuid::Uuid::from_bytes(r.senders_file_id).to_string(),
            "receipt_named_senders_file_id": r.receipt_named_senders_file_id,
            "file_transfer_uuid": r.file_transfer_uuid, "accepted": r.accepted,
            "errors": r.errors.iter().map(|e| json!({
                "code": e.code, "code_description": e.code_description, "description": e.description,
            })).collect::<Vec<_>>(),
            "receipt_sha256": hex(&r.receipt_sha256), "archive_name": r.archive_name,
        }),
        Event::BusinessReceiptReceived(r) => json!({
            "kommune": r.kommune.code(), "sequence": r.sequence,
            "senders_file_id": uuid::Uuid::from_bytes(r.senders_file_id).to_string(),
            "file_transfer_uuid": r.file_transfer_uuid, "recipient": r.recipient,
            "acceptance": r.acceptance.as_str(), "reason": r.reason,
            "receipt_sha256": hex(&r.receipt_sha256), "archive_name": r.archive_name,
        }),
        Event::RetentionApplied(_) | Event::LedgerSealed(_) => describe_privacy(event),
        Event::LossAccepted(e) => json!({
            "lost_head": format!("{}:{}", e.lost_position, hex(&e.lost_hash)),
            "database_head_position": e.database_head_position,
            "node": e.node, "files": e.files,
        }),
    }
}

/// The events about the ledger's personal data as a whole.
fn describe_privacy(event: &Event) -> Value {
    match event {
        Event::RetentionApplied(e) => json!({
            "agreements": e.agreements.iter().map(|a| a.as_str()).collect::<Vec<_>>(),
            "files": e.files.iter().map(|f| format!("{}/{:06}", f.kommune, f.sequence)).collect::<Vec<_>>(),
            "as_of": e.as_of.to_string(), "retention_years": e.retention_years,
        }),
        Event::LedgerSealed(e) => json!({
            "source_head": format!("{}:{}", e.source_head_position, hex(&e.source_head_hash)),
            "sealed_events": e.sealed_events,
        }),
        _ => Value::Null,
    }
}

/// The event at `stored` with its CPR opened (shown masked); an erased one is
/// shown as erased, with the date.
fn readable(ledger: &Ledger, stored: &StoredEvent) -> anyhow::Result<Value> {
    let mut event = stored.event()?;
    match ledger.open_personal_data(&mut event) {
        Ok(()) => Ok(describe(&event)),
        Err(LedgerError::PersonalDataErased { erased_on, .. }) => {
            let mut content = describe(&event);
            content["cpr"] = json!(format!("erased under retention on {erased_on}"));
            Ok(content)
        }
        Err(error) => Err(error.into()),
    }
}

fn print_event(
    out: &mut dyn Write,
    ledger: &Ledger,
    stored: &StoredEvent,
    json: bool,
    raw: bool,
) -> anyhow::Result<()> {
    let content = readable(ledger, stored)?;
    if json {
        let mut line = json!({
            "position": stored.position, "event_id": stored.event_id.to_string(),
            "type": stored.event_type, "stream": stored.stream,
            "schema_version": stored.schema_version, "recorded_at": time_us(stored.recorded_at_us),
            "hash": hex(&stored.hash), "payload": content,
        });
        if raw {
            // The stored bytes, for checking against docs/log-format.md. The raw
            // payload holds each CPR as the database does (sealed, or in plain in
            // a ledger written before sealing).
            line["raw"] = json!({
                "event_id": hex(stored.event_id.as_bytes()),
                "recorded_at_us": stored.recorded_at_us,
                "payload": hex(&stored.payload),
                "hash": hex(&stored.hash),
            });
        }
        writeln!(out, "{line}")?;
    } else {
        let fields: Vec<String> = content
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, value)| !value.is_null())
            .map(|(key, value)| match value {
                // Receipts and reasons are text from outside; JSON leaves the
                // C1 controls in a receipt's errors as they came.
                Value::String(text) => format!("{key}={}", for_terminal(text)),
                other => format!("{key}={}", for_terminal(&other.to_string())),
            })
            .collect();
        writeln!(
            out,
            "{:>8}  {}  {:<20}  {}  [{}…]",
            stored.position,
            time_us(stored.recorded_at_us),
            stored.event_type,
            fields.join(" "),
            &hex(&stored.hash)[..12]
        )?;
    }
    Ok(())
}

pub(super) fn run(data_dir: &Path, args: &LogArgs) -> anyhow::Result<ExitCode> {
    let ledger = Ledger::open_read_only(data_dir)?;
    let head = ledger.head()?.position;
    let to = args.to.unwrap_or(head).min(head);
    let mut out = io::stdout().lock();
    let mut failure = None;
    ledger.for_each_event(args.from.max(1), to, |stored| {
        if failure.is_none() {
            if let Err(error) = print_event(&mut out, &ledger, &stored, args.json, args.raw) {
                failure = Some(error);
            }
        }
        Ok(())
    })?;
    match failure {
        Some(error) => Err(error),
        None => Ok(ExitCode::SUCCESS),
    }
}
