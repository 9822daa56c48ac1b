//! `sf2520 init`: create the data directory and an empty ledger, the one command
//! (with `demo`) that may create a ledger.

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use serde_json::json;

use crate::ledger::{Ledger, Location, DATABASE_FILE};

use super::InitArgs;

pub(super) fn run(data_dir: &Path, args: &InitArgs) -> anyhow::Result<ExitCode> {
    let location = Location::of(data_dir);
    let existed = match &location.database {
        None => data_dir.join(DATABASE_FILE).exists(),
        // Whatever stops the open here, the open below reports.
        Some(_) => Ledger::open_existing(data_dir).is_ok(),
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
                "created": !existed,
                "head_position": head,
                "key_file": key_file,
            })
        )?;
    } else if existed {
        writeln!(
            out,
            "init: a ledger already exists at {} ({head} event(s)); nothing changed",
            data_dir.display()
        )?;
    } else if let Some(url) = &location.database {
        writeln!(
            out,
            "init: created an empty ledger in the PostgreSQL database {}, with this node's data \
             directory at {} (0700). Next: put the [sftp] configuration in {}/sf2520.toml (or \
             --config), then `sf2520 ingest FILE`",
            url.describe(),
            data_dir.display(),
            data_dir.display()
        )?;
    } else {
        writeln!(
            out,
            "init: created an empty ledger at {} (directory 0700, database 0600). \
             Next: put the [sftp] configuration in {}/sf2520.toml (or --config), then \
             `sf2520 ingest FILE`",
            data_dir.display(),
            data_dir.display()
        )?;
    }
    if let (Some(key_file), false, false) = (&key_file, existed, args.json) {
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
