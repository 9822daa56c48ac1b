//! `sf2520 export`, `reconstruct`, `files`, `reissue`: the exporter's commands.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::audit::Anchor;
use crate::domain::Kommune;
use crate::export::outbox::write_bytes_atomically;
use crate::export::{
    default_outbox, reconstruct, reissue, render_as_of, run_batch, ExportRequest, ExportedFile,
    Progress, Reconstruction,
};
use crate::ledger::{Head, Ledger};

use super::deliver::{deliver_and_report, not_configured, sftp_config};
use super::exit::Exit;
use super::output::{for_terminal, hex, kroner, table, time_us};
use super::{ExportArgs, FilesArgs, ReconstructArgs, ReissueArgs};
use crate::export::DeliverRequest;

/// A progress bar over records on a terminal; hidden otherwise (indicatif draws
/// only to a terminal), and with JSON logs (standard error holds JSON lines only).
pub(super) struct Bar(ProgressBar);

impl Bar {
    pub(super) fn new() -> Bar {
        let bar = ProgressBar::new(0);
        if super::logging::json() {
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} rendering {msg} [{bar:30}] {pos}/{len} records",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        Bar(bar)
    }
}

impl Progress for Bar {
    fn planned(&self, files: usize, records: u64) {
        self.0.set_length(records);
        self.0.set_message(format!("{files} file(s)"));
    }

    fn rendered(&self, records: u64) {
        self.0.inc(records);
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

fn kommuner(codes: &[String]) -> anyhow::Result<Vec<Kommune>> {
    codes.iter().map(|code| Ok(Kommune::parse(code)?)).collect()
}

pub(super) fn run_export(
    data_dir: &Path,
    config: Option<&Path>,
    args: &ExportArgs,
) -> anyhow::Result<ExitCode> {
    // Read the delivery config first: a bad config must not leave exported,
    // undelivered files behind a failed command.
    let sftp = if args.deliver {
        sftp_config(data_dir, config)?
    } else {
        None
    };
    let request = ExportRequest {
        kommuner: kommuner(&args.kommune)?,
        include_empty: args.include_empty,
        lock_wait: Duration::from_secs(args.lock_wait),
    };
    // Only an official run writes to the ledger; the others work on a read-only one.
    let mut ledger = if args.as_of.is_some() || args.test {
        Ledger::open_read_only(data_dir)?
    } else {
        Ledger::open_existing(data_dir)?
    };
    let (files, what) = export_files(&mut ledger, data_dir, args, &request)?;
    let head = (args.as_of.is_none() && !args.test).then_some(ledger.witness_head()?);
    log_exported(&files, head.as_ref());
    if !args.deliver {
        print_exported(&mut io::stdout().lock(), &files, &what, head, args.json)?;
        return Ok(ExitCode::SUCCESS);
    }
    // With --json, the export's files and the delivery make one document.
    let document = if args.json {
        Some(exported_json(
            &files,
            head.map(|head| Anchor::of(&head).to_string()),
        ))
    } else {
        print_exported(&mut io::stdout().lock(), &files, &what, head, false)?;
        None
    };
    let outbox = args.out.clone().unwrap_or_else(|| default_outbox(data_dir));
    let request = DeliverRequest::default();
    let Some(sftp) = sftp else {
        let why = format!(
            "--deliver was asked but there is no [sftp] configuration; the files stay in the \
             local outbox {}",
            outbox.display()
        );
        return Ok(not_configured(&ledger, &request, &why, document)?.into());
    };
    let (_, exit) = deliver_and_report(ledger, &sftp, &request, &outbox, document)?;
    Ok(exit.into())
}

/// One log line per file written and one for the run (info), with the fields an
/// operator searches for: `kommune`, `løbenummer`, `file`, `head` (POS:HASH; only
/// an official run has one).
fn log_exported(files: &[ExportedFile], head: Option<&Head>) {
    for file in files {
        tracing::info!(
            file = %for_terminal(&file.planned.file_name),
            kommune = %file.planned.range.kommune,
            "løbenummer" = file.planned.header.sequence,
            records = file.summary.record_count,
            net_ore = file.summary.net_ore,
            sha256 = %hex(&file.written.sha256),
            "file exported"
        );
    }
    let records: u64 = files.iter().map(|file| file.summary.record_count).sum();
    match head {
        Some(head) => tracing::info!(
            files = files.len(),
            records,
            head = %Anchor::of(head),
            "export finished"
        ),
        None => tracing::info!(
            files = files.len(),
            records,
            "export finished (not official: nothing recorded)"
        ),
    }
}

/// Writes the files the arguments ask for: as of a past time, test files, or the
/// official batch. Gives them back with a phrase saying what and where.
fn export_files(
    ledger: &mut Ledger,
    data_dir: &Path,
    args: &ExportArgs,
    request: &ExportRequest,
) -> anyhow::Result<(Vec<ExportedFile>, String)> {
    let bar = Bar::new();
    if let Some(time) = args.as_of {
        let Some(out) = &args.out else {
            bail!(
                "--as-of writes only to a directory you name: add --out DIR (nothing is recorded)"
            );
        };
        let files = render_as_of(ledger, request, time, args.test, out, &bar)?;
        return Ok((
            files,
            format!("as of {time} into {} (nothing recorded)", out.display()),
        ));
    }
    if args.test {
        let out = args
            .out
            .clone()
            .unwrap_or_else(|| data_dir.join("test-files"));
        let files = render_as_of(ledger, request, chrono::Utc::now(), true, &out, &bar)?;
        return Ok((
            files,
            format!(
                "test files (marker T) into {} (nothing recorded)",
                out.display()
            ),
        ));
    }
    let out = args.out.clone().unwrap_or_else(|| default_outbox(data_dir));
    let files = run_batch(ledger, request, &out, &bar)?;
    Ok((files, format!("official files into {}", out.display())))
}

/// The files an export run wrote, and the head it left (official runs), as JSON.
pub(super) fn exported_json(files: &[ExportedFile], head: Option<String>) -> serde_json::Value {
    let items: Vec<_> = files
        .iter()
        .map(|f| {
            json!({
                "kommune": f.planned.range.kommune.code(),
                "kommune_name": f.planned.range.kommune.name(),
                "sequence": f.planned.header.sequence,
                "records": f.summary.record_count, "net": kroner(f.summary.net_ore),
                "file_name": f.planned.file_name, "path": f.written.path.display().to_string(),
                "sha256": hex(&f.written.sha256), "file_id": f.file_id.map(|id| id.to_string()),
            })
        })
        .collect();
    json!({"files": items, "head": head})
}

/// The summary table of an export run (or its JSON).
pub(super) fn print_exported(
    out: &mut dyn Write,
    files: &[ExportedFile],
    what: &str,
    head: Option<Head>,
    json: bool,
) -> io::Result<()> {
    // The head the run left, for the journal: `verify --expect-head` checks it later.
    let head = head.map(|head| Anchor::of(&head).to_string());
    if json {
        return writeln!(out, "{}", exported_json(files, head));
    }
    if files.is_empty() {
        writeln!(
            out,
            "export: no kommune has entries since its last file; no file written"
        )?;
        return print_head(out, head);
    }
    let rows: Vec<Vec<String>> = files
        .iter()
        .map(|f| {
            let kommune = f.planned.range.kommune;
            vec![
                format!("{kommune} {}", kommune.name()),
                f.planned.header.sequence.to_string(),
                f.summary.record_count.to_string(),
                kroner(f.summary.net_ore),
                f.planned.file_name.clone(),
            ]
        })
        .collect();
    write!(
        out,
        "{}",
        table(
            &["kommune", ">løbenummer", ">records", ">net", "file"],
            &rows
        )
    )?;
    let records: u64 = files.iter().map(|f| f.summary.record_count).sum();
    writeln!(
        out,
        "export: {} file(s), {records} record(s): {what}",
        files.len()
    )?;
    print_head(out, head)
}

fn print_head(out: &mut dyn Write, head: Option<String>) -> io::Result<()> {
    match head {
        Some(head) => writeln!(out, "head: {head}"),
        None => Ok(()),
    }
}

pub(super) fn run_reconstruct(data_dir: &Path, args: &ReconstructArgs) -> anyhow::Result<ExitCode> {
    let ledger = Ledger::open_read_only(data_dir)?;
    let kommune = Kommune::parse(&args.file.kommune)?;
    let reconstruction = reconstruct(&ledger, kommune, args.file.seq)?;
    let path = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(&reconstruction.file.file_name));
    write_private(&path, &reconstruction.bytes)?;
    let mut out = io::stdout().lock();
    let file = &reconstruction.file;
    if !args.json {
        if let Some(damage) = &file.damage {
            writeln!(out, "warning: {damage}")?;
        }
        if let Some(broken) = &reconstruction.broken_link {
            writeln!(
                out,
                "ALTERED: {broken}; the recorded SHA-256 proves nothing. Run `sf2520 verify`."
            )?;
        }
    }
    let exit = if reconstruction.matches() {
        Exit::Success
    } else {
        Exit::LedgerDamaged
    };
    if args.json {
        writeln!(
            out,
            "{}",
            json!({
                "kommune": file.kommune.code(), "kommune_name": file.kommune.name(),
                "sequence": file.sequence, "file_name": file.file_name,
                "matches": reconstruction.matches(), "path": path.display().to_string(),
                "recorded_sha256": hex(&file.sha256), "rebuilt_sha256": hex(&reconstruction.sha256),
                "position": file.position, "projection_damage": file.damage,
                "broken_link": reconstruction.broken_link,
            })
        )?;
    } else if reconstruction.matches() {
        writeln!(
            out,
            "ok: {} rebuilt from the log into {}; SHA-256 {} equals the one recorded at position {}",
            file.file_name,
            path.display(),
            hex(&reconstruction.sha256),
            file.position
        )?;
    } else {
        writeln!(
            out,
            "MISMATCH: {} rebuilt from the log differs from the file that was sent.\n  recorded SHA-256 (position {}): {}\n  rebuilt  SHA-256:              {}\n  The ledger's history or the rendering code has changed; run `sf2520 verify`. Rebuilt bytes written to {} for comparison.",
            file.file_name,
            file.position,
            hex(&file.sha256),
            hex(&reconstruction.sha256),
            path.display()
        )?;
    }
    Ok(exit.into())
}

/// Writes a file owner-only (it holds full CPR numbers) and atomically, replacing
/// one of the same name. Regression: `reconstruct` wrote with `fs::write`, so the
/// file got the umask's mode, typically readable by everyone.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let Some(name) = path.file_name().and_then(|name| name.to_str()) else {
        bail!("{} is not a file name", path.display());
    };
    write_bytes_atomically(dir, name, bytes)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

pub(super) fn run_files(data_dir: &Path, args: &FilesArgs) -> anyhow::Result<ExitCode> {
    let ledger = Ledger::open_read_only(data_dir)?;
    let kommune = args.kommune.as_deref().map(Kommune::parse).transpose()?;
    let files = ledger.official_files(kommune)?;
    let mut out = io::stdout().lock();
    let mut rows = Vec::new();
    let mut items = Vec::new();
    for file in &files {
        let state = ledger.delivery_state(file.kommune, file.sequence)?;
        if args.json {
            items.push(json!({
                "kommune": file.kommune.code(), "kommune_name": file.kommune.name(),
                "sequence": file.sequence, "file_name": file.file_name,
                "created_at": time_us(file.created_at_us), "records": file.record_count,
                "net": kroner(file.net_ore()), "sha256": hex(&file.sha256),
                "file_id": uuid::Uuid::from_bytes(file.file_id).to_string(), "delivery": state,
                "position": file.position, "projection_damage": file.damage,
            }));
        } else {
            rows.push(vec![
                format!("{} {}", file.kommune, file.kommune.name()),
                file.sequence.to_string(),
                time_us(file.created_at_us)[..19].replace('T', " "),
                file.record_count.to_string(),
                kroner(file.net_ore()),
                hex(&file.sha256)[..16].to_string(),
                for_terminal(&state.label()),
            ]);
        }
    }
    if args.json {
        writeln!(out, "{}", json!({"files": items}))?;
    } else if files.is_empty() {
        writeln!(out, "no official files yet; run `sf2520 export`")?;
    } else {
        let headers = [
            "kommune",
            ">løbenummer",
            "created (UTC)",
            ">records",
            ">net",
            "sha256",
            "delivery",
        ];
        write!(out, "{}", table(&headers, &rows))?;
        for damage in files.iter().filter_map(|file| file.damage.as_ref()) {
            writeln!(out, "warning: {damage}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn run_reissue(
    data_dir: &Path,
    config: Option<&Path>,
    args: &ReissueArgs,
) -> anyhow::Result<ExitCode> {
    let sftp = sftp_config(data_dir, config)?;
    let mut ledger = Ledger::open_existing(data_dir)?;
    let kommune = Kommune::parse(&args.file.kommune)?;
    let sequence = args.file.seq;
    let outbox = args.out.clone().unwrap_or_else(|| default_outbox(data_dir));
    let mut out = io::stdout().lock();
    let lock_wait = Duration::from_secs(args.lock_wait);
    match reissue(&mut ledger, kommune, sequence, &outbox, lock_wait)? {
        Ok(done) => {
            let reissued = json!({
                "kommune": kommune.code(), "kommune_name": kommune.name(), "sequence": sequence,
                "path": done.written.path.display().to_string(), "sha256": hex(&done.written.sha256),
                "senders_file_id": done.delivery_id.to_string(), "position": done.position,
                "head": Anchor::of(&ledger.witness_head()?).to_string(),
            });
            if !args.json {
                writeln!(
                    out,
                    "reissued: {} is back in the outbox, byte for byte (SHA-256 {}); it will be delivered again as SendersFileId {} (FileReissued at position {})",
                    done.written.path.display(),
                    hex(&done.written.sha256),
                    done.delivery_id,
                    done.position
                )?;
                writeln!(out, "head: {}", Anchor::of(&ledger.witness_head()?))?;
            }
            drop(out);
            let document = args.json.then(|| json!({"reissued": reissued}));
            let Some(sftp) = sftp else {
                match document {
                    Some(mut document) => {
                        document["configured"] = json!(false);
                        println!("{document}");
                    }
                    None => println!(
                        "deliver: no [sftp] configuration; the file waits in the local outbox"
                    ),
                }
                return Ok(ExitCode::SUCCESS);
            };
            let request = DeliverRequest {
                kommune: Some(kommune),
                sequence: Some(sequence),
            };
            let (_, exit) = deliver_and_report(ledger, &sftp, &request, &outbox, document)?;
            Ok(exit.into())
        }
        Err(mismatch) => {
            print_refused(&mut out, &mismatch, args.json)?;
            Ok(Exit::LedgerDamaged.into())
        }
    }
}

/// A reissue refused because the file rendered from the log is not the one sent.
fn print_refused(out: &mut dyn Write, mismatch: &Reconstruction, json: bool) -> io::Result<()> {
    if json {
        return writeln!(
            out,
            "{}",
            json!({
                "refused": true, "file_name": mismatch.file.file_name,
                "broken_link": mismatch.broken_link,
                "recorded_sha256": hex(&mismatch.file.sha256), "rebuilt_sha256": hex(&mismatch.sha256),
            })
        );
    }
    if let Some(broken) = &mismatch.broken_link {
        writeln!(out, "ALTERED: {broken}")?;
    }
    writeln!(
        out,
        "REFUSED: {} rebuilt from the log no longer matches the file that was sent (recorded {}, rebuilt {}); nothing was written. Run `sf2520 verify`.",
        mismatch.file.file_name,
        hex(&mismatch.file.sha256),
        hex(&mismatch.sha256)
    )
}
