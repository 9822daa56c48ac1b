//! The demo data set: a realistic, seeded month of agreements, withholdings and
//! corrections for all 98 kommuner. Pure: it only builds commands.

use chrono::NaiveDate;

use crate::domain::{
    Agreement, AgreementEnd, AgreementRef, Amount, Command, Correction, Cpr, Kommune, KyRef,
    Withholding,
};

/// The seed `sf2520 demo` uses, so that every run builds the same month.
pub const DEMO_SEED: u64 = 2520;

/// SplitMix64: a small, well-known generator; enough for reproducible test data.
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn date(year: i32, month: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(year, month, day).expect("demo dates are real")
}

/// A valid CPR born 1960–1999 (century digit 0–3).
pub fn random_cpr(rng: &mut SplitMix64) -> Cpr {
    let day = 1 + rng.below(28);
    let month = 1 + rng.below(12);
    let year = 60 + rng.below(40);
    let serial = rng.below(4000);
    Cpr::parse(&format!("{day:02}{month:02}{year:02}{serial:04}")).expect("generated CPR is valid")
}

/// One month (October 2026) for every kommune: agreements, one or two payout-run
/// withholdings per agreement, and corrections (reductions, reversals, increases)
/// for some of them; a few agreements end at the month's end.
pub fn demo_month(seed: u64) -> Vec<Command> {
    let mut rng = SplitMix64::new(seed);
    let mut commands = Vec::new();
    for kommune in Kommune::all() {
        kommune_month(&mut rng, kommune, &mut commands);
    }
    commands
}

fn kommune_month(rng: &mut SplitMix64, kommune: Kommune, commands: &mut Vec<Command>) {
    let agreements = 5 + rng.below(40);
    let mut withholding_number = 0;
    let mut correction_number = 0;
    for index in 1..=agreements {
        let agreement = AgreementRef::parse(&format!("BA{}{index:05}", kommune.code()))
            .expect("demo agreement reference is valid");
        let cpr = random_cpr(rng);
        commands.push(Command::RegisterAgreement(Agreement {
            agreement: agreement.clone(),
            kommune,
            cpr: cpr.into(),
            valid_from: date(2025, 1 + u32::try_from(rng.below(12)).expect("below 12"), 1),
            valid_to: None,
        }));
        let payouts: &[(NaiveDate, NaiveDate, NaiveDate)] = if rng.chance(20) {
            &[
                (date(2026, 10, 1), date(2026, 9, 1), date(2026, 9, 30)),
                (date(2026, 10, 15), date(2026, 10, 1), date(2026, 10, 14)),
            ]
        } else {
            &[(date(2026, 10, 1), date(2026, 9, 1), date(2026, 9, 30))]
        };
        for &(payout_date, period_from, period_to) in payouts {
            withholding_number += 1;
            let reference = KyRef::parse(&format!(
                "KY-{}-2610-{withholding_number:06}",
                kommune.code()
            ))
            .expect("demo reference is valid");
            // 300.00 to 2,499.99 kroner, as monthly child-support withholdings go.
            let amount_ore = 30_000 + i64::try_from(rng.below(220_000)).expect("below 220,000");
            commands.push(Command::RecordWithholding(Withholding {
                reference: reference.clone(),
                agreement: agreement.clone(),
                kommune,
                cpr: cpr.into(),
                payout_date,
                period_from,
                period_to,
                amount: Amount::from_ore(amount_ore).expect("demo amount fits"),
            }));
            if let Some((amount_ore, reason)) = correction_for(rng, amount_ore) {
                correction_number += 1;
                commands.push(Command::CorrectWithholding(Correction {
                    reference: KyRef::parse(&format!(
                        "KO-{}-2610-{correction_number:06}",
                        kommune.code()
                    ))
                    .expect("demo reference is valid"),
                    corrects: reference,
                    kommune,
                    amount: Amount::from_ore(amount_ore).expect("demo amount fits"),
                    reason: reason.to_string(),
                }));
            }
        }
        if rng.chance(5) {
            commands.push(Command::EndAgreement(AgreementEnd {
                agreement,
                kommune,
                valid_to: date(2026, 10, 31),
            }));
        }
    }
}

/// Maybe a correction of a withholding of `amount_ore`: 6 % reduced, 2 % reversed,
/// 2 % increased.
fn correction_for(rng: &mut SplitMix64, amount_ore: i64) -> Option<(i64, &'static str)> {
    match rng.below(100) {
        0..=5 => Some((-(amount_ore / 4), "genberegnet")),
        6..=7 => Some((-amount_ore, "tilbageført")),
        8..=9 => Some((
            5_000 + i64::try_from(rng.below(20_000)).expect("below 20,000"),
            "efterregulering",
        )),
        _ => None,
    }
}
