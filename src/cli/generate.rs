//! `sf2520 generate --out DIR` (hidden): the manual pages and the shell
//! completions, made from the clap definitions themselves so that they cannot
//! drift from `--help`. `scripts/build-deb.sh` runs it on the binary it packages.

use std::fs;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::CommandFactory;
use clap_complete::Shell;

use super::{Cli, GenerateArgs};

/// Writes `DIR/man/sf2520.1` and one page per subcommand (`sf2520-export.1`, …),
/// and `DIR/completions/` for bash (`sf2520.bash`), zsh (`_sf2520`) and fish
/// (`sf2520.fish`).
pub(super) fn run(args: &GenerateArgs) -> anyhow::Result<ExitCode> {
    let man = args.out.join("man");
    let completions = args.out.join("completions");
    for dir in [&man, &completions] {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    clap_mangen::generate_to(Cli::command(), &man)
        .with_context(|| format!("cannot write the manual pages into {}", man.display()))?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        write_completion(shell, &completions)?;
    }
    println!(
        "generate: manual pages in {}, completions in {}",
        man.display(),
        completions.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn write_completion(shell: Shell, dir: &Path) -> anyhow::Result<()> {
    let mut command = without_hidden_subcommands(Cli::command());
    clap_complete::generate_to(shell, &mut command, "sf2520", dir)
        .with_context(|| format!("cannot write the {shell} completion into {}", dir.display()))?;
    Ok(())
}

/// `command` without its hidden subcommands (this one): clap_complete, unlike
/// clap_mangen, completes them, and clap cannot remove a subcommand, so the
/// command is put together again from its arguments and visible subcommands.
fn without_hidden_subcommands(command: clap::Command) -> clap::Command {
    let arguments: Vec<clap::Arg> = command.get_arguments().cloned().collect();
    let visible: Vec<clap::Command> = command
        .get_subcommands()
        .filter(|subcommand| !subcommand.is_hide_set())
        .cloned()
        .collect();
    let mut rebuilt = clap::Command::new("sf2520")
        .version(env!("CARGO_PKG_VERSION"))
        .args(arguments)
        .subcommands(visible)
        .subcommand_required(true);
    if let Some(about) = command.get_about() {
        rebuilt = rebuilt.about(about.clone());
    }
    rebuilt
}
