//! Command-line commands: the logic behind each subcommand (argument parsing lives in main).

pub mod format_cmds;
