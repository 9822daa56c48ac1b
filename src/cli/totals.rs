//! `sf2520 totals`: withheld, corrected and net per kommune or agreement, as of any point.

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::{json, Value};

use crate::domain::{AgreementRef, Kommune};
use crate::ledger::{Ledger, Totals};

use super::output::{kroner, table};
use super::TotalsArgs;

fn row(label: Vec<String>, totals: &Totals) -> Vec<String> {
    let mut row = label;
    row.extend([
        totals.entries.to_string(),
        kroner(totals.withheld_ore),
        kroner(totals.corrected_ore),
        kroner(totals.net_ore),
        totals
            .last_payout_date
            .map_or_else(String::new, |date| date.to_string()),
    ]);
    row
}

const TOTALS_HEADERS: [&str; 5] = [">entries", ">withheld", ">corrected", ">net", "last payout"];

pub(super) fn run(data_dir: &Path, args: &TotalsArgs) -> anyhow::Result<ExitCode> {
    let ledger = Ledger::open_read_only(data_dir)?;
    let position = ledger.resolve(args.at.as_of())?;
    let mut out = io::stdout().lock();
    if let Some(agreement) = &args.agreement {
        let agreement = AgreementRef::parse(agreement)?;
        print_agreement(&mut out, &ledger, &agreement, position, args.json)?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(kommune) = &args.kommune {
        let kommune = Kommune::parse(kommune)?;
        let rows = ledger
            .agreements_of_kommune(kommune, position)?
            .into_iter()
            .map(|(agreement, totals)| {
                let label = json!({"agreement": agreement});
                (agreement, label, totals)
            })
            .collect();
        print_rows(
            &mut out,
            position,
            &format!("kommune {kommune} {}", kommune.name()),
            "agreement",
            rows,
            args.json,
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows = ledger
        .kommune_totals(position)?
        .into_iter()
        .map(|(kommune, totals)| {
            let label = json!({"kommune": kommune.code(), "kommune_name": kommune.name()});
            (format!("{kommune} {}", kommune.name()), label, totals)
        })
        .collect();
    print_rows(
        &mut out,
        position,
        "all kommuner",
        "kommune",
        rows,
        args.json,
    )?;
    Ok(ExitCode::SUCCESS)
}

/// One agreement's totals. An unknown agreement is an error; a registered one
/// without entries has zero totals.
fn print_agreement(
    out: &mut dyn Write,
    ledger: &Ledger,
    agreement: &AgreementRef,
    position: u64,
    json: bool,
) -> anyhow::Result<()> {
    let kommune = ledger.agreement_kommune(agreement.as_str(), position)?;
    let totals = ledger
        .agreement_totals(agreement.as_str(), position)?
        .unwrap_or_default();
    if json {
        writeln!(
            out,
            "{}",
            json!({
                "position": position, "agreement": agreement.as_str(),
                "kommune": kommune.code(), "kommune_name": kommune.name(), "totals": totals,
            })
        )?;
    } else {
        writeln!(
            out,
            "agreement {agreement} of kommune {kommune} {} as of position {position}",
            kommune.name()
        )?;
        let headers: Vec<&str> = ["agreement"].into_iter().chain(TOTALS_HEADERS).collect();
        write!(
            out,
            "{}",
            table(&headers, &[row(vec![agreement.to_string()], &totals)])
        )?;
    }
    Ok(())
}

fn print_rows(
    out: &mut dyn Write,
    position: u64,
    title: &str,
    key: &str,
    rows: Vec<(String, Value, Totals)>,
    json: bool,
) -> anyhow::Result<()> {
    if json {
        let items: Vec<_> = rows
            .iter()
            .map(|(_, label, totals)| {
                let mut item = label.clone();
                item["totals"] = json!(totals);
                item
            })
            .collect();
        writeln!(out, "{}", json!({"position": position, "rows": items}))?;
        return Ok(());
    }
    let sum = rows
        .iter()
        .try_fold(Totals::default(), |sum, (name, _, totals)| {
            sum_of(&sum, totals)
                .with_context(|| format!("the total of {title} overflows 64 bits at {name}"))
        })?;
    let mut table_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|(name, _, totals)| row(vec![name.clone()], totals))
        .collect();
    table_rows.push(row(vec![format!("total ({} rows)", rows.len())], &sum));
    writeln!(out, "{title} as of position {position}")?;
    let headers: Vec<&str> = [key].into_iter().chain(TOTALS_HEADERS).collect();
    write!(out, "{}", table(&headers, &table_rows))?;
    Ok(())
}

/// `sum` and `totals` added up, or `None` if a sum does not fit (each row fits,
/// but 98 kommuner together need not): the table's total line is then refused,
/// never wrapped.
fn sum_of(sum: &Totals, totals: &Totals) -> Option<Totals> {
    Some(Totals {
        withheld_ore: sum.withheld_ore.checked_add(totals.withheld_ore)?,
        corrected_ore: sum.corrected_ore.checked_add(totals.corrected_ore)?,
        net_ore: sum.net_ore.checked_add(totals.net_ore)?,
        entries: sum.entries.checked_add(totals.entries)?,
        last_payout_date: sum.last_payout_date.max(totals.last_payout_date),
    })
}
