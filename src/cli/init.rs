//! `sf2520 init`: create the data directory and an empty ledger, the one command
//! (with `demo`) that may create a ledger.

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use serde_json::json;

use crate::ledger::{Ledger, Location, DATABASE_FILE, HEAD_MARK_FILE};

use super::InitArgs;

/// What `init` found and did.
enum Found {
    /// Nothing was there: a new, empty ledger.
    Created,
    /// A new node of a PostgreSQL ledger that already held one: it joined it.
    Joined,
    /// This data directory's ledger already existed.
    Existed,
}

pub(super) fn run(
    data_dir: &Path,
    config: Option<&Path>,
    args: &InitArgs,
) -> anyhow::Result<ExitCode> {
    let location = Location::of(data_dir);
    // The configuration this and every later command reads: `--config` or
    // SF2520_CONFIG (the package's units set it), else `<data-dir>/sf2520.toml`.
    let config = super::deliver::config_path(data_dir, config);
    let existed = match &location.database {
        None => data_dir.join(DATABASE_FILE).exists(),
        // Whatever stops the open here, the open below reports.
        Some(_) => Ledger::open_existing(data_dir).is_ok(),
    };
    // A node that never committed has no head mark: on a database that already
    // held the ledger, this `init` joins it rather than creating anything.
    let new_node = !data_dir.join(HEAD_MARK_FILE).exists();
    let found = match (existed, location.database.is_some() && new_node) {
        (false, _) => Found::Created,
        (true, true) => Found::Joined,
        (true, false) => Found::Existed,
    };
    let ledger = Ledger::open(data_dir)?;
    let head = ledger.head()?.position;
    let key_file = ledger.key_file().map(|path| path.display().to_string());
    let mut out = io::stdout().lock();
    if args.json {
        writeln!(
            out,
            "{}",
            json!({
                "data_dir": data_dir.display().to_string(),
                "created": matches!(found, Found::Created),
                "joined": matches!(found, Found::Joined),
                "head_position": head,
                "key_file": key_file,
                "config": config.display().to_string(),
            })
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    print_text(&mut out, data_dir, &config, &location, &found, head)?;
    if let (Some(key_file), Found::Created) = (&key_file, &found) {
        writeln!(
            out,
            "init: every CPR is sealed under keys that the key file {key_file} (0600) wraps. \
             Back it up now, apart from the ledger and its backups: without it no CPR can be \
             read and no file made again. In production hand it to the service with systemd's \
             LoadCredential= (docs/operations.md, \"The key file\")"
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The one line saying what `init` found and did, and what to do next.
fn print_text(
    out: &mut dyn Write,
    data_dir: &Path,
    config: &Path,
    location: &Location,
    found: &Found,
    head: u64,
) -> io::Result<()> {
    let dir = data_dir.display();
    let config = config.display();
    match (found, &location.database) {
        (Found::Existed, _) => writeln!(
            out,
            "init: a ledger already exists at {dir} ({head} event(s)); nothing changed"
        ),
        (Found::Joined, Some(url)) => writeln!(
            out,
            "init: joined the existing ledger in the PostgreSQL database {} at head {head} \
             ({head} event(s)); this node's data directory is {dir} (0700); nothing in the \
             ledger changed",
            url.describe()
        ),
        (_, Some(url)) => writeln!(
            out,
            "init: created an empty ledger in the PostgreSQL database {}, with this node's data \
             directory at {dir} (0700). Next: put the [sftp] configuration in {config}, then \
             `sf2520 ingest FILE`",
            url.describe()
        ),
        (_, None) => writeln!(
            out,
            "init: created an empty ledger at {dir} (directory 0700, database 0600). \
             Next: put the [sftp] configuration in {config}, then `sf2520 ingest FILE`"
        ),
    }
}
