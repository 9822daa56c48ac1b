//! The reconciliation report: one kommune's official files in a period, read from
//! the log alone (files, entries, uploads, receipts), with totals per payout month
//! and per month of the files' creation, each file's delivery history, the chain
//! head it was made at and the outcome of `verify`, as one self-contained HTML page
//! (no scripts, no network: inline CSS and an inline SVG chart) in Danish or
//! English (`words`). It never shows a CPR number: it reads none.

mod html;
mod words;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Datelike, NaiveDate, Utc};

pub use html::render_html;
pub use words::Lang;

use super::{Anchor, Verification};
use crate::domain::{Event, FileAcceptance, FileExported, Kommune};
use crate::ledger::{Ledger, LedgerError};

/// (year, month).
pub type Month = (i32, u32);

/// Where a file stands, from its delivery history (the last upload, technical
/// receipt or reissue decides; a business receipt does not change it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    Exported,
    Uploaded {
        attempt: u32,
    },
    Accepted,
    /// With the codes of the receipt's errors.
    Rejected {
        codes: Vec<String>,
    },
    Reissued,
}

/// One `ErrorMessage` of a rejecting technical receipt, as the platform wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiptLine {
    pub code: String,
    pub code_description: String,
    pub description: String,
}

/// What happened to a file on its way to UDK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepKind {
    Exported,
    Uploaded {
        attempt: u32,
        remote_path: String,
        size_bytes: u64,
    },
    TechnicalReceipt {
        accepted: bool,
        file_transfer_uuid: String,
        errors: Vec<ReceiptLine>,
    },
    /// Put back into the outbox; `Step::senders_file_id` is the new one.
    Reissued,
    BusinessReceipt {
        file_transfer_uuid: String,
        recipient: String,
        acceptance: FileAcceptance,
        reason: Option<String>,
    },
}

/// One event of a file's delivery history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub position: u64,
    /// When the log recorded it, µs since the Unix epoch UTC.
    pub recorded_at_us: i64,
    /// The delivery it belongs to.
    pub senders_file_id: [u8; 16],
    pub kind: StepKind,
}

/// One official file in the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportFile {
    /// Position of its `FileExported` event.
    pub position: u64,
    pub file: FileExported,
    /// Its `FileExported` event and every delivery event after it, in log order.
    pub history: Vec<Step>,
}

impl ReportFile {
    pub fn delivery(&self) -> Delivery {
        let mut delivery = Delivery::Exported;
        for step in &self.history {
            delivery = match &step.kind {
                StepKind::Exported => Delivery::Exported,
                StepKind::Uploaded { attempt, .. } => Delivery::Uploaded { attempt: *attempt },
                StepKind::TechnicalReceipt { accepted: true, .. } => Delivery::Accepted,
                StepKind::TechnicalReceipt { errors, .. } => Delivery::Rejected {
                    codes: errors.iter().map(|error| error.code.clone()).collect(),
                },
                StepKind::Reissued => Delivery::Reissued,
                StepKind::BusinessReceipt { .. } => continue,
            };
        }
        delivery
    }

    /// When the technical receipt that accepted the file was recorded, if the file
    /// stands accepted.
    pub fn accepted_at_us(&self) -> Option<i64> {
        if self.delivery() != Delivery::Accepted {
            return None;
        }
        self.history.iter().rev().find_map(|step| match step.kind {
            StepKind::TechnicalReceipt { accepted: true, .. } => Some(step.recorded_at_us),
            _ => None,
        })
    }
}

/// The totals of a group of files (a month's).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MonthTotals {
    /// Files with at least one entry in the group (per file month: files created).
    pub files: u64,
    pub records: u64,
    /// Sums in i128: no number of i64 sums overflows it.
    pub plus_ore: i128,
    pub minus_ore: i128,
}

impl MonthTotals {
    pub fn net_ore(&self) -> i128 {
        self.plus_ore - self.minus_ore
    }

    /// Counts one more file and adds its end record's sums.
    fn add_file(&mut self, file: &FileExported) {
        self.files += 1;
        self.records += file.record_count;
        self.plus_ore += i128::from(file.plus_ore);
        self.minus_ore += i128::from(file.minus_ore);
    }

    /// Adds one entry (a detail record), as the SF2520 writer sums it.
    fn add_entry(&mut self, ore: i64) {
        self.records += 1;
        if ore >= 0 {
            self.plus_ore += i128::from(ore);
        } else {
            self.minus_ore -= i128::from(ore);
        }
    }
}

/// Everything the page shows.
#[derive(Clone, Debug)]
pub struct Report {
    pub kommune: Kommune,
    /// Files created on these dates (UTC), inclusive; `None` is open.
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    pub files: Vec<ReportFile>,
    /// The files' entries by the payout month of their withholding (`None`: a
    /// correction whose withholding the log does not hold).
    pub payout_months: BTreeMap<Option<Month>, MonthTotals>,
    /// The files by the month they were created (UTC).
    pub file_months: BTreeMap<Month, MonthTotals>,
    /// The head the report was made at.
    pub head: Anchor,
    pub made_at: DateTime<Utc>,
    /// `verify`'s outcome at that head: every problem it found (none if it passed).
    pub verify_problems: Vec<String>,
    /// The outbox `verify` checked, if any.
    pub outbox_checked: Option<String>,
}

/// The creation date (UTC) of a file.
fn created_date(file: &FileExported) -> Option<NaiveDate> {
    DateTime::<Utc>::from_timestamp_micros(file.created_at_us).map(|time| time.date_naive())
}

/// An entry of the kommune: its position, its withholding's payout month and its
/// amount in øre.
struct Entry {
    position: u64,
    payout: Option<Month>,
    ore: i64,
}

/// What one walk of the log gathers about one kommune.
#[derive(Default)]
struct Walk {
    files: BTreeMap<u32, ReportFile>,
    /// Withholding reference -> payout month.
    payouts: HashMap<String, Month>,
    /// In log order.
    entries: Vec<Entry>,
}

/// Builds the report from one walk of the log up to `verification`'s head.
pub fn build(
    ledger: &Ledger,
    kommune: Kommune,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    verification: &Verification,
) -> Result<Report, LedgerError> {
    let head = ledger.head()?;
    let mut walk = Walk::default();
    ledger.for_each_event(1, head.position, |stored| {
        let at = (stored.position, stored.recorded_at_us);
        walk.apply(kommune, at, stored.event()?);
        Ok(())
    })?;
    let in_period = |file: &FileExported| {
        created_date(file).is_some_and(|date| {
            from.is_none_or(|from| date >= from) && to.is_none_or(|to| date <= to)
        })
    };
    let Walk { files, entries, .. } = walk;
    let files: Vec<ReportFile> = files
        .into_values()
        .filter(|file| in_period(&file.file))
        .collect();
    Ok(Report {
        kommune,
        from,
        to,
        payout_months: payout_months(&files, &entries),
        file_months: file_months(&files),
        files,
        head: Anchor::of(&head),
        made_at: Utc::now(),
        verify_problems: verification.problems(),
        outbox_checked: verification
            .outbox_checked
            .as_ref()
            .map(|dir| dir.display().to_string()),
    })
}

fn file_months(files: &[ReportFile]) -> BTreeMap<Month, MonthTotals> {
    let mut months: BTreeMap<Month, MonthTotals> = BTreeMap::new();
    for file in files {
        if let Some(date) = created_date(&file.file) {
            months
                .entry((date.year(), date.month()))
                .or_default()
                .add_file(&file.file);
        }
    }
    months
}

/// The entries of `files` (each file holds the kommune's entries at positions in
/// `(previous_cutoff_position, cutoff_position]`) by payout month.
fn payout_months(files: &[ReportFile], entries: &[Entry]) -> BTreeMap<Option<Month>, MonthTotals> {
    let mut months: BTreeMap<Option<Month>, MonthTotals> = BTreeMap::new();
    for file in files {
        let first = entries.partition_point(|e| e.position <= file.file.previous_cutoff_position);
        let end = entries.partition_point(|e| e.position <= file.file.cutoff_position);
        let mut touched = BTreeSet::new();
        for entry in entries.get(first..end).unwrap_or_default() {
            months.entry(entry.payout).or_default().add_entry(entry.ore);
            touched.insert(entry.payout);
        }
        for month in touched {
            months.entry(month).or_default().files += 1;
        }
    }
    months
}

impl Walk {
    /// Applies one event of the log, recorded at `(position, µs)`, to what is
    /// gathered about `kommune`. Exhaustive on purpose: a new event type must say
    /// whether it is an entry or part of a file's delivery.
    fn apply(&mut self, kommune: Kommune, (position, recorded_at_us): (u64, i64), event: Event) {
        match event {
            Event::AgreementRegistered(_)
            | Event::AgreementEnded(_)
            | Event::RetentionApplied(_)
            | Event::LedgerSealed(_)
            | Event::LossAccepted(_) => {}
            Event::WithholdingRecorded(w) if w.kommune == kommune => {
                let payout = (w.payout_date.year(), w.payout_date.month());
                self.payouts
                    .insert(w.reference.as_str().to_string(), payout);
                let ore = w.amount.ore();
                self.entries.push(Entry {
                    position,
                    payout: Some(payout),
                    ore,
                });
            }
            Event::WithholdingCorrected(c) if c.kommune == kommune => {
                let payout = self.payouts.get(c.corrects.as_str()).copied();
                let ore = c.amount.ore();
                self.entries.push(Entry {
                    position,
                    payout,
                    ore,
                });
            }
            Event::FileExported(file) if file.kommune == kommune => {
                let step = Step {
                    position,
                    recorded_at_us,
                    senders_file_id: file.file_id,
                    kind: StepKind::Exported,
                };
                let report_file = ReportFile {
                    position,
                    file,
                    history: vec![step],
                };
                self.files.insert(report_file.file.sequence, report_file);
            }
            // Another kommune's entries and files.
            Event::WithholdingRecorded(_)
            | Event::WithholdingCorrected(_)
            | Event::FileExported(_) => {}
            delivery @ (Event::FileReissued(_)
            | Event::FileUploaded(_)
            | Event::ReceiptReceived(_)
            | Event::TechnicalReceiptReceived(_)
            | Event::BusinessReceiptReceived(_)) => {
                let Some((sequence, senders_file_id, kind)) = delivery_step(kommune, delivery)
                else {
                    return;
                };
                if let Some(file) = self.files.get_mut(&sequence) {
                    file.history.push(Step {
                        position,
                        recorded_at_us,
                        senders_file_id,
                        kind,
                    });
                }
            }
        }
    }
}

/// A delivery event of `kommune` as (løbenummer, `SendersFileId`, step); `None`
/// for another kommune's or an event that is no delivery event.
fn delivery_step(kommune: Kommune, event: Event) -> Option<(u32, [u8; 16], StepKind)> {
    Some(match event {
        Event::FileReissued(f) if f.kommune == kommune => {
            (f.sequence, f.delivery_id, StepKind::Reissued)
        }
        Event::FileUploaded(u) if u.kommune == kommune => (
            u.sequence,
            u.senders_file_id,
            StepKind::Uploaded {
                attempt: u.attempt,
                remote_path: u.remote_path,
                size_bytes: u.size_bytes,
            },
        ),
        Event::ReceiptReceived(r) if r.kommune == kommune => {
            let errors = r
                .errors
                .into_iter()
                .map(|e| (e.code, e.code_description, e.description));
            let kind = technical(r.accepted, r.file_transfer_uuid, errors);
            (r.sequence, r.senders_file_id, kind)
        }
        Event::TechnicalReceiptReceived(r) if r.kommune == kommune => {
            let errors = r
                .errors
                .into_iter()
                .map(|e| (e.code.to_string(), e.code_description, e.description));
            let kind = technical(r.accepted, r.file_transfer_uuid, errors);
            (r.sequence, r.senders_file_id, kind)
        }
        Event::BusinessReceiptReceived(r) if r.kommune == kommune => (
            r.sequence,
            r.senders_file_id,
            StepKind::BusinessReceipt {
                file_transfer_uuid: r.file_transfer_uuid,
                recipient: r.recipient,
                acceptance: r.acceptance,
                reason: r.reason,
            },
        ),
        _ => return None,
    })
}

/// A technical receipt (of either recorded layout) as a step.
fn technical(
    accepted: bool,
    file_transfer_uuid: String,
    errors: impl Iterator<Item = (String, String, String)>,
) -> StepKind {
    StepKind::TechnicalReceipt {
        accepted,
        file_transfer_uuid,
        errors: errors
            .map(|(code, code_description, description)| ReceiptLine {
                code,
                code_description,
                description,
            })
            .collect(),
    }
}
