//! The exit-code contract: one table, used by `main`, by `--help` and by
//! docs/operations.md, and the mapping from typed errors to its codes.
//!
//! A monitor (cron's mail, a systemd `OnFailure=`, Nagios) must be able to tell
//! "KY's file was bad" from "the ledger is damaged" from "the platform has not
//! accepted a file yet" without reading the text, so each has its own code.
//! `status --check` alone follows the monitoring-plugin convention instead
//! (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN; see `status`).

use std::process::ExitCode;

use crate::audit::checkpoint::CheckpointError;
use crate::export::ExportError;
use crate::ingest::IngestError;
use crate::ledger::{BackupError, LedgerError};
use crate::transport::{ConfigError, TransportError};

/// How a run ended, as the process's exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Success,
    /// Anything not listed below (an unreadable file, a full disk, a bug).
    Failure,
    /// The command line itself was wrong (clap's own code).
    Usage,
    /// Input was rejected and nothing of it was written: ingest lines, an inbox
    /// file, an invalid SF2520 file given to `check`, a bad value of an option.
    InputRejected,
    /// The ledger is damaged: `verify` found a broken chain or projection, an
    /// event cannot be decoded, a file no longer rebuilds to its SHA-256.
    LedgerDamaged,
    /// Another run holds what this one needs: the export lock (another export or
    /// reissue is running, or recorded a file while this one worked) or the
    /// ledger's write lock (a long ingest). Try again later.
    ExportRunning,
    /// Configuration: no ledger at the data directory, a bad or too-open
    /// config file, a key that cannot be read.
    Configuration,
    /// Delivery is not complete: a file waits for its receipt, was rejected and
    /// not reissued, failed to upload, or `--deliver` was asked without `[sftp]`.
    DeliveryIncomplete,
    /// The SFTP server's host key is not the pinned one.
    HostKeyMismatch,
    /// The platform already holds another file under the name of a file to
    /// deliver (other bytes in `OUT/`, a receipt of a delivery it never had):
    /// that file was not uploaded, and nothing on the platform was overwritten.
    NameTaken,
    /// What was asked needs a CPR that was erased under retention (`reconstruct`,
    /// `reissue`, `export --as-of` of a file that held an erased agreement).
    PersonalDataErased,
    /// The database lacks history this node acknowledged or handed out (its
    /// head mark): a lossy failover, a lost WAL, an older copy put in place.
    /// Nothing was written; `sf2520 accept-loss` is the explicit way on.
    HistoryLost,
    /// The PostgreSQL primary has no synchronous standby (or commits do not wait
    /// for one) and `[database] require_synchronous` is on: nothing was written.
    NoSynchronousStandby,
    /// Stopped by SIGINT (Ctrl-C) at a safe point, having cleaned up.
    Interrupted,
    /// Stopped by SIGTERM at a safe point, having cleaned up.
    Terminated,
}

/// The contract: every exit code, its number and what it means.
pub const TABLE: [(Exit, u8, &str); 15] = [
    (Exit::Success, 0, "success"),
    (Exit::Failure, 1, "general failure (see the message)"),
    (
        Exit::Usage,
        2,
        "the command line is wrong (unknown option, missing value)",
    ),
    (
        Exit::InputRejected,
        3,
        "input rejected; nothing of it was written",
    ),
    (
        Exit::LedgerDamaged,
        4,
        "ledger damaged (verify failure, corrupt ledger)",
    ),
    (
        Exit::ExportRunning,
        5,
        "another export is running, or the ledger is busy: try again later",
    ),
    (
        Exit::Configuration,
        6,
        "configuration error (no ledger, bad config file)",
    ),
    (
        Exit::DeliveryIncomplete,
        7,
        "delivery not complete (pending receipt, rejected, or not configured)",
    ),
    (
        Exit::HostKeyMismatch,
        8,
        "the SFTP host key is not the pinned one",
    ),
    (
        Exit::PersonalDataErased,
        9,
        "needs personal data erased under retention (sf2520 retention)",
    ),
    (
        Exit::HistoryLost,
        10,
        "the database lacks history this node acknowledged (failover lost writes)",
    ),
    (
        Exit::NameTaken,
        11,
        "the platform holds another file under a name to deliver; not overwritten, not sent",
    ),
    (
        Exit::NoSynchronousStandby,
        12,
        "no synchronous standby: a failover could lose this write (nothing written)",
    ),
    (
        Exit::Interrupted,
        130,
        "stopped by SIGINT (Ctrl-C) at a safe point; nothing half-done kept",
    ),
    (
        Exit::Terminated,
        143,
        "stopped by SIGTERM at a safe point; nothing half-done kept",
    ),
];

/// The table as `--help` shows it (after the options). A unit test checks that
/// it lists exactly [`TABLE`].
pub const AFTER_HELP: &str = "\
Exit codes:
    0  success
    1  general failure (see the message)
    2  the command line is wrong (unknown option, missing value)
    3  input rejected; nothing of it was written
    4  ledger damaged (verify failure, corrupt ledger)
    5  another export is running, or the ledger is busy: try again later
    6  configuration error (no ledger, bad config file)
    7  delivery not complete (pending receipt, rejected, or not configured)
    8  the SFTP host key is not the pinned one
    9  needs personal data erased under retention (sf2520 retention)
   10  the database lacks history this node acknowledged (failover lost writes)
   11  the platform holds another file under a name to deliver; not overwritten, not sent
   12  no synchronous standby: a failover could lose this write (nothing written)
  130  stopped by SIGINT (Ctrl-C) at a safe point; nothing half-done kept
  143  stopped by SIGTERM at a safe point; nothing half-done kept
`status --check` uses the monitoring-plugin codes instead: 0 OK, 1 WARNING,
2 CRITICAL, 3 UNKNOWN.";

impl Exit {
    pub fn code(self) -> u8 {
        TABLE
            .iter()
            .find(|(exit, _, _)| *exit == self)
            .map_or(1, |(_, code, _)| *code)
    }

    /// `exit code N: meaning`, as the table says, for a run's last line.
    pub fn explained(self) -> String {
        let meaning = TABLE
            .iter()
            .find(|(exit, _, _)| *exit == self)
            .map_or("general failure", |(_, _, meaning)| *meaning);
        format!("exit code {}: {meaning}", self.code())
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit.code())
    }
}

/// The exit code for an error that ended a run: the first typed error along its
/// chain of causes that the contract names decides; anything else is a failure.
pub fn classify(error: &anyhow::Error) -> Exit {
    error
        .chain()
        .find_map(|cause| {
            if let Some(error) = cause.downcast_ref::<LedgerError>() {
                ledger(error)
            } else if let Some(error) = cause.downcast_ref::<IngestError>() {
                ingest(error)
            } else if let Some(error) = cause.downcast_ref::<ExportError>() {
                export(error)
            } else if let Some(error) = cause.downcast_ref::<TransportError>() {
                transport(error)
            } else if let Some(error) = cause.downcast_ref::<BackupError>() {
                backup(error)
            } else if let Some(error) = cause.downcast_ref::<CheckpointError>() {
                checkpoint(error)
            } else if cause.downcast_ref::<ConfigError>().is_some() {
                Some(Exit::Configuration)
            } else if cause.downcast_ref::<crate::domain::DomainError>().is_some()
                || cause.downcast_ref::<crate::input::InputError>().is_some()
            {
                Some(Exit::InputRejected)
            } else {
                None
            }
        })
        .unwrap_or(Exit::Failure)
}

fn ledger(error: &LedgerError) -> Option<Exit> {
    match error {
        LedgerError::NoLedger { .. }
        | LedgerError::InsecurePermissions { .. }
        | LedgerError::NotOwner { .. }
        | LedgerError::NotADirectory { .. }
        | LedgerError::ReadOnlyDirectory { .. }
        | LedgerError::BadDatabaseUrl { .. }
        | LedgerError::Connect { .. }
        | LedgerError::TargetNotEmpty { .. }
        | LedgerError::KeyFileMissing { .. }
        | LedgerError::KeyFileInvalid { .. }
        | LedgerError::KeyFileIo { .. }
        | LedgerError::KeyFileMismatch { .. } => Some(Exit::Configuration),
        LedgerError::PersonalDataErased { .. } => Some(Exit::PersonalDataErased),
        LedgerError::Interrupted(stop) => Some(match stop.signal {
            crate::interrupt::StopSignal::Interrupt => Exit::Interrupted,
            crate::interrupt::StopSignal::Terminate => Exit::Terminated,
        }),
        LedgerError::ExportRunning { .. } | LedgerError::Busy { .. } => Some(Exit::ExportRunning),
        LedgerError::BehindMark(_) | LedgerError::MarkMismatch(_) => Some(Exit::HistoryLost),
        LedgerError::NoSynchronousStandby { .. } => Some(Exit::NoSynchronousStandby),
        LedgerError::DamagedMark { .. } => Some(Exit::LedgerDamaged),
        LedgerError::UnknownAgreement { .. }
        | LedgerError::NoSuchPosition { .. }
        | LedgerError::PositionOutOfRange { .. }
        | LedgerError::NoSuchFile { .. } => Some(Exit::InputRejected),
        LedgerError::CorruptPayload { .. }
        | LedgerError::NotALedger { .. }
        | LedgerError::CorruptLedger { .. }
        | LedgerError::FileWithoutEvent { .. }
        | LedgerError::DataKeyDamaged { .. } => Some(Exit::LedgerDamaged),
        _ => None,
    }
}

fn ingest(error: &IngestError) -> Option<Exit> {
    match error {
        // `#[error(transparent)]` hides the inner error from the chain.
        IngestError::Ledger(inner) => ledger(inner),
        IngestError::Read(_) => None,
    }
}

fn export(error: &ExportError) -> Option<Exit> {
    match error {
        // `#[error(transparent)]` hides the inner error from the chain.
        ExportError::Ledger(inner) => ledger(inner),
        ExportError::ConcurrentExport { .. } => Some(Exit::ExportRunning),
        ExportError::OutboxClaimed { .. }
        | ExportError::ForeignFiles { .. }
        | ExportError::DamagedClaim { .. } => Some(Exit::Configuration),
        ExportError::NotAnEntry { .. } | ExportError::MissingWithholding { .. } => {
            Some(Exit::LedgerDamaged)
        }
        _ => None,
    }
}

fn backup(error: &BackupError) -> Option<Exit> {
    match error {
        BackupError::NoLedger { .. } => Some(Exit::Configuration),
        BackupError::LedgerDamaged { .. }
        | BackupError::CopyCorrupt { .. }
        | BackupError::BackupDamaged { .. } => Some(Exit::LedgerDamaged),
        BackupError::Ledger(inner) => ledger(inner),
        _ => None,
    }
}

/// The signing key and the `[audit]` section are configuration; a checkpoint
/// that does not verify is not (its own message says what it means).
fn checkpoint(error: &CheckpointError) -> Option<Exit> {
    match error {
        CheckpointError::TooOpen { .. }
        | CheckpointError::BadKey { .. }
        | CheckpointError::Config { .. } => Some(Exit::Configuration),
        CheckpointError::Read { what, .. } if *what != "checkpoint" => Some(Exit::Configuration),
        _ => None,
    }
}

fn transport(error: &TransportError) -> Option<Exit> {
    error
        .is_host_key_mismatch()
        .then_some(Exit::HostKeyMismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_help_text_lists_exactly_the_table() {
        let rows: Vec<String> = TABLE
            .iter()
            .map(|(_, code, meaning)| format!("{code:>5}  {meaning}"))
            .collect();
        let help_rows: Vec<&str> = AFTER_HELP
            .lines()
            .skip(1)
            .take_while(|line| !line.starts_with('`'))
            .collect();
        assert_eq!(help_rows, rows);
    }

    #[test]
    fn codes_are_distinct() {
        let mut codes: Vec<u8> = TABLE.iter().map(|(_, code, _)| *code).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), TABLE.len());
    }

    #[test]
    fn a_ledger_error_inside_an_export_error_is_found() {
        let error = anyhow::Error::from(ExportError::Ledger(LedgerError::Busy {
            holder: "another export".into(),
            waited_s: 60,
        }));
        assert_eq!(classify(&error), Exit::ExportRunning);
        let error = anyhow::Error::from(LedgerError::NoLedger {
            path: "/nowhere".into(),
        })
        .context("while opening");
        assert_eq!(classify(&error), Exit::Configuration);
    }

    /// Regression guard: `IngestError::Ledger` is transparent, so without its own
    /// arm a busy ledger during an ingest would exit 1 instead of 5.
    #[test]
    fn a_ledger_error_inside_an_ingest_error_is_found() {
        let busy = LedgerError::Busy {
            holder: "an ingest of 1 line(s)".into(),
            waited_s: 60,
        };
        let error = anyhow::Error::from(IngestError::Ledger(busy)).context("while ingesting");
        assert_eq!(classify(&error), Exit::ExportRunning);
        let unreadable = IngestError::Read(std::io::Error::other("disk gone"));
        assert_eq!(classify(&unreadable.into()), Exit::Failure);
    }

    #[test]
    fn a_host_key_mismatch_after_retries_is_still_one() {
        let error = TransportError::RetriesExhausted {
            attempts: 3,
            last: Box::new(TransportError::HostKeyMismatch {
                address: "a".into(),
                offered: "b".into(),
                expected: "c".into(),
            }),
        };
        assert_eq!(classify(&error.into()), Exit::HostKeyMismatch);
    }
}
