//! `sf2520 accept-loss`: the one way on when the database lacks history this
//! node acknowledged (exit 10, a lossy failover or an older copy put in place).
//!
//! A dry run by default: it names this node's head mark, the database's head,
//! and the official files in the outbox that the database does not hold. With
//! `--apply --position N --hash HASH` (the mark, typed back, so that nobody
//! accepts a loss they have not read) it moves those files to `outbox/.lost/`,
//! records a `LossAccepted` event naming the lost head and the files, and moves
//! the mark to the new head. What to do about files already delivered is a
//! matter for UDK (docs/operations.md, "A failover that lost writes").

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use serde_json::json;

use crate::domain::LossAccepted;
use crate::export::outbox::{sha256_of, LOST_DIR};
use crate::ledger::{nofollow, read_mark, HeadMark, Ledger};

use super::exit::Exit;
use super::output::{for_terminal, hex};
use super::AcceptLossArgs;

/// An official file in the outbox that the chain does not hold.
struct LostFile {
    name: String,
    sha256: [u8; 32],
    /// The register holds the name with other bytes (else not at all).
    other_bytes: bool,
}

pub(super) fn run(data_dir: &Path, args: &AcceptLossArgs) -> anyhow::Result<ExitCode> {
    let (mut ledger, refusal) = Ledger::open_for_loss(data_dir)?;
    let outbox = args
        .outbox
        .clone()
        .unwrap_or_else(|| crate::export::default_outbox(data_dir));
    let mut out = io::stdout().lock();
    let (Some(refusal), Some(mark)) = (refusal, read_mark(data_dir)?) else {
        let head = ledger.head()?;
        if args.json {
            writeln!(
                out,
                "{}",
                json!({"loss": false, "head_position": head.position})
            )?;
        } else {
            writeln!(out, "the database holds every head this node acknowledged (ledger.head): there is no loss to accept; head position {}", head.position)?;
        }
        return Ok(ExitCode::SUCCESS);
    };
    let head = ledger.head()?;
    let lost = lost_files(&ledger, &outbox)?;
    let apply = match (args.apply, args.position, args.hash.as_deref()) {
        (false, _, _) => false,
        (true, Some(position), Some(hash))
            if position == mark.position && hash.eq_ignore_ascii_case(&hex(&mark.hash)) =>
        {
            true
        }
        (true, _, _) => {
            super::logging::to_stderr(
                tracing::Level::ERROR,
                &format!(
                    "--apply needs --position {} --hash {}: the head this node \
                     acknowledged, typed back, so that the loss accepted is the one read. \
                     Nothing was changed",
                    mark.position,
                    hex(&mark.hash)
                ),
            );
            return Ok(Exit::InputRejected.into());
        }
    };
    if !apply {
        print_plan(
            &mut out,
            &refusal.to_string(),
            &mark,
            head.position,
            &outbox,
            &lost,
            args.json,
        )?;
        return Ok(Exit::HistoryLost.into());
    }
    apply_loss(
        &mut ledger,
        &mut out,
        &mark,
        head.position,
        &outbox,
        &lost,
        args.json,
    )
}

/// Moves the lost files aside, records `LossAccepted`, moves the mark, and says
/// what was done.
fn apply_loss(
    ledger: &mut Ledger,
    out: &mut dyn Write,
    mark: &HeadMark,
    head_position: u64,
    outbox: &Path,
    lost: &[LostFile],
    json: bool,
) -> anyhow::Result<ExitCode> {
    let moved = move_lost(outbox, lost)?;
    let event = LossAccepted {
        lost_position: mark.position,
        lost_hash: mark.hash,
        database_head_position: head_position,
        node: crate::ledger::host_name(),
        files: lost.iter().map(|file| file.name.clone()).collect(),
    };
    let new_head = ledger.accept_loss(event)?;
    tracing::warn!(lost_position = mark.position, lost_hash = %hex(&mark.hash), database_head = head_position, files = lost.len(), "accepted the loss of history this node had acknowledged");
    let anchor = crate::audit::Anchor::of(&new_head).to_string();
    if json {
        writeln!(
            out,
            "{}",
            json!({
                "loss": true, "applied": true, "lost_position": mark.position,
                "lost_hash": hex(&mark.hash), "database_head_position": head_position,
                "recorded_at_position": new_head.position, "moved": moved, "head": anchor,
            })
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "accepted: the loss of positions {}..={} (this node's head {}:{}) is recorded as LossAccepted at position {}",
        head_position + 1,
        mark.position,
        mark.position,
        hex(&mark.hash),
        new_head.position
    )?;
    for path in &moved {
        writeln!(out, "moved {}", for_terminal(path))?;
    }
    writeln!(out, "head: {anchor}")?;
    Ok(ExitCode::SUCCESS)
}

/// The official files in `outbox` that the database's register does not hold
/// with their bytes, in name order.
fn lost_files(ledger: &Ledger, outbox: &Path) -> anyhow::Result<Vec<LostFile>> {
    let register: HashMap<String, [u8; 32]> = ledger
        .official_files(None)?
        .into_iter()
        .map(|file| (file.file_name.clone(), file.sha256))
        .collect();
    let entries = match std::fs::read_dir(outbox) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => {
            return Err(error).with_context(|| format!("cannot list {}", outbox.display()))
        }
    };
    let mut lost = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", outbox.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let official = name.starts_with("SF2520_") && name.ends_with(".txt");
        if !official || !entry.file_type().is_ok_and(|kind| kind.is_file()) {
            continue;
        }
        let sha256 = sha256_of(&entry.path())?;
        match register.get(&name) {
            Some(recorded) if *recorded == sha256 => {}
            recorded => lost.push(LostFile {
                name,
                sha256,
                other_bytes: recorded.is_some(),
            }),
        }
    }
    lost.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(lost)
}

fn print_plan(
    out: &mut dyn Write,
    refusal: &str,
    mark: &HeadMark,
    head_position: u64,
    outbox: &Path,
    lost: &[LostFile],
    json: bool,
) -> io::Result<()> {
    let apply = format!(
        "sf2520 accept-loss --apply --position {} --hash {}",
        mark.position,
        hex(&mark.hash)
    );
    if json {
        let files: Vec<_> = lost
            .iter()
            .map(|file| json!({"name": file.name, "sha256": hex(&file.sha256), "registered_with_other_bytes": file.other_bytes}))
            .collect();
        return writeln!(
            out,
            "{}",
            json!({"loss": true, "applied": false, "lost_position": mark.position,
                   "lost_hash": hex(&mark.hash), "database_head_position": head_position,
                   "outbox": outbox.display().to_string(), "files": files, "apply": apply})
        );
    }
    writeln!(out, "{}", for_terminal(refusal))?;
    writeln!(
        out,
        "this node acknowledged position {} (hash {}); the database's head is position {}",
        mark.position,
        hex(&mark.hash),
        head_position
    )?;
    if lost.is_empty() {
        writeln!(
            out,
            "no official file in {} is missing from the database",
            outbox.display()
        )?;
    }
    for file in lost {
        writeln!(
            out,
            "lost file {} (SHA-256 {}): {}",
            for_terminal(&file.name),
            hex(&file.sha256),
            if file.other_bytes {
                "the database's register has this name with other bytes"
            } else {
                "the database's register does not have it; its løbenummer will be given again"
            }
        )?;
    }
    writeln!(out, "nothing was changed. Before accepting: bring the lost events back if the old primary's data still exists; for files already delivered, agree with UDK what becomes of them (docs/operations.md, \"A failover that lost writes\"). To accept the loss:\n  {apply}")
}

/// Moves the lost files into `outbox/.lost/` (owner-only), returning the new
/// paths. A name already there is kept: the file goes beside it with a suffix.
fn move_lost(outbox: &Path, lost: &[LostFile]) -> anyhow::Result<Vec<String>> {
    if lost.is_empty() {
        return Ok(Vec::new());
    }
    let folder = outbox.join(LOST_DIR);
    nofollow::private_dir(&folder).with_context(|| format!("cannot use {}", folder.display()))?;
    let mut moved = Vec::with_capacity(lost.len());
    for file in lost {
        let mut target: PathBuf = folder.join(&file.name);
        let mut copy = 1;
        while target.exists() {
            target = folder.join(format!("{}.{copy}", file.name));
            copy += 1;
        }
        let source = outbox.join(&file.name);
        std::fs::rename(&source, &target)
            .with_context(|| format!("cannot move {} to {}", source.display(), target.display()))?;
        moved.push(target.display().to_string());
    }
    crate::export::outbox::sync_dir(outbox)?;
    crate::export::outbox::sync_dir(&folder)?;
    Ok(moved)
}
