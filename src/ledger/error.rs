//! LedgerError: what can go wrong opening, appending to and reading the ledger;
//! LineError: an input line the rules refused, which is an outcome of an ingest
//! (`BatchOutcome::Rejected`), not a failure of the ledger.

use std::path::PathBuf;

use thiserror::Error;

use crate::domain::{DomainError, EntryKind};

/// One input line the rules refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("line {line}: {error}")]
pub struct LineError {
    /// 1-based line number in the input.
    pub line: usize,
    pub error: DomainError,
}

#[derive(Debug, Error)]
pub enum LedgerError {
    #[error("cannot create data directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },

    /// A command other than `init` (or `demo`) was pointed at a directory without
    /// a ledger: a typo in `--data-dir` must not silently start a new, empty one.
    #[error(
        "no ledger at {} (run `sf2520 init`); if the ledger is elsewhere, check \
         --data-dir or SF2520_DATA_DIR. Nothing was created",
        .path.display()
    )]
    NoLedger { path: PathBuf },

    #[error("cannot open ledger database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },

    /// A command that writes was run on a data directory this user may not
    /// write (mode 0500, another user's group, a read-only mount).
    #[error(
        "{path} is read-only for this user, and this command writes the ledger there \
         (SQLite keeps its journal beside the database): make it writable by its owner \
         (`chmod 700 {path}`) or remount it read-write; commands that only read (status, \
         files, totals, log, verify) work on it as it is",
        path = .path.display()
    )]
    ReadOnlyDirectory { path: PathBuf },

    #[error(
        "{path} is open to group or others (mode {mode:o}), and it holds full CPR numbers; \
         run `chmod {} {path}`",
        if *.directory { "700" } else { "600" }
    )]
    InsecurePermissions {
        path: PathBuf,
        mode: u32,
        directory: bool,
    },

    #[error(
        "the ledger at {path} has schema version {found}; this program knows version {expected}{}",
        schema_hint(*.found, *.expected)
    )]
    SchemaVersion {
        path: PathBuf,
        found: i64,
        expected: i64,
    },

    #[error("event at position {position} cannot be decoded: {reason}")]
    CorruptPayload { position: u64, reason: String },

    #[error("position {position} does not exist (the log ends at {head})")]
    NoSuchPosition { position: u64, head: u64 },

    #[error(
        "agreement {agreement} is not registered as of position {position}; \
         `sf2520 log` lists the agreements registered (type AgreementRegistered)"
    )]
    UnknownAgreement { agreement: String, position: u64 },

    #[error(
        "{path} belongs to uid {owner}, but this process runs as uid {uid}: run sf2520 as \
         the directory's owner (e.g. `sudo -u '#{owner}' sf2520 ...`), or, if the \
         directory should be yours, `chown -R {uid} {path}`"
    )]
    NotOwner { path: PathBuf, owner: u32, uid: u32 },

    #[error("{path} is not a directory; --data-dir and --out name directories")]
    NotADirectory { path: PathBuf },

    #[error(
        "another export is running ({holder}); waited {waited_s} s for it. Run again \
         when it has finished, or wait longer with --lock-wait SECONDS"
    )]
    ExportRunning { holder: String, waited_s: u64 },

    #[error(
        "the ledger is busy: {holder}; waited {waited_s} s for it. Run again when it \
         has finished, or wait longer with --busy-timeout SECONDS"
    )]
    Busy { holder: String, waited_s: u64 },

    #[error(
        "{path} cannot be read as a head mark (it records the last head this data \
         directory committed). If you know the database is whole (`sf2520 verify` \
         passes and its head is the one you expect), remove the file: it is written \
         anew at the next commit"
    )]
    DamagedMark { path: PathBuf },

    /// The database ends before the head this node acknowledged.
    #[error("{0}")]
    BehindMark(Box<LostHistory>),

    /// The database holds another event where this node acknowledged one.
    #[error("{0}")]
    MarkMismatch(Box<LostHistory>),

    #[error(
        "{database} cannot keep the promise that a committed write survives a failover: \
         {why}. Nothing was written. Attach a synchronous standby (docs/operations.md, \
         \"A synchronous pair\"), or, for a single server with no standby, set \
         [database] require_synchronous = false"
    )]
    NoSynchronousStandby { database: String, why: String },

    #[error("cannot tell {what}: it is outside the range of times this program handles")]
    Clock { what: &'static str },

    #[error(
        "the disk holding {dir} is full ({during}); nothing was written. Free space on \
         it and run again"
    )]
    DiskFull { dir: PathBuf, during: &'static str },

    #[error(transparent)]
    Interrupted(#[from] crate::interrupt::Interrupted),

    #[error("{path} is not a ledger: {why}")]
    NotALedger { path: PathBuf, why: String },

    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),

    #[error("PostgreSQL: {}", postgres_text(.0))]
    Postgres(#[from] postgres::Error),

    #[error(
        "cannot connect to the ledger's PostgreSQL database ({target}): {reason}. Check \
         --database-url (or SF2520_DATABASE_URL, or [database] url in sf2520.toml) and \
         that the server is running and accepts this user"
    )]
    Connect { target: String, reason: String },

    #[error(
        "{url:?} is not a database URL: {reason}. Give a URL such as \
         postgresql://sf2520@db1.example:5432,db2.example:5432/sf2520?target_session_attrs=read-write \
         or a key=value string such as \"host=/run/postgresql dbname=sf2520 user=sf2520\""
    )]
    BadDatabaseUrl { url: String, reason: String },

    #[error("the ledger is damaged{}: {what}. Run `sf2520 verify` to see the extent, and restore the newest good backup", .position.map(|p| format!(" at position {p}")).unwrap_or_default())]
    CorruptLedger { position: Option<u64>, what: String },

    #[error("kommune {kommune} has no official file with løbenummer {sequence} (it has {count} file(s))")]
    NoSuchFile {
        kommune: String,
        sequence: u32,
        count: u32,
    },

    #[error("the files projection lists kommune {kommune} løbenummer {sequence} at position {position}, but the log holds no FileExported event for it: the projection is damaged; run `sf2520 verify` and restore from a backup")]
    FileWithoutEvent {
        kommune: String,
        sequence: u32,
        position: u64,
    },

    #[error(
        "the target database {target} is not empty ({what}); migrate copies a ledger only \
         into an empty database, so nothing there is overwritten. Create a new database \
         (createdb) and name it in --to"
    )]
    TargetNotEmpty { target: String, what: String },

    #[error("position {position} is beyond what a ledger can hold (at most 9223372036854775807)")]
    PositionOutOfRange { position: u64 },

    /// An `entries` row whose kind is neither a withholding's nor a correction's
    /// number: the projection is damaged, and no kind is guessed for it.
    #[error(
        "the ledger is damaged: the entries table holds the entry kind {found} {location}, \
         which is neither {} (withholding) nor {} (correction). Run `sf2520 verify` to see \
         the extent, and restore the newest good backup",
        EntryKind::Withholding.stored(),
        EntryKind::Correction.stored()
    )]
    UnknownEntryKind { found: i64, location: String },

    /// A sum of totals that does not fit 64 bits. Amounts are bounded, so only a
    /// damaged projection (or an absurd number of entries) gets here; the sum is
    /// refused rather than wrapped into a plausible wrong number.
    #[error(
        "the {what} of {whose} overflows 64 bits ({sum}); no total is shown rather than a \
         wrapped one. Run `sf2520 verify`: a projection row may be damaged"
    )]
    TotalsOverflow {
        /// `agreement BA-1`, `kommune 0101`, …
        whose: String,
        /// The field that overflowed: `withheld sum`, `corrected sum`, `net sum`, `entry count`.
        what: &'static str,
        /// The exact sum, which an i64 cannot hold.
        sum: i128,
    },

    /// The ledger seals CPRs under keys wrapped by a key file, and that file is
    /// not where the configuration says.
    #[error(
        "the ledger's key file {} does not exist. It holds the key that seals every CPR in \
         the ledger and is kept apart from the database: restore it from where it was backed \
         up, or name it with --key-file, SF2520_KEY_FILE or [privacy] key_file \
         (docs/operations.md, \"The key file\"). Nothing was read or written",
        .path.display()
    )]
    KeyFileMissing { path: PathBuf },

    #[error(
        "{} is not a usable sf2520 key file: {why}. Name the ledger's key file with \
         --key-file, SF2520_KEY_FILE or [privacy] key_file. Nothing was read or written",
        .path.display()
    )]
    KeyFileInvalid { path: PathBuf, why: String },

    #[error("cannot {action} the key file {}: {source}", .path.display())]
    KeyFileIo {
        path: PathBuf,
        action: &'static str,
        source: std::io::Error,
    },

    /// A well-formed key file of another ledger (or a new one made by mistake).
    #[error(
        "the key file {} is not the key file of the ledger at {ledger} (the ledger was sealed \
         under the key file with id {expected:016x}, this one has id {found:016x}). Name the \
         ledger's own key file with --key-file, SF2520_KEY_FILE or [privacy] key_file. \
         Nothing was read or written",
        .path.display()
    )]
    KeyFileMismatch {
        path: PathBuf,
        ledger: String,
        expected: u64,
        found: u64,
    },

    /// A data key that cannot be used: the row or a sealed value was altered.
    /// No CPR is guessed and none is written into a file.
    #[error(
        "the personal data of agreement {agreement} cannot be read: {why}. Run `sf2520 \
         verify`, and restore the newest good backup if the ledger was altered"
    )]
    DataKeyDamaged { agreement: String, why: String },

    /// The agreement's data key was destroyed under retention.
    #[error(
        "the personal data of agreement {agreement} was erased under retention on {erased_on} \
         (event at position {position}, `sf2520 retention --apply`): its CPR can no longer be \
         read, so nothing that needs it (a file holding its entries, a check of its CPR) can be \
         made. Totals, the files register and the hash chain are unaffected"
    )]
    PersonalDataErased {
        agreement: String,
        erased_on: String,
        position: u64,
    },
}

/// A PostgreSQL error with the server's message, detail and hint when it sent them.
fn postgres_text(error: &postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => {
            let mut text = format!("{} ({})", db.message(), db.code().code());
            if let Some(detail) = db.detail() {
                text.push_str(&format!("; {detail}"));
            }
            if let Some(hint) = db.hint() {
                text.push_str(&format!("; hint: {hint}"));
            }
            text
        }
        None => error.to_string(),
    }
}

/// What to do about a ledger file of another schema version.
fn schema_hint(found: i64, expected: i64) -> &'static str {
    if found < expected {
        ". A ledger of an older version is upgraded when it is opened as a data \
         directory's ledger.sqlite3 (any sf2520 command with --data-dir); a copy such \
         as a backup is only read, so upgrade it that way first"
    } else {
        ". It was written by a newer sf2520; use that version"
    }
}

/// What a database lacks of the history a node acknowledged (its head mark):
/// [`LedgerError::BehindMark`] or [`LedgerError::MarkMismatch`].
#[derive(Debug)]
pub struct LostHistory {
    /// The node's data directory, whose `ledger.head` holds the mark.
    pub dir: PathBuf,
    /// The database, for messages (a file, or a URL without its password).
    pub database: String,
    /// The database's head position.
    pub head_position: u64,
    /// The head this node acknowledged.
    pub mark_position: u64,
    pub mark_hash: String,
    /// How this comes about on the backend, and what to do.
    pub cause: &'static str,
    pub remedy: &'static str,
}

impl std::fmt::Display for LostHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let LostHistory {
            dir,
            database,
            head_position,
            mark_position,
            mark_hash,
            cause,
            remedy,
        } = self;
        let dir = dir.display();
        if head_position < mark_position {
            write!(
                f,
                "the ledger in {database} ends at position {head_position}, but this node \
                 acknowledged position {mark_position} (hash {mark_hash}, recorded in \
                 {dir}/ledger.head): committed events are missing, {cause}. Nothing was \
                 written. Whatever this node handed out after position {head_position} \
                 (ingests it acknowledged, official files in its outbox or delivered, \
                 receipts, backups, signed checkpoints) names history the database no longer \
                 holds, and writing now would give its positions and løbenumre to other \
                 events. {remedy}"
            )
        } else {
            write!(
                f,
                "the ledger in {database} has another event at position {mark_position} than \
                 the one this node acknowledged there (hash {mark_hash}, recorded in \
                 {dir}/ledger.head): its history was replaced, {cause}. Nothing was written. \
                 {remedy}"
            )
        }
    }
}
