//! `sf2520 report`: the reconciliation report of one kommune, as one HTML page.

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context};

use crate::audit::report::{build, render_html, Lang};
use crate::audit::{verify, AuditChecks};
use crate::domain::Kommune;
use crate::export::default_outbox;
use crate::export::outbox::write_bytes_atomically;
use crate::ledger::Ledger;

use super::{ReportArgs, ReportLang};

pub(super) fn run(data_dir: &Path, args: &ReportArgs) -> anyhow::Result<ExitCode> {
    let kommune = Kommune::parse(&args.kommune)?;
    if let (Some(from), Some(to)) = (args.from, args.to) {
        if from > to {
            bail!("--from {from} is after --to {to}: nothing could be in the period");
        }
    }
    let Some(name) = args.out.file_name().and_then(|name| name.to_str()) else {
        bail!("--out {} is not a file name", args.out.display());
    };
    let dir = match args.out.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let ledger = Ledger::open(data_dir)?;
    let checks = AuditChecks {
        anchors: Vec::new(),
        outbox: Some(default_outbox(data_dir)).filter(|dir| dir.is_dir()),
    };
    let verification = verify(&ledger, &checks)?;
    let lang = match args.lang {
        ReportLang::Da => Lang::Da,
        ReportLang::En => Lang::En,
    };
    let report = build(&ledger, kommune, args.from, args.to, &verification)?;
    write_bytes_atomically(dir, name, render_html(&report, lang).as_bytes())
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "report: {} file(s) of kommune {} {} into {}; made at head {}; verify {}",
        report.files.len(),
        kommune,
        kommune.name(),
        args.out.display(),
        report.head,
        if verification.passed() {
            "passed".to_string()
        } else {
            format!(
                "FAILED ({} problem(s), listed in the report)",
                report.verify_problems.len()
            )
        }
    )?;
    Ok(if verification.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
