//! The benchmark's seeded workload: agreements for all 98 kommuner registered up
//! front, then withholdings with some corrections, generated batch by batch so that
//! neither side of the comparison holds the whole data set in memory.

use std::collections::VecDeque;

use chrono::NaiveDate;
use sf2520::demo::{random_cpr, SplitMix64};
use sf2520::domain::{
    Agreement, AgreementRef, Amount, Command, Correction, Cpr, Kommune, KyRef, Withholding,
};

/// One agreement per this many entries, so an agreement collects ~20 entries.
const ENTRIES_PER_AGREEMENT: u64 = 20;

/// Withholdings that may still be corrected: the most recent ones, so that a
/// correction usually lands in the same or the next file as its withholding.
const CORRECTABLE_MAX: usize = 20_000;

/// Percent of entries that are corrections.
const CORRECTION_PERCENT: u64 = 5;

fn date(year: i32, month: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(year, month, day).expect("benchmark dates are real")
}

/// A withholding that a later correction may name: each is corrected at most once,
/// so a correction can never take its net below zero.
struct Correctable {
    kommune: Kommune,
    reference: KyRef,
    amount_ore: i64,
}

/// The generator. The same seed gives the same commands in the same order, which is
/// how the child process (our ingest) and the parent (PostgreSQL's) see one data set.
pub(crate) struct Workload {
    rng: SplitMix64,
    kommuner: Vec<Kommune>,
    /// The CPR of agreement `i`; its reference and kommune follow from `i`.
    cprs: Vec<Cpr>,
    entries_total: u64,
    entries_made: u64,
    correctable: VecDeque<Correctable>,
    /// Withholdings go to agreements of kommuner at this index in code order or
    /// later only (see [`Workload::sparing`]).
    first_kommune: u64,
}

impl Workload {
    /// A workload of `entries` entries (and `entries / 20` agreements, at least 98).
    pub(crate) fn new(seed: u64, entries: u64) -> Workload {
        let mut rng = SplitMix64::new(seed);
        let kommuner: Vec<Kommune> = Kommune::all().collect();
        let agreements = (entries / ENTRIES_PER_AGREEMENT).max(98);
        let cprs = (0..agreements).map(|_| random_cpr(&mut rng)).collect();
        Workload {
            rng,
            kommuner,
            cprs,
            entries_total: entries,
            entries_made: 0,
            correctable: VecDeque::with_capacity(CORRECTABLE_MAX),
            first_kommune: 0,
        }
    }

    /// This workload, its withholdings (and so its corrections) sparing the first
    /// `kommuner` kommuner in code order: they stay quiet.
    pub(crate) fn sparing(mut self, kommuner: u64) -> Workload {
        self.first_kommune = kommuner.min(97);
        self
    }

    pub(crate) fn agreement_count(&self) -> u64 {
        u64::try_from(self.cprs.len()).expect("fits the target type")
    }

    fn kommune_of(&self, agreement: u64) -> Kommune {
        let index = usize::try_from(agreement % 98).expect("fits the target type");
        self.kommuner[index]
    }

    /// The reference of agreement `index`: `BA` + kommunekode + 9 digits (15 chars).
    pub(crate) fn agreement_ref(&self, index: u64) -> AgreementRef {
        let kommune = self.kommune_of(index);
        AgreementRef::parse(&format!("BA{}{index:09}", kommune.code()))
            .expect("benchmark agreement reference is valid")
    }

    /// The registrations of every agreement, in batches of `batch`.
    pub(crate) fn agreement_batches(&self, batch: usize) -> Vec<Vec<Command>> {
        let all: Vec<Command> = (0..self.agreement_count())
            .map(|index| {
                Command::RegisterAgreement(Agreement {
                    agreement: self.agreement_ref(index),
                    kommune: self.kommune_of(index),
                    cpr: self.cpr(index).into(),
                    valid_from: date(2025, 1, 1),
                    valid_to: None,
                })
            })
            .collect();
        all.chunks(batch.max(1)).map(<[Command]>::to_vec).collect()
    }

    fn cpr(&self, agreement: u64) -> Cpr {
        self.cprs[usize::try_from(agreement).expect("fits the target type")]
    }

    /// The next batch of at most `batch` entries; empty when all were made.
    pub(crate) fn next_batch(&mut self, batch: usize) -> Vec<Command> {
        let mut commands = Vec::with_capacity(batch);
        while commands.len() < batch && self.entries_made < self.entries_total {
            let command = if self.rng.chance(CORRECTION_PERCENT) && !self.correctable.is_empty() {
                self.correction()
            } else {
                let agreement = loop {
                    let agreement = self.rng.below(self.agreement_count());
                    if agreement % 98 >= self.first_kommune {
                        break agreement;
                    }
                };
                self.withholding(agreement, "KY")
            };
            commands.push(command);
            self.entries_made += 1;
        }
        commands
    }

    /// `count` withholdings for the agreements of one kommune (by its index in code
    /// order), with references of their own: one file of exactly `count` records.
    pub(crate) fn kommune_batch(&mut self, kommune_index: u64, count: u64) -> Vec<Command> {
        let of_kommune = (self.agreement_count() - kommune_index).div_ceil(98);
        (0..count)
            .map(|_| {
                let agreement = kommune_index + 98 * self.rng.below(of_kommune);
                self.entries_made += 1;
                self.withholding(agreement, "KX")
            })
            .collect()
    }

    fn withholding(&mut self, agreement: u64, prefix: &str) -> Command {
        let kommune = self.kommune_of(agreement);
        let number = self.entries_made;
        // `KY-0751-000000123456`: 20 characters, unique within the kommune.
        let reference = KyRef::parse(&format!("{prefix}-{}-{number:012}", kommune.code()))
            .expect("benchmark reference is valid");
        let (payout_date, period_from, period_to) = if self.rng.chance(80) {
            (date(2026, 10, 1), date(2026, 9, 1), date(2026, 9, 30))
        } else {
            (date(2026, 10, 15), date(2026, 10, 1), date(2026, 10, 14))
        };
        // 300.00 to 2,499.99 kroner, as monthly child-support withholdings go.
        let amount_ore =
            30_000 + i64::try_from(self.rng.below(220_000)).expect("fits the target type");
        if self.correctable.len() == CORRECTABLE_MAX {
            self.correctable.pop_front();
        }
        self.correctable.push_back(Correctable {
            kommune,
            reference: reference.clone(),
            amount_ore,
        });
        Command::RecordWithholding(Withholding {
            reference,
            agreement: self.agreement_ref(agreement),
            kommune,
            cpr: self.cpr(agreement).into(),
            payout_date,
            period_from,
            period_to,
            amount: Amount::from_ore(amount_ore).expect("benchmark amount fits"),
        })
    }

    /// A reduction, reversal or increase of a random correctable withholding.
    fn correction(&mut self) -> Command {
        let length = u64::try_from(self.correctable.len()).expect("fits the target type");
        let index = usize::try_from(self.rng.below(length)).expect("fits the target type");
        let target = self
            .correctable
            .swap_remove_back(index)
            .expect("index is below the length");
        let (amount_ore, reason) = match self.rng.below(10) {
            0..=5 => (-(target.amount_ore / 4), "genberegnet"),
            6..=7 => (-target.amount_ore, "tilbageført"),
            _ => (
                5_000 + i64::try_from(self.rng.below(20_000)).expect("fits the target type"),
                "efterregulering",
            ),
        };
        let number = self.entries_made;
        Command::CorrectWithholding(Correction {
            reference: KyRef::parse(&format!("KO-{}-{number:012}", target.kommune.code()))
                .expect("benchmark reference is valid"),
            corrects: target.reference,
            kommune: target.kommune,
            amount: Amount::from_ore(amount_ore).expect("benchmark amount fits"),
            reason: reason.to_string(),
        })
    }
}

/// Numbers the commands as input lines, the way `Ledger::ingest` takes them.
pub(crate) fn numbered(commands: Vec<Command>) -> Vec<(usize, Command)> {
    commands
        .into_iter()
        .enumerate()
        .map(|(index, command)| (index + 1, command))
        .collect()
}
