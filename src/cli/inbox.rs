//! `sf2520 ingest --inbox DIR`: every complete KY file waiting in a directory,
//! in name order; accepted files move to `DIR/archive/`, rejected ones to
//! `DIR/rejected/` with their errors beside them.
//!
//! Only complete files: a writer writes `.NAME.jsonl.tmp` (a hidden name, which
//! is never read) and renames it to `NAME.jsonl` in the same directory when it is
//! whole; a rename is atomic, so a `*.jsonl` name always holds a complete file.
//! One run at a time: `DIR/.sf2520-inbox.lock` is locked (flock) for the run and
//! holds the holder's pid and start time, which a second run quotes.
//!
//! A crash between a file's commit and its move leaves it in the inbox; the next
//! run finds every line already recorded (duplicates) and archives it.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::bail;
use serde_json::json;

use crate::ingest::IngestOutcome;
use crate::ledger::{try_lock_named, HeldLock, IngestMode, Ledger, LockAttempt};

use super::exit::Exit;
use super::ingest::{ingest_file, os_error, outcome_json, print_outcome};
use super::IngestArgs;

/// The lock file inside the inbox.
pub(super) const LOCK_FILE: &str = ".sf2520-inbox.lock";

/// Takes the inbox's lock without waiting; a held lock is an error naming the
/// holder as it wrote itself into the lock file.
fn lock(dir: &Path) -> anyhow::Result<HeldLock> {
    let path = dir.join(LOCK_FILE);
    match try_lock_named(&path).map_err(|error| os_error("lock", &path, "write", &error))? {
        LockAttempt::Taken(lock) => Ok(lock),
        LockAttempt::Busy { holder } => bail!(
            "another `sf2520 ingest --inbox` is working on {} (lock {} held by {holder}); \
             nothing was done. Run again when it has finished",
            dir.display(),
            path.display()
        ),
    }
}

/// The complete files waiting: regular `*.jsonl` files whose name does not start
/// with a dot, in byte order of their names.
fn waiting_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let entries = fs::read_dir(dir).map_err(|error| os_error("list", dir, "read", &error))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|error| os_error("list", dir, "read", &error))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') || !name.ends_with(".jsonl") {
            continue;
        }
        let is_file = entry
            .file_type()
            .map_err(|error| os_error("inspect", &entry.path(), "read", &error))?
            .is_file();
        if is_file {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

fn private_dir(path: &Path) -> anyhow::Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    DirBuilder::new()
        .mode(0o700)
        .create(path)
        .map_err(|error| os_error("create", path, "write", &error))
}

/// A name in `dir` not yet taken: `name`, else `name.1`, `name.2`, … (a file of
/// the same name archived earlier is never overwritten).
fn free_name(dir: &Path, name: &str) -> PathBuf {
    let mut candidate = dir.join(name);
    let mut counter = 0u32;
    while candidate.exists() {
        counter += 1;
        candidate = dir.join(format!("{name}.{counter}"));
    }
    candidate
}

/// Moves `file` into `dir` and makes the move durable.
fn move_into(file: &Path, dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let target = free_name(dir, name);
    fs::rename(file, &target).map_err(|error| os_error("move", file, "write", &error))?;
    for synced in [dir, file.parent().unwrap_or(Path::new("."))] {
        File::open(synced)
            .and_then(|handle| handle.sync_all())
            .map_err(|error| os_error("sync", synced, "read", &error))?;
    }
    Ok(target)
}

/// Writes `NAME.errors.txt` and `NAME.errors.json` beside a rejected file.
fn write_errors(rejected: &Path, text: &str, json: &serde_json::Value) -> anyhow::Result<()> {
    for (suffix, content) in [
        ("errors.txt", text.to_owned()),
        ("errors.json", format!("{json}\n")),
    ] {
        let path = PathBuf::from(format!("{}.{suffix}", rejected.display()));
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut file| file.write_all(content.as_bytes()))
            .map_err(|error| os_error("write", &path, "write", &error))?;
    }
    Ok(())
}

pub(super) fn run(ledger: &mut Ledger, dir: &Path, args: &IngestArgs) -> anyhow::Result<ExitCode> {
    if !dir.is_dir() {
        bail!(
            "inbox {} is not a directory; create it (writable by KY's transfer, readable by sf2520)",
            dir.display()
        );
    }
    let _lock = lock(dir)?;
    let archive = dir.join("archive");
    let rejected_dir = dir.join("rejected");
    private_dir(&archive)?;
    private_dir(&rejected_dir)?;
    let mut documents = Vec::new();
    let mut rejected_count = 0usize;
    let files = waiting_files(dir)?;
    for file in &files {
        // `waiting_files` lists only files whose names are UTF-8 and end `.jsonl`.
        let name = file
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .expect("waiting_files lists named files");
        let outcome = ingest_file(ledger, file, IngestMode::Commit)?;
        let mut text = Vec::new();
        print_outcome(&mut text, &name, &outcome, args.verbose)?;
        let mut document = outcome_json(&name, &outcome, args.verbose);
        let moved = match &outcome {
            IngestOutcome::Committed(_) => move_into(file, &archive, &name)?,
            IngestOutcome::Checked(_) => anyhow::bail!(
                "{name}: an inbox run commits, but its ingest came back as a dry run; \
                 this is a bug in sf2520. The file was left in the inbox"
            ),
            IngestOutcome::Rejected { .. } => {
                rejected_count += 1;
                let moved = move_into(file, &rejected_dir, &name)?;
                write_errors(&moved, &String::from_utf8_lossy(&text), &document)?;
                moved
            }
        };
        document["moved_to"] = json!(moved.display().to_string());
        if !args.json {
            let mut out = io::stdout().lock();
            out.write_all(&text)?;
            writeln!(out, "{name}: moved to {}", moved.display())?;
            out.flush()?;
        }
        documents.push(document);
    }
    if args.json {
        writeln!(
            io::stdout().lock(),
            "{}",
            json!({"inbox": dir.display().to_string(), "files": documents, "rejected": rejected_count})
        )?;
    } else {
        writeln!(
            io::stdout().lock(),
            "inbox {}: {} file(s), {} accepted, {rejected_count} rejected",
            dir.display(),
            files.len(),
            files.len() - rejected_count
        )?;
    }
    Ok(if rejected_count > 0 {
        Exit::InputRejected.into()
    } else {
        Exit::Success.into()
    })
}
