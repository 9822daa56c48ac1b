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
use super::MigrateArgs;

/// The parts of the configuration file this module reads.
#[derive(Deserialize)]
struct ConfigFile {
    database: Option<DatabaseSection>,
}

/// `[database]`: where the ledger is, when it is not SQLite in the data directory.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DatabaseSection {
    /// A `postgresql://` URL or a libpq `key=value` string.
    url: String,
}

/// The ledger's database: the command line (or its environment variable) first,
/// then `[database] url` in the configuration file; `None` for SQLite.
pub(super) fn database_url(
    data_dir: &Path,
    config: Option<&Path>,
    given: Option<&str>,
) -> anyhow::Result<Option<DatabaseUrl>> {
    if let Some(url) = given {
        return Ok(Some(
            DatabaseUrl::parse(url).context("--database-url (or SF2520_DATABASE_URL)")?,
        ));
    }
    let path = config_path(data_dir, config);
    // No configuration file is no database section: SQLite. A named file that is
    // missing, or a data directory that is not one, is reported by the command
    // that needs them, with its own words.
    let text = match std::fs::read_to_string(&path) {
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
    match parsed.database {
        None => Ok(None),
        Some(section) => Ok(Some(
            DatabaseUrl::parse(&section.url)
                .with_context(|| format!("{}: [database] url", path.display()))?,
        )),
    }
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
    if args.json || !io::IsTerminal::is_terminal(&io::stderr()) {
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
    }
    Ok(ExitCode::SUCCESS)
}
