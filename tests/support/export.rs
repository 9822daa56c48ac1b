//! Helpers for exporter tests: reading every official file back and checking the
//! exactly-once invariants of ARCHITECTURE.md, invariant 3.

use std::collections::BTreeMap;
use std::path::Path;

use sf2520::demo::SplitMix64;
use sf2520::domain::{Agreement, Amount, Command as LedgerCommand, KyRef, Withholding};
use sf2520::export::outbox::{LOST_DIR, OUTBOX_MARKER, QUARANTINE_DIR};
use sf2520::export::reconstruct;
use sf2520::ledger::Ledger;
use sf2520::ledger::OfficialFile;
use sf2520::sf2520::{read_file, ParsedFile};

/// Reads and strictly checks one file of the outbox.
pub(crate) fn read_checked(path: &Path) -> ParsedFile {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    read_file(&bytes).unwrap_or_else(|errors| panic!("{} fails check: {errors:?}", path.display()))
}

/// The official files grouped by kommune, after checking that each kommune's
/// løbenumre run 1..n without gaps and that each file's entry range starts where the
/// previous one ended.
pub(crate) fn assert_files_follow_on(ledger: &Ledger) -> BTreeMap<u16, Vec<OfficialFile>> {
    let mut by_kommune: BTreeMap<u16, Vec<OfficialFile>> = BTreeMap::new();
    for file in ledger.official_files(None).unwrap() {
        by_kommune
            .entry(file.kommune.number())
            .or_default()
            .push(file);
    }
    for (kommune, files) in &by_kommune {
        let mut previous_cutoff = 0;
        for (index, file) in files.iter().enumerate() {
            assert_eq!(
                file.sequence as usize,
                index + 1,
                "kommune {kommune}: løbenumre must be gapless"
            );
            assert_eq!(
                file.previous_cutoff_position, previous_cutoff,
                "kommune {kommune} file {}: ranges must follow on",
                file.sequence
            );
            previous_cutoff = file.cutoff_position;
        }
    }
    by_kommune
}

/// Checks, for every kommune: løbenumre 1..n without gaps, ranges that follow on
/// from each other, every official file in the outbox passing `check` and
/// `reconstruct`, no unrecorded SF2520 file left in the outbox, and every entry of
/// the ledger in exactly one file. Returns the number of files.
pub(crate) fn assert_exactly_once(ledger: &Ledger, outbox: &Path) -> usize {
    let by_kommune = assert_files_follow_on(ledger);
    let files: Vec<&OfficialFile> = by_kommune.values().flatten().collect();
    let mut seen: BTreeMap<(u16, String), usize> = BTreeMap::new();
    for (kommune, files) in &by_kommune {
        for file in files {
            let parsed = read_checked(&outbox.join(&file.file_name));
            assert_eq!(parsed.header.sequence, file.sequence);
            assert_eq!(parsed.end.record_count, file.record_count);
            let rebuilt = reconstruct(ledger, file.kommune, file.sequence).unwrap();
            assert!(rebuilt.matches(), "{} does not reconstruct", file.file_name);
            assert_eq!(
                rebuilt.bytes,
                std::fs::read(outbox.join(&file.file_name)).unwrap()
            );
            for detail in parsed.details {
                *seen
                    .entry((*kommune, detail.record.reference.to_string()))
                    .or_default() += 1;
            }
        }
    }
    let twice: Vec<_> = seen.iter().filter(|(_, &count)| count != 1).collect();
    assert!(twice.is_empty(), "entries in more than one file: {twice:?}");
    let head = ledger.head().unwrap().position;
    let entries: u64 = ledger
        .kommune_totals(head)
        .unwrap()
        .iter()
        .map(|(_, totals)| totals.entries)
        .sum();
    assert_eq!(
        u64::try_from(seen.len()).unwrap(),
        entries,
        "every entry must be in a file"
    );
    let names: Vec<String> = std::fs::read_dir(outbox)
        .map(|dir| {
            dir.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let official: std::collections::HashSet<_> =
        files.iter().map(|f| f.file_name.clone()).collect();
    for name in names {
        // The ledger's claim on the outbox, where its interrupted runs' leftovers
        // go, and where `accept-loss` keeps files whose record was lost.
        let ours = name == OUTBOX_MARKER || name == QUARANTINE_DIR || name == LOST_DIR;
        assert!(
            ours || official.contains(&name),
            "unrecorded or temporary file left in the outbox: {name}"
        );
    }
    files.len()
}

/// The agreements a sequence of commands registers.
pub(crate) fn registered_agreements(commands: &[LedgerCommand]) -> Vec<Agreement> {
    commands
        .iter()
        .filter_map(|c| match c {
            LedgerCommand::RegisterAgreement(a) => Some(a.clone()),
            _ => None,
        })
        .collect()
}

/// `count` new withholdings (references `KY-R{round}-{i}`) for random agreements.
pub(crate) fn more_withholdings(
    rng: &mut SplitMix64,
    agreements: &[Agreement],
    round: usize,
    count: usize,
) -> Vec<(usize, LedgerCommand)> {
    (0..count)
        .map(|i| {
            let agreement =
                &agreements[usize::try_from(rng.below(agreements.len() as u64)).unwrap()];
            let command = LedgerCommand::RecordWithholding(Withholding {
                reference: KyRef::parse(&format!("KY-R{round}-{i}")).unwrap(),
                agreement: agreement.agreement.clone(),
                kommune: agreement.kommune,
                cpr: agreement.cpr,
                payout_date: chrono::NaiveDate::from_ymd_opt(2026, 10, 20).unwrap(),
                period_from: chrono::NaiveDate::from_ymd_opt(2026, 10, 1).unwrap(),
                period_to: chrono::NaiveDate::from_ymd_opt(2026, 10, 19).unwrap(),
                amount: Amount::from_ore(10_000 + i64::try_from(rng.below(90_000)).unwrap())
                    .unwrap(),
            });
            (i + 1, command)
        })
        .collect()
}
