//! What waits in KY's inbox and what `ingest --inbox` set aside in its
//! `rejected/`, for `status` and `metrics`.
//!
//! The inbox is `--inbox DIR`, else the configuration's `[retention] inbox`
//! (the key `retention` already reads); without either, nothing is reported.
//! Nothing is opened or followed: names are listed and `symlink_metadata`
//! gives each one's time.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The inbox to report on: `given`, else `[retention] inbox` of the
/// configuration file (one that cannot be read or parsed names none here: the
/// commands that need it report why).
pub(super) fn inbox_dir(
    data_dir: &Path,
    config: Option<&Path>,
    given: Option<&Path>,
) -> Option<PathBuf> {
    match given {
        Some(dir) => Some(dir.to_path_buf()),
        None => super::privacy::configured_inbox(data_dir, config),
    }
}

/// The inbox's files, as listed now.
pub(super) struct InboxState {
    pub dir: PathBuf,
    /// `*.jsonl` names in the inbox not starting with a dot: the next
    /// `ingest --inbox` takes them.
    pub waiting: usize,
    /// The modification time of the oldest of them (µs since the epoch).
    pub oldest_waiting_us: Option<i64>,
    /// Files in `rejected/` (their `.errors.txt` and `.errors.json` not counted).
    pub rejected: usize,
}

/// Whether `name` is an input file the next `ingest --inbox` takes.
fn is_waiting(name: &str) -> bool {
    !name.starts_with('.') && name.ends_with(".jsonl")
}

/// Whether `name` in `rejected/` is a rejected file, not its errors.
fn is_rejected(name: &str) -> bool {
    !name.starts_with('.') && !name.ends_with(".errors.txt") && !name.ends_with(".errors.json")
}

fn modified_us(metadata: &fs::Metadata) -> Option<i64> {
    let time = metadata.modified().ok()?;
    let since = time.duration_since(SystemTime::UNIX_EPOCH).ok()?;
    i64::try_from(since.as_micros()).ok()
}

/// The names in `dir` that `keep` selects, each with its own metadata (a link's,
/// never its target's).
fn listed(dir: &Path, keep: fn(&str) -> bool) -> io::Result<Vec<fs::Metadata>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if keep(&entry.file_name().to_string_lossy()) {
            found.push(fs::symlink_metadata(entry.path())?);
        }
    }
    Ok(found)
}

/// Lists the inbox `dir`; an error names what could not be listed.
pub(super) fn read(dir: &Path) -> Result<InboxState, String> {
    let cannot = |path: &Path, error: io::Error| format!("cannot list {}: {error}", path.display());
    let waiting = listed(dir, is_waiting).map_err(|error| cannot(dir, error))?;
    let rejected_dir = dir.join("rejected");
    let rejected = match fs::symlink_metadata(&rejected_dir) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => 0,
        Err(error) => return Err(cannot(&rejected_dir, error)),
        Ok(metadata) if !metadata.file_type().is_dir() => {
            return Err(format!(
                "{} is not a directory (a link is never followed)",
                rejected_dir.display()
            ))
        }
        Ok(_) => listed(&rejected_dir, is_rejected)
            .map_err(|error| cannot(&rejected_dir, error))?
            .len(),
    };
    Ok(InboxState {
        dir: dir.to_path_buf(),
        waiting: waiting.len(),
        oldest_waiting_us: waiting.iter().filter_map(modified_us).min(),
        rejected,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_beside_a_rejected_file_are_not_counted() {
        assert!(is_rejected("2026-10-02.jsonl"));
        assert!(is_rejected("2026-10-02.jsonl.1"));
        assert!(!is_rejected("2026-10-02.jsonl.errors.txt"));
        assert!(!is_rejected("2026-10-02.jsonl.errors.json"));
        assert!(is_waiting("a.jsonl"));
        assert!(!is_waiting(".a.jsonl.tmp"));
        assert!(!is_waiting("notes.txt"));
    }
}
