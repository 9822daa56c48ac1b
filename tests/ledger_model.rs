//! Model-based property test: random sequences of agreements, withholdings and
//! corrections against a plain HashMap model; totals must agree at every step,
//! and as of every earlier position at the end.

mod support;

use std::collections::HashMap;

use proptest::prelude::*;
use sf2520::domain::Kommune;
use support::ledger::*;

const KOMMUNER: [&str; 2] = ["0751", "0101"];

#[derive(Clone, Debug)]
enum Op {
    Agreement {
        id: u8,
        kommune: usize,
        from_month: u32,
    },
    End {
        id: u8,
        to_month: u32,
    },
    Withholding {
        reference: u8,
        agreement: u8,
        kommune: usize,
        month: u32,
        ore: i64,
    },
    Correction {
        reference: u8,
        corrects: u8,
        kommune: usize,
        amount: CorrectionAmount,
    },
}

/// Correction amounts chosen relative to the withholding's net when the line is
/// built, so that the edges (exactly to zero, one øre below) come up often.
#[derive(Clone, Copy, Debug)]
enum CorrectionAmount {
    ReverseAll,
    OneOreTooMuch,
    Zero,
    Fixed(i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..4u8, 0..2usize, 1..6u32).prop_map(|(id, kommune, from_month)| Op::Agreement {
            id,
            kommune,
            from_month
        }),
        (0..4u8, 1..12u32).prop_map(|(id, to_month)| Op::End { id, to_month }),
        (
            0..12u8,
            0..4u8,
            0..2usize,
            1..12u32,
            prop_oneof![Just(0i64), Just(-1), 1..5_000i64]
        )
            .prop_map(
                |(reference, agreement, kommune, month, ore)| Op::Withholding {
                    reference,
                    agreement,
                    kommune,
                    month,
                    ore
                }
            ),
        (
            12..24u8,
            0..12u8,
            0..2usize,
            prop_oneof![
                Just(CorrectionAmount::ReverseAll),
                Just(CorrectionAmount::OneOreTooMuch),
                Just(CorrectionAmount::Zero),
                (-3_000..1_000i64).prop_map(CorrectionAmount::Fixed),
            ]
        )
            .prop_map(|(reference, corrects, kommune, amount)| Op::Correction {
                reference,
                corrects,
                kommune,
                amount
            }),
    ]
}

fn kroner(ore: i64) -> String {
    sf2520::domain::format_kroner(i128::from(ore))
}

fn month(month: u32) -> String {
    format!("2026-{month:02}-01")
}

/// The model: what a careful clerk with three hash maps would conclude.
#[derive(Default, Clone)]
struct Model {
    /// agreement → (kommune, from month, ended month)
    agreements: HashMap<u8, (usize, u32, Option<u32>)>,
    /// (kommune, reference) → (is withholding, agreement, net øre, original line)
    entries: HashMap<(usize, u8), (bool, u8, i64, String)>,
    /// agreement → (withheld, corrected, entries)
    totals: HashMap<u8, (i64, i64, u64)>,
}

#[derive(Debug, PartialEq)]
enum Outcome {
    Appended,
    Duplicate,
    Rejected,
}

impl Model {
    fn line(&self, op: &Op) -> String {
        match *op {
            Op::Agreement {
                id,
                kommune,
                from_month,
            } => agreement(
                &format!("BA{id}"),
                KOMMUNER[kommune],
                CPR,
                &month(from_month),
            ),
            Op::End { id, to_month } => {
                let kommune = self.agreements.get(&id).map_or(0, |a| a.0);
                agreement_ended(
                    &format!("BA{id}"),
                    KOMMUNER[kommune],
                    &format!("2026-{to_month:02}-28"),
                )
            }
            Op::Withholding {
                reference,
                agreement,
                kommune,
                month: m,
                ore,
            } => withholding(
                &format!("KY-{reference}"),
                &format!("BA{agreement}"),
                KOMMUNER[kommune],
                &month(m),
                &kroner(ore),
            ),
            Op::Correction {
                reference,
                corrects,
                kommune,
                amount,
            } => {
                let ore = self.correction_ore(kommune, corrects, amount);
                correction(
                    &format!("KY-{reference}"),
                    &format!("KY-{corrects}"),
                    KOMMUNER[kommune],
                    &kroner(ore),
                )
            }
        }
    }

    fn correction_ore(&self, kommune: usize, corrects: u8, amount: CorrectionAmount) -> i64 {
        let net = self
            .entries
            .get(&(kommune, corrects))
            .map_or(100, |entry| entry.2);
        match amount {
            CorrectionAmount::ReverseAll => -net,
            CorrectionAmount::OneOreTooMuch => -net - 1,
            CorrectionAmount::Zero => 0,
            CorrectionAmount::Fixed(ore) => ore,
        }
    }

    fn apply(&mut self, op: &Op, line: &str) -> Outcome {
        match *op {
            Op::Agreement {
                id,
                kommune,
                from_month,
            } => match self.agreements.get(&id) {
                Some(&(k, f, _)) if (k, f) == (kommune, from_month) => Outcome::Duplicate,
                Some(_) => Outcome::Rejected,
                None => {
                    self.agreements.insert(id, (kommune, from_month, None));
                    Outcome::Appended
                }
            },
            Op::End { id, to_month } => match self.agreements.get_mut(&id) {
                None => Outcome::Rejected,
                Some((_, _, Some(ended))) if *ended == to_month => Outcome::Duplicate,
                Some((_, _, Some(_))) => Outcome::Rejected,
                Some((_, from, ended)) if to_month >= *from => {
                    *ended = Some(to_month);
                    Outcome::Appended
                }
                Some(_) => Outcome::Rejected,
            },
            Op::Withholding {
                reference,
                agreement,
                kommune,
                month: m,
                ore,
            } => {
                if let Some(existing) = self.entries.get(&(kommune, reference)) {
                    return if existing.3 == line {
                        Outcome::Duplicate
                    } else {
                        Outcome::Rejected
                    };
                }
                let active = match self.agreements.get(&agreement) {
                    Some(&(k, from, ended)) => {
                        k == kommune && from <= m && ended.is_none_or(|to| m <= to)
                    }
                    None => false,
                };
                if ore <= 0 || !active {
                    return Outcome::Rejected;
                }
                self.entries.insert(
                    (kommune, reference),
                    (true, agreement, ore, line.to_string()),
                );
                let totals = self.totals.entry(agreement).or_default();
                totals.0 += ore;
                totals.2 += 1;
                Outcome::Appended
            }
            Op::Correction {
                reference,
                corrects,
                kommune,
                amount,
            } => {
                let ore = self.correction_ore(kommune, corrects, amount);
                if let Some(existing) = self.entries.get(&(kommune, reference)) {
                    return if existing.3 == line {
                        Outcome::Duplicate
                    } else {
                        Outcome::Rejected
                    };
                }
                let Some(&(true, agreement, net, _)) = self.entries.get(&(kommune, corrects))
                else {
                    return Outcome::Rejected;
                };
                if ore == 0 || net + ore < 0 {
                    return Outcome::Rejected;
                }
                self.entries.get_mut(&(kommune, corrects)).unwrap().2 += ore;
                self.entries.insert(
                    (kommune, reference),
                    (false, agreement, 0, line.to_string()),
                );
                let totals = self.totals.entry(agreement).or_default();
                totals.1 += ore;
                totals.2 += 1;
                Outcome::Appended
            }
        }
    }
}

fn assert_totals_equal(t: &TestLedger, model: &Model, position: u64) -> Result<(), TestCaseError> {
    for id in 0..4u8 {
        let actual = t
            .ledger
            .agreement_totals(&format!("BA{id}"), position)
            .unwrap();
        let actual = actual.map(|x| (x.withheld_ore, x.corrected_ore, x.entries));
        prop_assert_eq!(
            actual,
            model.totals.get(&id).copied(),
            "agreement BA{} at {}",
            id,
            position
        );
    }
    let kommune_net: i64 = t
        .ledger
        .kommune_totals(position)
        .unwrap()
        .iter()
        .map(|(_, x)| x.net_ore)
        .sum();
    let model_net: i64 = model.totals.values().map(|x| x.0 + x.1).sum();
    prop_assert_eq!(kommune_net, model_net);
    for (index, code) in KOMMUNER.iter().enumerate() {
        let actual: Vec<(String, (i64, i64, u64))> = t
            .ledger
            .agreements_of_kommune(Kommune::parse(code).unwrap(), position)
            .unwrap()
            .into_iter()
            .map(|(agreement, x)| (agreement, (x.withheld_ore, x.corrected_ore, x.entries)))
            .collect();
        let mut expected: Vec<(String, (i64, i64, u64))> = model
            .totals
            .iter()
            .filter(|(id, _)| model.agreements.get(id).map(|a| a.0) == Some(index))
            .map(|(id, totals)| (format!("BA{id}"), *totals))
            .collect();
        expected.sort();
        prop_assert_eq!(actual, expected, "agreements of {} at {}", code, position);
    }
    Ok(())
}

/// Entries per kommune in the model, by index into KOMMUNER.
fn entry_counts(model: &Model) -> [u64; 2] {
    let mut counts = [0; 2];
    for (kommune, _) in model.entries.keys() {
        counts[*kommune] += 1;
    }
    counts
}

/// The ledger's count of each kommune's entries between two positions equals the
/// difference of the model's counts there.
fn assert_counts_between(
    t: &TestLedger,
    (after, earlier): (u64, &Model),
    (through, later): (u64, &Model),
) -> Result<(), TestCaseError> {
    let (before, now) = (entry_counts(earlier), entry_counts(later));
    for (index, code) in KOMMUNER.iter().enumerate() {
        let counted = t
            .ledger
            .kommune_range_totals(Kommune::parse(code).unwrap(), after, through)
            .unwrap()
            .entries;
        prop_assert_eq!(
            counted,
            now[index] - before[index],
            "{} in ({}, {}]",
            code,
            after,
            through
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn ledger_totals_equal_the_model_at_every_step(
        ops in prop::collection::vec(op(), 1..60),
        // Totals blocks of a few positions, so that a run crosses many block ends
        // (production blocks are 262,144 positions).
        totals_block in 1u64..8,
    ) {
        let mut t = TestLedger::with_totals_block(totals_block);
        let mut model = Model::default();
        let mut history = vec![(0, model.clone())];
        for op in &ops {
            let line = model.line(op);
            let expected = model.apply(op, &line);
            let actual = match t.ingest(&format!("{line}\n")) {
                Ok(report) if report.appended() == 1 => Outcome::Appended,
                Ok(_) => Outcome::Duplicate,
                Err(_) => Outcome::Rejected,
            };
            prop_assert_eq!(actual, expected, "{}", line);
            assert_totals_equal(&t, &model, t.head())?;
            history.push((t.head(), model.clone()));
        }
        for (position, snapshot) in &history {
            assert_totals_equal(&t, snapshot, *position)?;
            assert_counts_between(&t, (0, &history[0].1), (*position, snapshot))?;
        }
        for pair in history.windows(2) {
            assert_counts_between(&t, (pair[0].0, &pair[0].1), (pair[1].0, &pair[1].1))?;
        }
        let verified = t.ledger.verify(|_| {}).unwrap();
        prop_assert!(verified.is_ok(), "verify: {:?}", verified);
    }
}
