//! `sf2520 migrate --to URL`, and where the ledger's database is: `--database-url`
//! (or `SF2520_DATABASE_URL`), else `[database] url` in the configuration file,
//! else SQLite in the data directory.

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use serde::Deserialize;
use serde_json::json;

use crate::ledger::{DatabaseUrl, Ledger, LedgerError, Location};

use super::deliver::config_path;
use super::output::hex;
use super::{MigrateArgs, SealArgs};

/// The parts of the configuration file this module reads.
#[derive(Deserialize)]
struct ConfigFile {
    database: Option<DatabaseSection>,
}

/// `[database]`: where the ledger is, when it is not SQLite in the data
/// directory, and how a command rides out a failover of that database.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DatabaseSection {
    /// A `postgresql://` URL or a libpq `key=value` string (the command line's
    /// `--database-url` or `SF2520_DATABASE_URL` wins).
    url: Option<String>,
    /// How long a command that lost its connection waits for a primary that
    /// accepts writes again (default 60).
    failover_wait_secs: Option<u64>,
    /// Refuse writes while the primary has no synchronous standby (default: when
    /// the URL names more than one host).
    require_synchronous: Option<bool>,
}

/// The most `failover_wait_secs` may say: a day.
const FAILOVER_WAIT_MAX_S: u64 = 86_400;

/// The ledger's database: the command line (or its environment variable) first,
/// then `[database] url` in the configuration file; `None` for SQLite. The
/// section's failover settings apply to either URL.
pub(super) fn database_url(
    data_dir: &Path,
    config: Option<&Path>,
    given: Option<&str>,
) -> anyhow::Result<Option<DatabaseUrl>> {
    let path = config_path(data_dir, config);
    let section = match database_section(&path) {
        Ok(section) => section,
        // The command line names the database: a configuration file this user may
        // not read is the command's to report, as without a URL.
        Err(_) if given.is_some() => None,
        Err(error) => return Err(error),
    };
    let url = match (given, section.as_ref().and_then(|s| s.url.as_deref())) {
        (Some(url), _) => {
            DatabaseUrl::parse(url).context("--database-url (or SF2520_DATABASE_URL)")?
        }
        (None, Some(url)) => DatabaseUrl::parse(url)
            .with_context(|| format!("{}: [database] url", path.display()))?,
        (None, None) => return Ok(None),
    };
    let Some(section) = section else {
        return Ok(Some(url));
    };
    let wait = section
        .failover_wait_secs
        .unwrap_or(crate::ledger::DEFAULT_FAILOVER_WAIT.as_secs());
    if wait > FAILOVER_WAIT_MAX_S {
        return Err(LedgerError::BadDatabaseUrl {
            url: format!("{}: [database] failover_wait_secs", path.display()),
            reason: format!("{wait} is more than a day ({FAILOVER_WAIT_MAX_S} s); give the seconds a command may wait for a new primary, such as 60"),
        }
        .into());
    }
    Ok(Some(url.with_failover(
        std::time::Duration::from_secs(wait),
        section.require_synchronous,
    )))
}

/// The `[database]` section of the configuration file at `path`, if the file
/// and the section exist.
fn database_section(path: &Path) -> anyhow::Result<Option<DatabaseSection>> {
    // No configuration file is no database section: SQLite. A named file that is
    // missing, or a data directory that is not one, is reported by the command
    // that needs them, with its own words.
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error)
            if matches!(
                error.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(None)
        }
        Err(error) => {
            return Err(error)
                .with_context(|| format!("cannot read the configuration file {}", path.display()))
        }
    };
    let parsed: ConfigFile =
        toml::from_str(&text).map_err(|error| LedgerError::BadDatabaseUrl {
            url: format!("{}: [database]", path.display()),
            reason: error.message().to_string(),
        })?;
    Ok(parsed.database)
}

pub(super) fn run(data_dir: &Path, args: &MigrateArgs) -> anyhow::Result<ExitCode> {
    let target = DatabaseUrl::parse(&args.to).context("--to")?;
    let source = match &args.from {
        Some(file) => Ledger::open_copy(file)?,
        None => {
            let location = Location::embedded(data_dir);
            // Nothing may append while the log is copied: hold the write side's
            // export lock, and read a fixed head.
            Ledger::open_at(&location, false, crate::ledger::DEFAULT_TOTALS_BLOCK)?
        }
    };
    let _exports = match &args.from {
        Some(_) => None,
        None => Some(source.lock_exports(std::time::Duration::ZERO)?),
    };
    let events = source.head()?.position;
    let bar = indicatif::ProgressBar::new(events);
    if args.json || super::logging::json() || !io::IsTerminal::is_terminal(&io::stderr()) {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let report = source.migrate_to(&target, |position| bar.set_position(position))?;
    bar.finish_and_clear();
    let mut out = io::stdout().lock();
    if args.json {
        writeln!(
            out,
            "{}",
            json!({
                "target": report.target, "events": report.events,
                "head": { "position": report.head.position, "hash": hex(&report.head.hash) },
            })
        )?;
    } else {
        writeln!(
            out,
            "migrate: {} event(s) copied into {}; projections rebuilt there; the copy's head \
             {}:{} equals the source's. Run every node with --database-url (or [database] url \
             in sf2520.toml) from now on",
            report.events,
            report.target,
            report.head.position,
            hex(&report.head.hash)
        )?;
        if let Some(key_file) = source.key_file() {
            writeln!(
                out,
                "migrate: the copy's CPRs are sealed under the same key file {}: give every \
                 node a copy of it (kept apart from the database and its backups)",
                key_file.display()
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `sf2520 seal --to DIR`: a copy of a ledger written before sealing, every CPR
/// sealed, in a new data directory.
pub(super) fn run_seal(data_dir: &Path, args: &SealArgs) -> anyhow::Result<ExitCode> {
    let source = Ledger::open_existing(data_dir)?;
    if source.seals_personal_data()? {
        anyhow::bail!(
            "the ledger at {} already seals every CPR; there is nothing to seal",
            data_dir.display()
        );
    }
    if args.to.join(crate::ledger::DATABASE_FILE).exists() {
        return Err(LedgerError::TargetNotEmpty {
            target: args.to.display().to_string(),
            what: "it already holds a ledger".into(),
        }
        .into());
    }
    // Nothing may export while the log is copied (ingest: stop it first).
    let _exports = source.lock_exports(std::time::Duration::ZERO)?;
    let mut target = Ledger::open_at(&Location::embedded(&args.to), true, source.totals_block())?;
    let events = source.head()?.position;
    let bar = indicatif::ProgressBar::new(events);
    if args.json || super::logging::json() || !io::IsTerminal::is_terminal(&io::stderr()) {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let report = source.seal_into(&mut target, |position| bar.set_position(position))?;
    bar.finish_and_clear();
    print_sealed(&report, &args.to, target.key_file(), args.json)?;
    Ok(ExitCode::SUCCESS)
}

fn print_sealed(
    report: &crate::ledger::SealReport,
    to: &Path,
    key_file: Option<&Path>,
    json: bool,
) -> io::Result<()> {
    let key_file = key_file.map(|path| path.display().to_string());
    let mut out = io::stdout().lock();
    let head = format!("{}:{}", report.head.position, hex(&report.head.hash));
    let source_head = format!(
        "{}:{}",
        report.source_head.position,
        hex(&report.source_head.hash)
    );
    if json {
        return writeln!(
            out,
            "{}",
            json!({
                "target": to.display().to_string(), "source_head": source_head,
                "sealed_events": report.sealed_events, "head": head, "key_file": key_file,
            })
        );
    }
    writeln!(
        out,
        "seal: {} event(s) copied into {} at the same positions, {} CPR(s) sealed; its \
         LedgerSealed event names the old head {source_head}\nhead: {head}\nseal: the key file \
         is {}; back it up apart from the ledger. Then move the outbox, receipts and \
         configuration to the new data directory, run `sf2520 verify` there, and destroy the \
         old ledger and its backups, which hold the CPRs in plain (docs/operations.md, \
         \"Sealing an older ledger\")",
        report.source_head.position,
        to.display(),
        report.sealed_events,
        key_file.unwrap_or_default()
    )
}
