//! The command line: clap arguments, data-directory resolution, and one function
//! per subcommand. `anyhow` lives here and in `main`, nowhere else.

mod backup;
mod deliver;
mod demo;
mod export;
pub mod format_cmds;
mod ingest;
mod log;
mod output;
mod report;
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
    max_term_width = 100
)]
pub struct Cli {
    /// Directory holding the ledger database (created owner-only if missing).
    #[arg(
        long,
        global = true,
        env = "SF2520_DATA_DIR",
        default_value = "./sf2520-data"
    )]
    pub data_dir: PathBuf,

    /// Configuration file (TOML) with the `[sftp]` delivery settings and the
    /// `[audit]` signing key (default: <data-dir>/sf2520.toml; without it, files
    /// stay in the local outbox).
    #[arg(long, global = true, env = "SF2520_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Ingest KY's JSON Lines (agreements, withholdings, corrections), all or nothing.
    ///
    /// Each line is one object with a "type" of agreement, agreement_ended,
    /// withholding or correction (see docs/input-format.md). If any line is
    /// rejected, every rejected line is listed with its number and reason and
    /// nothing is written. A line identical to one already recorded is an accepted
    /// duplicate; the same reference with other content is a conflict.
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
    /// løbenummer. Exits non-zero listing every problem found. The
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
    /// Fixes a cut-off (the log's head when the run starts), renders one file per
    /// kommune with entries recorded since its previous file (the løbenummer after
    /// the previous one), writes them atomically into the outbox and records a FileExported event
    /// for each. Killed at any moment, just run it again: unrecorded files are
    /// removed and rendered afresh, no løbenummer is skipped or reused.
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
    /// For each file: upload OUT/<name>, check its size, then OUT/<name>.trigger;
    /// record FileUploaded; wait for IN/<name>.sftpreceipt and record the receipt
    /// (accepted, or rejected with the platform's error codes). Kommuner go in
    /// parallel (`concurrency` in the config). An accepted file is never uploaded
    /// again unless reissued; a failed one is retried by the next run. Without an
    /// [sftp] section the files stay in the local outbox.
    Deliver(DeliverArgs),
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
    /// inclusive) with løbenummer, creation time, records, sums, SHA-256 and
    /// delivery state with the platform's receipt, all read from the log; totals
    /// per month as a table and a chart; the chain head it was made at and whether
    /// `verify` (with the default outbox) passed. Exits non-zero if verify failed;
    /// the page then lists the problems.
    Report(ReportArgs),
    /// Write a verified, owner-only copy of the ledger to DEST, safe while other
    /// sf2520 processes are writing.
    ///
    /// The copy is one consistent point of the log (SQLite's online backup API). It
    /// is staged beside DEST, its hash chain and projections are verified, and only
    /// then does it take the name DEST (mode 600). An existing DEST is refused
    /// unless --force.
    Backup(BackupArgs),
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
pub struct BackupArgs {
    /// The backup file to write.
    #[arg(value_name = "DEST")]
    pub destination: PathBuf,
    /// Replace DEST if it exists.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The backup file to restore.
    #[arg(value_name = "SRC")]
    pub source: PathBuf,
    /// Restore even if the ledger has events the backup lacks, or cannot be read.
    #[arg(long)]
    pub force: bool,
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
    /// Render what a batch run at this time would have made (needs --out; records nothing).
    #[arg(long, value_name = "TIME")]
    pub as_of: Option<DateTime<Utc>>,
    /// Deliver the new files (and any still pending) over SFTP after exporting.
    #[arg(long, conflicts_with_all = ["as_of", "test"])]
    pub deliver: bool,
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
    /// Validate the configuration (permissions, keys, values) and connect to the
    /// server with the pinned host key.
    Check,
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
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// SF2520 files to validate.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
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
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Check every line against the ledger but write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Where in the log to read: the head (default), a position, or a time.
#[derive(Args, Debug, Clone)]
pub struct AsOfArgs {
    /// Read as the log stood at this time (RFC 3339, e.g. 2026-03-01T00:00:00Z).
    #[arg(long, value_name = "TIME", conflicts_with = "at_position")]
    pub as_of: Option<DateTime<Utc>>,
    /// Read as the log stood after this position.
    #[arg(long, value_name = "N")]
    pub at_position: Option<u64>,
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
    /// full CPR numbers, as the database does: treat the output like the ledger.
    #[arg(long, requires = "json")]
    pub raw: bool,
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Seed of the generated month; the same seed gives the same data.
    #[arg(long, default_value_t = crate::demo::DEMO_SEED)]
    pub seed: u64,
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
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
            action: ConfigAction::Check,
        } => deliver::run_config_check(&cli.data_dir, cli.config.as_deref()),
        Command::Check(args) => {
            let valid = format_cmds::check(&args.files, &mut std::io::stdout().lock())?;
            Ok(if valid {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Show(args) => {
            format_cmds::show(&args.file, args.json, &mut std::io::stdout().lock())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Report(args) => report::run(&cli.data_dir, &args),
        Command::Checkpoint(args) => {
            verify::run_checkpoint(&cli.data_dir, cli.config.as_deref(), &args)
        }
        Command::Backup(args) => backup::run_backup(&cli.data_dir, &args),
        Command::Restore(args) => backup::run_restore(&cli.data_dir, &args),
    }
}
