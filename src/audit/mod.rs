//! Audit without trusting the program: anchored heads (`POS:HASH` kept outside the
//! database), the outbox checked against the `FileExported` events, and the
//! reconciliation report (`report`).
//!
//! An anchor is a head that someone wrote down when it was printed (every command
//! that appends prints the head it leaves). The log may only grow: a later log
//! must still hold the anchor's hash at the anchor's position, or events were
//! removed, rewritten or an older backup was restored.

pub mod checkpoint;
pub mod report;

use std::fmt;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use sha2::{Digest, Sha256};

use crate::domain::FileExported;
use crate::ledger::{Head, Ledger, LedgerError, GENESIS_HASH};

/// A head written down outside the database: the hash the log had at `position`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Anchor {
    pub position: u64,
    pub hash: [u8; 32],
}

impl Anchor {
    pub fn of(head: &Head) -> Anchor {
        Anchor {
            position: head.position,
            hash: head.hash,
        }
    }
}

/// `POSITION:HASH`, the hash as 64 lower-case hex digits.
impl fmt::Display for Anchor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.position)?;
        for byte in self.hash {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// Why a `POS:HASH` did not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a head: {why}; expected POSITION:HASH as printed by the command that appended, e.g. 42:{example}", example = "0".repeat(64))]
pub struct AnchorParseError {
    pub text: String,
    pub why: &'static str,
}

impl FromStr for Anchor {
    type Err = AnchorParseError;

    fn from_str(text: &str) -> Result<Anchor, AnchorParseError> {
        let fail = |why| AnchorParseError {
            text: text.to_string(),
            why,
        };
        let (position, hash) = text.trim().split_once(':').ok_or_else(|| fail("no ':'"))?;
        let position: u64 = position
            .parse()
            .map_err(|_| fail("the position is not a whole number"))?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(fail("the hash is not 64 hex digits"));
        }
        let mut bytes = [0u8; 32];
        for (index, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hash[index * 2..index * 2 + 2], 16)
                .map_err(|_| fail("the hash is not 64 hex digits"))?;
        }
        Ok(Anchor {
            position,
            hash: bytes,
        })
    }
}

/// Reads a file of anchors, one `POS:HASH` per line; blank lines and lines
/// starting with `#` are skipped, and anything after the hash on a line (a date, a
/// note) is ignored. Errors name the file and line.
pub fn read_anchors(path: &Path) -> Result<Vec<Anchor>, String> {
    let text = fs::read_to_string(path)
        .map_err(|error| format!("cannot read heads file {}: {error}", path.display()))?;
    let mut anchors = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let first = line.split_whitespace().next().unwrap_or(line);
        let anchor = first
            .parse()
            .map_err(|error| format!("{}:{}: {error}", path.display(), index + 1))?;
        anchors.push(anchor);
    }
    Ok(anchors)
}

/// Checks that the log still holds `anchor`; `Some(problem)` names the position.
pub fn check_anchor(ledger: &Ledger, anchor: &Anchor) -> Result<Option<String>, LedgerError> {
    let head = ledger.head()?;
    if anchor.position > head.position {
        return Ok(Some(format!(
            "expected head {anchor}: the log ends at position {}, so it is shorter than position {}: events were removed or an older backup was restored",
            head.position, anchor.position
        )));
    }
    let hash = match anchor.position {
        0 => GENESIS_HASH,
        position => ledger.event_at(position)?.hash,
    };
    Ok((hash != anchor.hash).then(|| {
        format!(
            "expected head {anchor}: the log's hash at position {} is {}: the history up to there was rewritten",
            anchor.position,
            hex(&hash)
        )
    }))
}

/// An official file missing from the outbox or not the bytes its event recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxProblem {
    pub kommune: String,
    pub sequence: u32,
    pub path: PathBuf,
    /// Position of the file's `FileExported` event.
    pub position: u64,
    pub what: String,
}

impl fmt::Display for OutboxProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "outbox: kommune {} løbenummer {}: {} {} (FileExported at position {}); `sf2520 reissue --kommune {} --seq {}` puts the recorded bytes back",
            self.kommune,
            self.sequence,
            self.path.display(),
            self.what,
            self.position,
            self.kommune,
            self.sequence
        )
    }
}

/// Hashes every official file in `outbox` against its `FileExported` event (a
/// reissue puts the same bytes back, so the first event's hash holds for good).
pub fn check_outbox(outbox: &Path, files: &[(u64, FileExported)]) -> Vec<OutboxProblem> {
    let mut problems = Vec::new();
    for (position, file) in files {
        let path = outbox.join(&file.file_name);
        let problem = |what: String| OutboxProblem {
            kommune: file.kommune.code(),
            sequence: file.sequence,
            path: path.clone(),
            position: *position,
            what,
        };
        match sha256_of(&path) {
            Ok(sha256) if sha256 == file.sha256 => {}
            Ok(sha256) => problems.push(problem(format!(
                "was edited: its SHA-256 is {} but the event recorded {}",
                hex(&sha256),
                hex(&file.sha256)
            ))),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                problems.push(problem("is missing".into()))
            }
            Err(error) => problems.push(problem(format!("cannot be read: {error}"))),
        }
    }
    problems
}

fn sha256_of(path: &Path) -> std::io::Result<[u8; 32]> {
    let mut file = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            return Ok(hasher.finalize().into());
        }
        hasher.update(&buffer[..read]);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// What `verify` checks beside the chain and the projections.
#[derive(Clone, Debug, Default)]
pub struct AuditChecks {
    /// Heads the log must still hold.
    pub anchors: Vec<Anchor>,
    /// The outbox to hash against the `FileExported` events, if any.
    pub outbox: Option<PathBuf>,
}

/// The outcome of a full verification.
#[derive(Clone, Debug)]
pub struct Verification {
    /// The chain walk and the replay: the report, or the first damage found.
    pub ledger: Result<crate::ledger::VerifyReport, crate::ledger::VerifyFailure>,
    /// Anchors the log no longer holds.
    pub anchor_problems: Vec<String>,
    /// Official files missing from the outbox or edited there.
    pub outbox_problems: Vec<OutboxProblem>,
    /// The outbox that was checked (none when the chain failed first, or none asked).
    pub outbox_checked: Option<PathBuf>,
}

impl Verification {
    pub fn passed(&self) -> bool {
        self.ledger.is_ok() && self.anchor_problems.is_empty() && self.outbox_problems.is_empty()
    }

    /// Every problem found, one line each.
    pub fn problems(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if let Err(failure) = &self.ledger {
            lines.push(failure.to_string());
        }
        lines.extend(self.anchor_problems.iter().cloned());
        lines.extend(self.outbox_problems.iter().map(ToString::to_string));
        lines
    }
}

/// Walks the chain, compares the projections, checks every anchor and (when the
/// chain holds, so its `FileExported` events can be trusted) the outbox.
pub fn verify(ledger: &Ledger, checks: &AuditChecks) -> Result<Verification, LedgerError> {
    let verified = ledger.verify(|_| {})?;
    let mut anchor_problems = Vec::new();
    for anchor in &checks.anchors {
        if let Some(problem) = check_anchor(ledger, anchor)? {
            anchor_problems.push(problem);
        }
    }
    let (outbox_problems, outbox_checked) = match (&verified, &checks.outbox) {
        (Ok(report), Some(outbox)) => {
            // A copy retention removed is gone on purpose, not missing.
            let kept: Vec<(u64, FileExported)> = report
                .files
                .iter()
                .filter(|(_, file)| {
                    !report
                        .retired
                        .iter()
                        .any(|r| (r.kommune, r.sequence) == (file.kommune, file.sequence))
                })
                .cloned()
                .collect();
            (check_outbox(outbox, &kept), Some(outbox.clone()))
        }
        _ => (Vec::new(), None),
    };
    Ok(Verification {
        ledger: verified,
        anchor_problems,
        outbox_problems,
        outbox_checked,
    })
}
