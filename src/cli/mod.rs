//! The command line: clap arguments, data-directory resolution, and one function
//! per subcommand. `anyhow` lives here and in `main`, nowhere else.

mod backup;
mod deliver;
mod demo;
pub mod exit;
mod export;
mod failover;
pub mod format;
mod generate;
mod inbox;
mod inbox_state;
mod ingest;
mod init;
mod log;
pub mod logging;
mod metrics;
mod migrate;
mod output;
mod privacy;
mod progress;
mod report;
mod status;
mod totals;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};

use crate::ledger::AsOf;

/// SF2520 settlement ledger: records what KY withheld from cash-benefit payouts
/// to cover child support that Udbetaling Danmark paid in advance, and reports it
/// to UDK in SF2520 files.
///
/// Every withholding and correction is appended to a hash-chained event log in
/// the data directory; totals can be read as of any point in the log.
#[derive(Parser, Debug)]
#[command(
    name = "sf2520",
    version,
    propagate_version = true,
    max_term_width = 100,
    after_help = exit::AFTER_HELP
)]
pub struct Cli {
    /// Directory holding the ledger database. Only `init` (and `demo`) create it;
    /// every other command refuses a directory without a ledger.
    #[arg(
        long,
        global = true,
        env = "SF2520_DATA_DIR",
        default_value = "./sf2520-data"
    )]
    pub data_dir: PathBuf,

    /// How long a write waits for another process that holds the ledger (an ingest
    /// of millions of lines, say) before it gives up, naming the holder.
    #[arg(
        long,
        global = true,
        env = "SF2520_BUSY_TIMEOUT",
        value_name = "SECONDS",
        default_value_t = 60
    )]
    pub busy_timeout: u64,

    /// The ledger's database when it is PostgreSQL (15 or newer), for several nodes:
    /// a URL such as postgresql://sf2520@db1:5432,db2:5432/sf2520?target_session_attrs=read-write
    /// or a libpq string such as "host=/run/postgresql dbname=sf2520". Also
    /// `[database] url` in the configuration file. Without it, the ledger is SQLite
    /// in the data directory (the default). The data directory still holds this
    /// node's configuration, keys and outbox.
    #[arg(
        long,
        global = true,
        env = "SF2520_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,

    /// Configuration file (TOML) with the `[sftp]` delivery settings and the
    /// `[audit]` signing key (default: <data-dir>/sf2520.toml; without it, files
    /// stay in the local outbox).
    #[arg(long, global = true, env = "SF2520_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// The key file that seals every CPR in the ledger (created by `init`; default
    /// <data-dir>/ledger.kek, or `[privacy] key_file` in the configuration file).
    /// Keep it apart from the ledger and its backups, and back it up apart: without
    /// it no CPR can be read. In production hand it to the service with systemd's
    /// LoadCredential= and SF2520_KEY_FILE=%d/ledger.kek (docs/operations.md).
    #[arg(long, global = true, env = "SF2520_KEY_FILE", value_name = "PATH")]
    pub key_file: Option<PathBuf>,

    /// Log format on standard error: `text` (coloured only on a terminal and
    /// never with NO_COLOR) or `json` (one object per line, for journald or ELK).
    /// The level comes from RUST_LOG (default warn).
    #[arg(
        long,
        global = true,
        env = "SF2520_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text
    )]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create the data directory (owner-only) and an empty ledger in it.
    ///
    /// The only command besides `demo` that creates a ledger: every other one
    /// exits with code 6 and "no ledger at PATH" on a directory without one, so a
    /// mistyped --data-dir cannot start a new, empty ledger. Running it on an
    /// existing ledger changes nothing and says so.
    Init(InitArgs),
    /// Ingest KY's JSON Lines (agreements, withholdings, corrections), all or nothing.
    ///
    /// Each line is one object with a "type" of agreement, agreement_ended,
    /// withholding or correction (see docs/input-format.md). If any line is
    /// rejected, every rejected line is listed with its number and reason and
    /// nothing is written. A line identical to one already recorded is an accepted
    /// duplicate (summarised; --verbose lists each); the same reference with other
    /// content is a conflict. Exits 3 when any line (or, with --inbox, any file) is
    /// rejected.
    Ingest(IngestArgs),
    /// Show withheld, corrected and net totals per kommune or agreement, now or as of a past point.
    Totals(TotalsArgs),
    /// List the events of the log, for auditors (CPR numbers are masked).
    Log(LogArgs),
    /// Check the ledger without trusting it: hash chain, projections, anchored
    /// heads and the outbox.
    ///
    /// Walks the hash chain from position 1 and checks that the projections equal
    /// a replay of the log. Each --expect-head POS:HASH (as printed by the command
    /// that appended) must still be in the log: a log shorter than POS, or with
    /// another hash there, means events were removed or rewritten, or an older
    /// backup was restored; --checkpoint FILE --public-key HEX does the same for a
    /// head signed by `sf2520 checkpoint`, after checking its signature. By default
    /// it also hashes every official file in the outbox (<data-dir>/outbox if it
    /// exists, or --outbox DIR; --no-outbox skips it) against the SHA-256 of its
    /// FileExported event; a missing or edited file is named with its kommune and
    /// løbenummer. Exits with code 4 listing every problem found. The outcome is
    /// recorded in <data-dir>/verify.last for `status --check`. The
    /// byte format it checks is in docs/log-format.md; tools/audit/verify_ledger.py
    /// checks the same without this program.
    Verify(VerifyArgs),
    /// Generate a realistic month for all 98 kommuner (seeded), ingest it and run
    /// the batch export.
    ///
    /// Safe to run again on the same data directory: the second run finds every
    /// line already recorded (duplicates) and no new entries to export.
    Demo(DemoArgs),
    /// The batch export: the next SF2520 file of every kommune with new entries.
    ///
    /// One export at a time per ledger: a second waits --lock-wait seconds for the
    /// first, then exits 5 naming it. Fixes a cut-off (the log's head when the run
    /// starts), renders one file per kommune with entries recorded since its
    /// previous file (the løbenummer after the previous one) under a temporary
    /// name, reads each back and checks it against the ledger, records a
    /// FileExported event for each, and only then gives the files their official
    /// names in the outbox. The outbox belongs to this ledger: one holding files
    /// this ledger did not write is refused and left alone. Killed at any moment,
    /// just run it again: recorded files are finished, unrecorded ones set aside in
    /// the outbox's .quarantine folder and rendered afresh; no løbenummer is
    /// skipped or reused. A file that left the outbox after it was published (a
    /// transfer agent took it) is not put back: `reissue` does that on purpose.
    /// SIGTERM or Ctrl-C stops it cleanly (exit 143 or 130).
    ///
    /// With --as-of TIME it instead renders what a run at TIME would have produced
    /// (byte for byte for an official file created at TIME) into --out DIR and
    /// records nothing. With --test it renders test files (marker T) of the entries
    /// not yet exported, recording nothing.
    Export(ExportArgs),
    /// Rebuild an official file from the log and prove it is the file that was sent.
    ///
    /// Renders official file N of a kommune again from the log and compares its
    /// SHA-256 with the one recorded when it was made; on a mismatch it shows both
    /// and exits non-zero.
    Reconstruct(ReconstructArgs),
    /// The register of official files, with SHA-256 and delivery state.
    ///
    /// One line per file: kommune, løbenummer, creation time, records, net sum,
    /// SHA-256 (full in --json) and delivery state (exported, uploaded, accepted,
    /// rejected with the platform's codes, reissued).
    Files(FilesArgs),
    /// Send an official file again, byte for byte (a lost transfer).
    ///
    /// Puts the file back into the outbox, records FileReissued and delivers it
    /// again under a new SendersFileId. Refuses if the log no longer renders the
    /// same bytes. Without an [sftp] section it only refills the outbox.
    Reissue(ReissueArgs),
    /// Deliver official files not yet accepted to Serviceplatformen over SFTP.
    ///
    /// For each file: upload OUT/<name>, check its size, then OUT/<name>.trigger
    /// (KOMBIT's Trigger schema); record FileUploaded; wait for
    /// IN/<name>.sftpreceipt, archive it in <data-dir>/receipts and record it
    /// (accepted, or rejected with every error code), then remove it from IN/.
    /// Business receipts found in IN/ for delivered files are recorded the same
    /// way. Kommuner go in parallel (`concurrency` in the config). An accepted file
    /// is never uploaded again unless reissued; a failed one is retried by the next
    /// run. Without an [sftp] section the files stay in the local outbox.
    ///
    /// Exits 0 only when every official file (of --kommune, if given) is accepted;
    /// 7 while any waits for its receipt, failed to upload, or was rejected and not
    /// reissued (night after night), and without [sftp] while any is not accepted;
    /// 8 when the server's host key is not the pinned one.
    Deliver(DeliverArgs),
    /// One screen for the operator: ledger head, last export and last file per
    /// kommune, files by delivery state (oldest pending), rejected files with their
    /// codes, configuration present or not.
    ///
    /// With --check it prints one line and exits with the monitoring-plugin codes
    /// (Nagios, Icinga, a systemd OnFailure= hook): 0 OK; 1 WARNING when a file
    /// has waited longer than --warn-hours for acceptance or delivery is not
    /// configured while files wait, or KY's inbox has a rejected file or one
    /// waiting longer than --warn-hours; 2 CRITICAL when a file is rejected and not
    /// reissued, a file has waited longer than --critical-hours, or the last
    /// `sf2520 verify` found the ledger damaged (WARNING when it ran more than 8
    /// days ago); 3 UNKNOWN when the ledger cannot be read.
    Status(StatusArgs),
    /// Metrics in the Prometheus text format, for node_exporter's textfile
    /// collector (write to a temporary file and rename it into the collector's
    /// directory).
    Metrics(MetricsArgs),
    /// Check the configuration file and try to connect to the SFTP server.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Validate SF2520 files as a receiver would.
    ///
    /// One summary line per valid file (kommune, løbenummer, records, net sum);
    /// otherwise every error with line, byte column, field and what was expected.
    /// Exits non-zero if any file is invalid.
    Check(CheckArgs),
    /// Print the records of an SF2520 file as a table or JSON (CPR masked).
    Show(ShowArgs),
    /// Sign the log's head with the [audit] signing_key of the config, so that an
    /// auditor holding only the public key can check a head handed over.
    ///
    /// Writes a five-line text file (head, time, public key, ed25519 signature over
    /// the first three lines; see docs/log-format.md). `sf2520 verify --checkpoint
    /// FILE --public-key HEX` checks the signature and that the log still holds the
    /// head. The key is an ed25519 private key in PKCS#8 DER, owner-only, e.g.
    /// `openssl genpkey -algorithm ed25519 -outform DER -out audit-key.der`.
    Checkpoint(CheckpointArgs),
    /// The reconciliation report of one kommune for auditors and økonomi, as one
    /// self-contained HTML page (no scripts, no network).
    ///
    /// Lists the kommune's official files created in the period (UTC dates, both
    /// inclusive) with løbenummer, creation time, records, sums, SHA-256, delivery
    /// state and the time of acceptance, all read from the log; totals per payout
    /// month (the withholdings' payout dates) as a table and a chart, and per month
    /// the files were created; each file's delivery history (uploads, technical
    /// receipts with their codes and texts, reissues with their new
    /// SendersFileId, business receipts); the chain head it was made at and whether
    /// `verify` (with the default outbox) passed. In Danish unless --lang en.
    /// Exits non-zero if verify failed; the page then lists the problems.
    Report(ReportArgs),
    /// Write a verified, owner-only copy of the ledger to DEST, safe while other
    /// sf2520 processes are writing.
    ///
    /// The copy is one consistent point of the log (SQLite's online backup API). It
    /// is staged beside DEST, its hash chain and projections are verified, and only
    /// then does it take the name DEST (mode 600). An existing DEST is refused
    /// unless --force.
    Backup(BackupArgs),
    /// Copy an embedded (SQLite) ledger's log into an empty PostgreSQL database.
    ///
    /// Copies every event byte for byte (positions, ids, times, payloads and
    /// hashes), rebuilds the projections there, and proves that the copy's head
    /// position and hash equal the source's. A database that already holds a
    /// ledger, or any of its tables, is refused and left untouched. The source is
    /// the data directory's ledger, or --from FILE (a backup). Stop ingest and
    /// export first; afterwards run every node with --database-url URL.
    Migrate(MigrateArgs),
    /// Erase personal data whose retention has ended (crypto-shredding); a dry run
    /// unless --apply.
    ///
    /// An agreement's CPR is erased once the agreement has ended and the last
    /// financial year in which anything happened to it (registration, end, any
    /// entry's payout date or recording) ended more than [retention] years (default
    /// 5, the bookkeeping period) before --as-of (default today). Erasing destroys
    /// the agreement's data key, so every CPR sealed under it becomes unreadable
    /// for good, and records a RetentionApplied event naming the agreements by
    /// reference. Official files holding an erased agreement's entries, and files
    /// whose own financial year is past retention, leave the outbox with their
    /// archived receipts; the files register keeps their names, SHA-256, counts
    /// and sums, and totals and the hash chain are unchanged. Test files,
    /// quarantined files and (with [retention] inbox) KY's archived and rejected
    /// batches go after [retention] scratch_days (default 90), or at once when
    /// they hold an erased CPR. Without --apply it lists all of this and changes
    /// nothing.
    Retention(RetentionArgs),
    /// Accept that the database lost history this node acknowledged (exit 10);
    /// a dry run unless --apply.
    ///
    /// After a failover to a standby that had not received this node's last
    /// commits (or an older copy of the database put in place), every command
    /// that writes is refused with exit 10, naming the position and hash this
    /// node acknowledged (ledger.head). Bring the lost events back if the old
    /// primary's data still exists. Only if the loss is truly accepted (for files
    /// already delivered: agreed with UDK), run this: without --apply it names the
    /// lost head, the database's head and the official files in the outbox the
    /// database does not hold, and changes nothing. With --apply --position N
    /// --hash HASH (the lost head, typed back) it moves those files to
    /// outbox/.lost/, records a LossAccepted event naming the lost head and the
    /// files, and moves this node's mark to the new head. Run it on every node
    /// that refuses.
    AcceptLoss(AcceptLossArgs),
    /// Copy a ledger written before CPRs were sealed into a new data directory,
    /// every CPR sealed.
    ///
    /// Every event keeps its position, id, stream, type and time; its CPR is
    /// sealed under a new data key of its agreement (wrapped by the new data
    /// directory's key file), so its hash changes and the chain is computed anew;
    /// files rebuild byte for byte. A last event, LedgerSealed, names the old
    /// ledger's head (POS:HASH), which links the two chains for an auditor. Stop
    /// ingest and export first; afterwards move the outbox, receipts and
    /// configuration over and destroy the old ledger and its backups.
    Seal(SealArgs),
    /// Write the manual pages and the shell completions (bash, zsh, fish) made
    /// from these definitions into DIR (for packaging).
    #[command(hide = true)]
    Generate(GenerateArgs),
    /// Replace the ledger with the backup SRC, after verifying SRC.
    ///
    /// A damaged SRC is refused, naming the first bad position. Without --force, a
    /// restore that would lose events is refused: a ledger with events the backup
    /// lacks (newer), one whose history differs from the backup's, or one that
    /// cannot be read; the message says how many events and of what kind. With
    /// --force the replaced ledger is kept beside it as
    /// ledger.sqlite3.replaced-<time>. The swap is atomic; stop other sf2520
    /// processes first (a ledger open elsewhere is refused).
    Restore(RestoreArgs),
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// The kommune (4-digit code).
    #[arg(long, value_name = "KODE")]
    pub kommune: String,
    /// First creation date (UTC) of files in the report, e.g. 2026-01-01.
    #[arg(long, value_name = "DATE")]
    pub from: Option<chrono::NaiveDate>,
    /// Last creation date (UTC) of files in the report.
    #[arg(long, value_name = "DATE")]
    pub to: Option<chrono::NaiveDate>,
    /// The HTML file to write (owner-only; replaced if it exists).
    #[arg(long, value_name = "FILE.html")]
    pub out: PathBuf,
    /// The page's language: Danish (`da`, for the kommune's økonomi) or English.
    #[arg(long, value_enum, default_value = "da")]
    pub lang: ReportLang,
}

/// `report --lang`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportLang {
    /// Dansk.
    Da,
    /// English.
    En,
}

#[derive(Args, Debug)]
pub struct CheckpointArgs {
    /// The checkpoint file to write.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// A head the log must still hold, POSITION:HASH (repeatable).
    #[arg(long, value_name = "POS:HASH")]
    pub expect_head: Vec<crate::audit::Anchor>,
    /// A file of heads, one POSITION:HASH per line (# comments; text after the
    /// hash ignored), e.g. collected from the export journal (repeatable).
    #[arg(long, value_name = "FILE")]
    pub expect_heads: Vec<PathBuf>,
    /// The outbox to check (default: <data-dir>/outbox, if it exists).
    #[arg(long, value_name = "DIR", conflicts_with = "no_outbox")]
    pub outbox: Option<PathBuf>,
    /// Do not check the outbox (the files were moved elsewhere on purpose).
    #[arg(long)]
    pub no_outbox: bool,
    /// A signed checkpoint (from `sf2520 checkpoint`) whose head the log must still
    /// hold; its signature is checked with --public-key (repeatable).
    #[arg(long, value_name = "FILE", requires = "public_key")]
    pub checkpoint: Vec<PathBuf>,
    /// The ed25519 public key (64 hex digits) you trust to sign checkpoints.
    #[arg(long, value_name = "HEX")]
    pub public_key: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Print the status as one JSON document.
    #[arg(long, conflicts_with = "check")]
    pub json: bool,
    /// One line and a monitoring-plugin exit code (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN).
    #[arg(long)]
    pub check: bool,
    /// WARNING when a file has waited this long to be accepted.
    #[arg(long, value_name = "HOURS", default_value_t = 24)]
    pub warn_hours: u32,
    /// CRITICAL when a file has waited this long to be accepted.
    #[arg(long, value_name = "HOURS", default_value_t = 72)]
    pub critical_hours: u32,
    /// KY's inbox, whose waiting and rejected files are reported (default: the
    /// configuration's `[retention] inbox`, if set).
    #[arg(long, value_name = "DIR")]
    pub inbox: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct MetricsArgs {
    /// KY's inbox, whose waiting and rejected files are counted (default: the
    /// configuration's `[retention] inbox`, if set).
    #[arg(long, value_name = "DIR")]
    pub inbox: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// The backup file to write.
    #[arg(value_name = "DEST")]
    pub destination: PathBuf,
    /// Replace DEST if it exists.
    #[arg(long)]
    pub force: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// The directory that gets `man/` and `completions/`.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct SealArgs {
    /// The new data directory (empty or absent) for the sealed copy.
    #[arg(long, value_name = "DIR")]
    pub to: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct RetentionArgs {
    /// Apply the rule as of this date (YYYY-MM-DD; default today, UTC). A date
    /// after today is refused with --apply.
    #[arg(long, value_name = "DATE")]
    pub as_of: Option<chrono::NaiveDate>,
    /// Erase: destroy the data keys and remove the files listed. Without it,
    /// nothing is changed.
    #[arg(long)]
    pub apply: bool,
    /// Print the plan (and what was done) as one JSON document.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct AcceptLossArgs {
    /// Accept the loss: move the lost files, record LossAccepted, move the mark.
    /// Needs --position and --hash. Without it, nothing is changed.
    #[arg(long, requires_all = ["position", "hash"])]
    pub apply: bool,
    /// The position this node acknowledged, as the dry run names it.
    #[arg(long, value_name = "N")]
    pub position: Option<u64>,
    /// The hash this node acknowledged at that position (64 hex digits).
    #[arg(long, value_name = "HASH")]
    pub hash: Option<String>,
    /// The outbox to look in (default: the data directory's).
    #[arg(long, value_name = "DIR")]
    pub outbox: Option<PathBuf>,
    /// Print the plan (and what was done) as one JSON document.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct MigrateArgs {
    /// The empty PostgreSQL database to copy the ledger into (URL or key=value).
    #[arg(long, value_name = "URL")]
    pub to: String,
    /// Copy from this ledger file (a backup) instead of the data directory's.
    #[arg(long, value_name = "FILE")]
    pub from: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The backup file to restore.
    #[arg(value_name = "SRC")]
    pub source: PathBuf,
    /// Restore even if the ledger has events the backup lacks, or cannot be read.
    #[arg(long)]
    pub force: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Only this kommune (repeatable); default all 98.
    #[arg(long, value_name = "KODE")]
    pub kommune: Vec<String>,
    /// Directory to write into (default: <data-dir>/outbox; <data-dir>/test-files with --test).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Also write start+end-only files for kommuner with nothing new.
    #[arg(long)]
    pub include_empty: bool,
    /// Test files: marker T in the start record, nothing recorded.
    #[arg(long)]
    pub test: bool,
    /// Render what a batch run at this time would have made (needs --out; records
    /// nothing). TIME is a date YYYY-MM-DD (its start, 00:00 UTC) or an RFC 3339
    /// time such as 2026-12-01T02:30:00Z or 2026-12-01T03:30:00+01:00.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub as_of: Option<DateTime<Utc>>,
    /// Deliver the new files (and any still pending) over SFTP after exporting;
    /// exit code 7 unless every official file is then accepted (see `deliver`).
    #[arg(long, conflicts_with_all = ["as_of", "test"])]
    pub deliver: bool,
    /// How long to wait for another export of this ledger (one at a time, the
    /// timer's and an operator's alike) before giving up with exit code 5.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub lock_wait: u64,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct DeliverArgs {
    /// Only files of this kommune.
    #[arg(long, value_name = "KODE")]
    pub kommune: Option<String>,
    /// Only this løbenummer (with --kommune).
    #[arg(long, value_name = "N", requires = "kommune")]
    pub seq: Option<u32>,
    /// The outbox the files are read from (default: <data-dir>/outbox).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum ConfigAction {
    /// Validate the configuration (permissions, key type, values within KOMBIT's
    /// schema limits), warn when `sender` differs from `user`, then connect with the
    /// pinned host key and check that OUT/ and remote_in_dir can be listed.
    Check {
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// One official file: kommune and løbenummer.
#[derive(Args, Debug)]
pub struct FileRef {
    /// The kommune (4-digit code).
    #[arg(long, value_name = "KODE")]
    pub kommune: String,
    /// The løbenummer.
    #[arg(long, value_name = "N")]
    pub seq: u32,
}

#[derive(Args, Debug)]
pub struct ReconstructArgs {
    #[command(flatten)]
    pub file: FileRef,
    /// Where to write the rebuilt file (default: its file name in the current directory).
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct FilesArgs {
    /// Only this kommune.
    #[arg(long, value_name = "KODE")]
    pub kommune: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ReissueArgs {
    #[command(flatten)]
    pub file: FileRef,
    /// The outbox to put it into (default: <data-dir>/outbox).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// How long to wait for an export of this ledger that is running.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub lock_wait: u64,
    /// Print the result (and the delivery's) as one JSON document.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// SF2520 files to validate.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Print one JSON document: per file, valid or its errors.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    /// The SF2520 file.
    pub file: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct IngestArgs {
    /// JSON Lines files, or `-` for standard input. Each file is one batch, all or
    /// nothing, committed durably before the next is read; the first rejected file
    /// stops the run (the files before it stay committed).
    #[arg(required_unless_present = "inbox", value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Ingest every complete `*.jsonl` file in DIR, in name order: each accepted
    /// file moves to DIR/archive/, each rejected one to DIR/rejected/ with
    /// NAME.errors.txt and NAME.errors.json beside it. Writers should write
    /// `.NAME.jsonl.tmp` (hidden, ignored) and rename it to `NAME.jsonl` when
    /// complete; a file written in place is taken only when it ends with a
    /// newline and is unchanged from the read to the move (one without its final
    /// newline waits for the next run; after an hour it is rejected). Links,
    /// FIFOs and directories named *.jsonl are never opened: they are moved to
    /// DIR/rejected/. One run at a time (a lock file in DIR names the holder).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["files", "dry_run"])]
    pub inbox: Option<PathBuf>,
    /// Check every line against the ledger but write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// List every duplicate line (by default: how many, and the first few).
    #[arg(long)]
    pub verbose: bool,
    /// Print one JSON document for the whole run.
    #[arg(long)]
    pub json: bool,
}

/// Where in the log to read: the head (default), a position, or a time.
#[derive(Args, Debug, Clone)]
pub struct AsOfArgs {
    /// Read as the log stood at this time: a date YYYY-MM-DD (its start, 00:00
    /// UTC) or an RFC 3339 time such as 2026-03-01T00:00:00Z or
    /// 2026-03-01T01:00:00+01:00.
    #[arg(long, value_name = "TIME", conflicts_with = "at_position", value_parser = parse_time)]
    pub as_of: Option<DateTime<Utc>>,
    /// Read as the log stood after this position.
    #[arg(long, value_name = "N")]
    pub at_position: Option<u64>,
}

/// A `--as-of` value: a date (its start, 00:00 UTC) or an RFC 3339 time.
pub fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Utc));
    }
    if let Ok(date) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        if let Some(start) = date.and_hms_opt(0, 0, 0) {
            return Ok(start.and_utc());
        }
    }
    Err(format!(
        "{text:?} is neither a date YYYY-MM-DD (e.g. 2026-12-01, meaning 00:00 UTC) nor an \
         RFC 3339 time (e.g. 2026-12-01T02:30:00Z or 2026-12-01T03:30:00+01:00)"
    ))
}

impl AsOfArgs {
    pub fn as_of(&self) -> AsOf {
        match (self.as_of, self.at_position) {
            (Some(time), _) => AsOf::Time(time),
            (None, Some(position)) => AsOf::Position(position),
            (None, None) => AsOf::Head,
        }
    }
}

#[derive(Args, Debug)]
pub struct TotalsArgs {
    /// Totals of one agreement.
    #[arg(long, value_name = "REF", conflicts_with = "kommune")]
    pub agreement: Option<String>,
    /// Totals of every agreement of one kommune (4-digit code).
    #[arg(long, value_name = "KODE")]
    pub kommune: Option<String>,
    #[command(flatten)]
    pub at: AsOfArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct LogArgs {
    /// First position to show.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub from: u64,
    /// Last position to show (default: the head).
    #[arg(long, value_name = "N")]
    pub to: Option<u64>,
    /// One JSON object per line instead of text.
    #[arg(long)]
    pub json: bool,
    /// With --json: add "raw", the stored event id, recorded-at, payload and hash
    /// in hex (docs/log-format.md says what each byte means). The payload holds
    /// each CPR as the database does: sealed (a ledger written before sealing: in
    /// plain, so treat its output like the ledger).
    #[arg(long, requires = "json")]
    pub raw: bool,
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Seed of the generated month; the same seed gives the same data.
    #[arg(long, default_value_t = crate::demo::DEMO_SEED)]
    pub seed: u64,
    /// Print the summary as one JSON document.
    #[arg(long)]
    pub json: bool,
}

/// An error and its causes as one line, each cause once: an OS error is often
/// both a cause's text and the cause itself ("Permission denied (os error 13):
/// Permission denied (os error 13)"), so a cause whose text the line already
/// ends with is left out.
pub fn error_text(error: &anyhow::Error) -> String {
    let mut text = String::new();
    let mut denied = false;
    for cause in error.chain() {
        denied |= cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied);
        let part = cause.to_string();
        if text.ends_with(&part) || text.contains(&format!("{part}: ")) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    // Causes may quote a server's message, a receipt or a file name.
    let mut text = output::for_terminal(&text);
    if denied && !text.contains("permission on") {
        // Which permission: reading a file needs read on it; creating or renaming
        // one needs write on its directory; every directory on the way needs x.
        text.push_str(
            " (the user running sf2520 needs read permission on the files it reads, write \
             permission on the directories it writes into, and execute permission on every \
             directory on the path)",
        );
    }
    text
}

impl Command {
    /// The subcommand's name as typed (`export`, `ingest`, …): what lock holders
    /// and writer notes say, never the command line's other words.
    fn name(&self) -> &'static str {
        match self {
            Command::Init(_) => "init",
            Command::Ingest(_) => "ingest",
            Command::Totals(_) => "totals",
            Command::Log(_) => "log",
            Command::Verify(_) => "verify",
            Command::Demo(_) => "demo",
            Command::Export(_) => "export",
            Command::Reconstruct(_) => "reconstruct",
            Command::Files(_) => "files",
            Command::Reissue(_) => "reissue",
            Command::Deliver(_) => "deliver",
            Command::Status(_) => "status",
            Command::Metrics(_) => "metrics",
            Command::Config { .. } => "config check",
            Command::Check(_) => "check",
            Command::Show(_) => "show",
            Command::Checkpoint(_) => "checkpoint",
            Command::Report(_) => "report",
            Command::Backup(_) => "backup",
            Command::Migrate(_) => "migrate",
            Command::Restore(_) => "restore",
            Command::Retention(_) => "retention",
            Command::AcceptLoss(_) => "accept-loss",
            Command::Seal(_) => "seal",
            Command::Generate(_) => "generate",
        }
    }
}

/// A command line clap refused: its usage error on standard error (one JSON
/// line when `--log-format json` or `SF2520_LOG_FORMAT=json` was asked for),
/// exit code 2; for `status --check`, the check's UNKNOWN line and exit code 3.
/// `--help` and `--version` are printed as clap prints them.
pub fn usage_error(error: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        error.exit();
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rendered = error.render().to_string();
    let problem = rendered.trim_end().trim_start_matches("error: ");
    if json_logs_asked(&args) {
        logging::init(LogFormat::Json);
        logging::to_stderr(tracing::Level::ERROR, problem);
    } else {
        // Standard error gone leaves nowhere to say so.
        let _ = error.print();
    }
    if args.iter().any(|arg| arg == "status") && args.iter().any(|arg| arg == "--check") {
        let first_line = problem.lines().next().unwrap_or_default();
        return status::unknown_command_line(first_line);
    }
    ExitCode::from(2)
}

/// Whether the refused command line (or SF2520_LOG_FORMAT) asked for JSON logs.
fn json_logs_asked(args: &[String]) -> bool {
    let mut asked = std::env::var("SF2520_LOG_FORMAT").is_ok_and(|format| format == "json");
    for (index, arg) in args.iter().enumerate() {
        if arg == "--log-format" {
            asked = args.get(index + 1).is_some_and(|format| format == "json");
        } else if let Some(format) = arg.strip_prefix("--log-format=") {
            asked = format == "json";
        }
    }
    asked
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Command::Generate(args) = &cli.command {
        // Reads no ledger and no configuration: it runs at build time.
        return generate::run(args);
    }
    crate::ledger::name_command(cli.command.name());
    logging::set_command(cli.command.name());
    crate::ledger::set_default_busy_wait(std::time::Duration::from_secs(cli.busy_timeout));
    let database = migrate::database_url(
        &cli.data_dir,
        cli.config.as_deref(),
        cli.database_url.as_deref(),
    );
    let database = match database {
        Ok(database) => database,
        Err(error) => return status::unknown_if_checking(&cli.command, &cli.data_dir, error),
    };
    crate::ledger::set_database_url(database);
    match privacy::key_file(
        &cli.data_dir,
        cli.config.as_deref(),
        cli.key_file.as_deref(),
    ) {
        Ok(key_file) => crate::ledger::set_key_file(key_file),
        Err(error) => return status::unknown_if_checking(&cli.command, &cli.data_dir, error),
    }
    // The subcommand's name, not its arguments' Debug dump (which would show
    // Rust's struct syntax and every path given).
    tracing::debug!(command = cli.command.name(), data_dir = %cli.data_dir.display(), "starting");
    match cli.command {
        Command::Init(args) => init::run(&cli.data_dir, cli.config.as_deref(), &args),
        Command::Status(args) => status::run(&cli.data_dir, cli.config.as_deref(), &args),
        Command::Metrics(args) => metrics::run(&cli.data_dir, cli.config.as_deref(), &args),
        Command::Ingest(args) => ingest::run(&cli.data_dir, &args),
        Command::Totals(args) => totals::run(&cli.data_dir, &args),
        Command::Log(args) => log::run(&cli.data_dir, &args),
        Command::Verify(args) => verify::run(&cli.data_dir, &args),
        Command::Demo(args) => demo::run(&cli.data_dir, &args),
        Command::Export(args) => export::run_export(&cli.data_dir, cli.config.as_deref(), &args),
        Command::Reconstruct(args) => export::run_reconstruct(&cli.data_dir, &args),
        Command::Files(args) => export::run_files(&cli.data_dir, &args),
        Command::Reissue(args) => export::run_reissue(&cli.data_dir, cli.config.as_deref(), &args),
        Command::Deliver(args) => deliver::run_deliver(&cli.data_dir, cli.config.as_deref(), &args),
        Command::Config {
            action: ConfigAction::Check { json },
        } => deliver::run_config_check(&cli.data_dir, cli.config.as_deref(), json),
        Command::Check(args) => format::run_check(&args),
        Command::Show(args) => {
            format::show(&args.file, args.json, &mut std::io::stdout().lock())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Report(args) => report::run(&cli.data_dir, &args),
        Command::Checkpoint(args) => {
            verify::run_checkpoint(&cli.data_dir, cli.config.as_deref(), &args)
        }
        Command::Backup(args) => backup::run_backup(&cli.data_dir, &args),
        Command::Restore(args) => backup::run_restore(&cli.data_dir, &args),
        Command::Migrate(args) => migrate::run(&cli.data_dir, &args),
        Command::Seal(args) => migrate::run_seal(&cli.data_dir, &args),
        Command::AcceptLoss(args) => failover::run(&cli.data_dir, &args),
        Command::Retention(args) => {
            privacy::run_retention(&cli.data_dir, cli.config.as_deref(), &args)
        }
        // Answered above, before any configuration is read.
        Command::Generate(args) => generate::run(&args),
    }
}

#[cfg(test)]
mod tests {
    use super::error_text;

    /// Regression: an OS error was printed three times ("Permission denied (os
    /// error 13): Permission denied (os error 13): …").
    #[test]
    fn an_os_error_is_said_once_with_the_permission_needed() {
        let io = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let ledger = crate::ledger::LedgerError::CreateDir {
            path: "/var/lib/sf2520".into(),
            source: io,
        };
        let error = anyhow::Error::from(ledger).context("cannot start");
        let text = error_text(&error);
        assert_eq!(text.matches("permission denied").count(), 1, "{text}");
        assert!(text.contains("/var/lib/sf2520"), "{text}");
        assert!(
            text.contains("write permission on the directories"),
            "{text}"
        );
    }
}
