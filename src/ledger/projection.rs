//! Projections: applying one event to the derived tables, and reading totals as of
//! any position.
//!
//! [`Projector::apply`] is the only code that writes projection tables. The live
//! ledger calls it inside the append transaction; `verify` calls it on an empty
//! database to replay the log, so both paths are one.

use std::collections::{BTreeMap, HashMap};

use chrono::{Datelike, NaiveDate};
use serde::Serialize;

use super::sql::{self, args, Addition, Db, Row, Source};
use super::LedgerError;

use crate::domain::{
    Agreement, AgreementEnd, BusinessReceiptReceived, Correction, EntryKind, Event, FileExported,
    FileReissued, FileUploaded, Kommune, Withholding,
};

fn days(date: NaiveDate) -> i64 {
    i64::from(date.num_days_from_ce())
}

pub(super) fn date_from_days(days: i64) -> Option<NaiveDate> {
    i32::try_from(days)
        .ok()
        .and_then(NaiveDate::from_num_days_from_ce_opt)
}

const ENTRIES: Source = Source { table: "entries" };
const TOTALS: Source = Source { table: "totals" };
const AGREEMENTS: Source = Source {
    table: "agreements",
};

/// Applies events to the projection tables of one connection.
///
/// It remembers nothing about the data between events: every projection row is a
/// function of the log's events and their positions, so a replay in any grouping
/// of transactions writes the same rows.
pub(crate) struct Projector<'c> {
    conn: &'c Db,
    block: u64,
}

impl<'c> Projector<'c> {
    /// A projector writing through `conn`, for a ledger whose totals blocks are
    /// `block` positions long.
    pub(super) fn new(conn: &'c Db, block: u64) -> Projector<'c> {
        Projector {
            conn,
            block: block.max(1),
        }
    }

    /// Applies one event at `position` to the projection tables. The first event of
    /// a block first completes the block before it (see [`close_block`]).
    pub(super) fn apply(&mut self, position: u64, event: &Event) -> Result<(), LedgerError> {
        self.apply_knowing(position, event, None)
    }

    /// [`Projector::apply`], told the agreement of the withholding a correction
    /// corrects when the caller knows it (the write path's memo does), which saves
    /// reading it back.
    pub(super) fn apply_knowing(
        &mut self,
        position: u64,
        event: &Event,
        corrected_agreement: Option<&str>,
    ) -> Result<(), LedgerError> {
        let conn = self.conn;
        if position > 0 && position.is_multiple_of(self.block) {
            close_block(conn, self.block, position / self.block - 1)?;
        }
        let position = sql::position(position)?;
        match event {
            Event::AgreementRegistered(agreement) => apply_agreement(conn, position, agreement),
            Event::AgreementEnded(end) => apply_end(conn, end),
            Event::WithholdingRecorded(withholding) => {
                apply_withholding(conn, position, withholding)
            }
            Event::WithholdingCorrected(correction) => {
                apply_correction(conn, position, correction, corrected_agreement)
            }
            Event::FileExported(file) => apply_file(conn, position, file),
            Event::FileReissued(reissue) => {
                apply_delivery(conn, position, &DeliveryStep::reissued(reissue))
            }
            Event::FileUploaded(upload) => {
                apply_delivery(conn, position, &DeliveryStep::uploaded(upload))
            }
            Event::ReceiptReceived(r) => {
                let detail = error_detail(&r.errors);
                let step = DeliveryStep::receipt(
                    (r.kommune, r.sequence),
                    &r.senders_file_id,
                    detail,
                    r.accepted,
                );
                apply_delivery(conn, position, &step)
            }
            Event::TechnicalReceiptReceived(r) => {
                let detail = error_detail(&r.errors);
                let step = DeliveryStep::receipt(
                    (r.kommune, r.sequence),
                    &r.senders_file_id,
                    detail,
                    r.accepted,
                );
                apply_delivery(conn, position, &step)
            }
            Event::BusinessReceiptReceived(receipt) => {
                apply_delivery(conn, position, &DeliveryStep::business(receipt))
            }
            // Erasure destroys keys, never projections: totals and the files
            // register stay as they were.
            Event::RetentionApplied(_) | Event::LedgerSealed(_) | Event::LossAccepted(_) => Ok(()),
        }
    }
}

/// What a business receipt said, and who said it.
fn business_detail(receipt: &BusinessReceiptReceived) -> String {
    let by = format!("{} by {}", receipt.acceptance.as_str(), receipt.recipient);
    match &receipt.reason {
        Some(reason) => format!("{by}: {reason}"),
        None => by,
    }
}

/// One row of the `deliveries` table: a step in an official file's delivery.
struct DeliveryStep<'e> {
    kommune: Kommune,
    sequence: u32,
    /// `reissued`, `uploaded`, `receipt` or `business`.
    kind: &'static str,
    senders_file_id: &'e [u8; 16],
    detail: String,
    /// What a receipt said; `None` for the steps that are not receipts.
    accepted: Option<bool>,
}

impl<'e> DeliveryStep<'e> {
    fn reissued(reissue: &'e FileReissued) -> DeliveryStep<'e> {
        DeliveryStep {
            kommune: reissue.kommune,
            sequence: reissue.sequence,
            kind: "reissued",
            senders_file_id: &reissue.delivery_id,
            detail: String::new(),
            accepted: None,
        }
    }

    fn uploaded(upload: &'e FileUploaded) -> DeliveryStep<'e> {
        DeliveryStep {
            kommune: upload.kommune,
            sequence: upload.sequence,
            kind: "uploaded",
            senders_file_id: &upload.senders_file_id,
            detail: format!(
                "{} ({} bytes, attempt {})",
                upload.remote_path, upload.size_bytes, upload.attempt
            ),
            accepted: None,
        }
    }

    /// A technical receipt's step, old event or new, given its errors as detail
    /// and what it said.
    fn receipt(
        (kommune, sequence): (Kommune, u32),
        senders_file_id: &'e [u8; 16],
        detail: String,
        accepted: bool,
    ) -> DeliveryStep<'e> {
        DeliveryStep {
            kommune,
            sequence,
            kind: "receipt",
            senders_file_id,
            detail,
            accepted: Some(accepted),
        }
    }

    fn business(receipt: &'e BusinessReceiptReceived) -> DeliveryStep<'e> {
        DeliveryStep {
            kommune: receipt.kommune,
            sequence: receipt.sequence,
            kind: "business",
            senders_file_id: &receipt.senders_file_id,
            detail: business_detail(receipt),
            accepted: Some(receipt.acceptance == crate::domain::FileAcceptance::Accepted),
        }
    }
}

fn apply_agreement(
    conn: &Db,
    position: sql::Value<'_>,
    agreement: &Agreement,
) -> Result<(), LedgerError> {
    conn.insert_later(
        "INSERT INTO agreements (agreement, position, kommune, valid_from, valid_to, ended)
         VALUES (?1, ?2, ?3, ?4, ?5, NULL)",
        &[
            agreement.agreement.as_str().into(),
            position,
            agreement.kommune.number().into(),
            days(agreement.valid_from).into(),
            agreement.valid_to.map(days).into(),
        ],
    )?;
    Ok(())
}

fn apply_end(conn: &Db, end: &AgreementEnd) -> Result<(), LedgerError> {
    conn.execute(
        "UPDATE agreements SET ended = ?2 WHERE agreement = ?1",
        &args![end.agreement.as_str(), days(end.valid_to)],
    )?;
    Ok(())
}

fn apply_withholding(
    conn: &Db,
    position: sql::Value<'_>,
    w: &Withholding,
) -> Result<(), LedgerError> {
    conn.insert_later(
        "INSERT INTO entries (kommune, position, reference, kind, agreement, corrects, amount_ore, net_ore, payout)
         VALUES (?1, ?2, ?3, ?4, ?5, NULL, ?6, ?6, ?7)",
        &[
            w.kommune.number().into(),
            position,
            w.reference.as_str().into(),
            EntryKind::Withholding.into(),
            w.agreement.as_str().into(),
            w.amount.ore().into(),
            days(w.payout_date).into(),
        ],
    )?;
    Ok(())
}

fn apply_correction(
    conn: &Db,
    position: sql::Value<'_>,
    c: &Correction,
    known_agreement: Option<&str>,
) -> Result<(), LedgerError> {
    let read_back = match known_agreement {
        Some(agreement) => Some(agreement.to_string()),
        None => conn.query_opt(
            "SELECT agreement FROM entries WHERE kommune = ?1 AND reference = ?2",
            &args![c.kommune.number(), c.corrects.as_str()],
            |row| Ok(row.text(ENTRIES, 0)?.to_string()),
        )?,
    };
    let agreement = read_back.ok_or_else(|| LedgerError::CorruptLedger {
        position: None,
        what: format!(
            "the correction {} of kommune {} corrects {}, which the entries table does not hold",
            c.reference, c.kommune, c.corrects
        ),
    })?;
    conn.insert_later(
        "INSERT INTO entries (kommune, position, reference, kind, agreement, corrects, amount_ore, net_ore, payout)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, NULL)",
        &[
            c.kommune.number().into(),
            position,
            c.reference.as_str().into(),
            EntryKind::Correction.into(),
            (&agreement).into(),
            c.corrects.as_str().into(),
            c.amount.ore().into(),
        ],
    )?;
    conn.add_later(
        &ADD_TO_NET,
        i64::from(c.kommune.number()),
        c.corrects.as_str(),
        c.amount.ore(),
    )
}

/// A correction's change to the net of the withholding it corrects.
static ADD_TO_NET: Addition = Addition {
    one: "UPDATE entries SET net_ore = net_ore + ?3 WHERE kommune = ?1 AND reference = ?2",
    many: "UPDATE entries SET net_ore = entries.net_ore + d.delta
           FROM unnest($1::bigint[], $2::text[], $3::bigint[]) AS d (kommune, reference, delta)
           WHERE entries.kommune = d.kommune AND entries.reference = d.reference",
};

/// An agreement's totals row of the last block before block ?2 (its totals at the
/// end of that block).
const AGREEMENT_TOTALS_BEFORE: &str =
    "SELECT withheld_ore, corrected_ore, entries, last_payout FROM agreement_totals
     WHERE agreement = ?1 AND block < ?2 ORDER BY block DESC LIMIT 1";

/// A kommune's totals row of the last block before block ?2.
const KOMMUNE_TOTALS_BEFORE: &str =
    "SELECT withheld_ore, corrected_ore, entries, last_payout FROM kommune_totals
     WHERE kommune = ?1 AND block < ?2 ORDER BY block DESC LIMIT 1";

/// A kommune's entries at positions ?2..=?3 with their agreement, as changes to
/// totals (columns from 1 as [`entry_change`] reads them).
const KOMMUNE_ENTRIES_BETWEEN: &str =
    "SELECT agreement, position, kind, amount_ore, payout FROM entries
     WHERE kommune = ?1 AND position BETWEEN ?2 AND ?3";

/// A kommune's entries at positions ?2..=?3 added up as a totals row, by the
/// database (one row comes back, not one per entry), with ?4 the withholding's
/// and ?5 the correction's stored kind. An overflowing sum is an error on both
/// backends, never a wrapped number. The fifth column is the least kind that is
/// neither (NULL when there is none), so a damaged row is an error rather than
/// counted as a correction.
const KOMMUNE_SUMS_BETWEEN: &str = "SELECT
         CAST(coalesce(sum(CASE WHEN kind = ?4 THEN amount_ore ELSE 0 END), 0) AS bigint),
         CAST(coalesce(sum(CASE WHEN kind = ?5 THEN amount_ore ELSE 0 END), 0) AS bigint),
         count(*),
         max(payout),
         min(CASE WHEN kind = ?4 OR kind = ?5 THEN NULL ELSE kind END)
     FROM entries WHERE kommune = ?1 AND position BETWEEN ?2 AND ?3";

/// The positions a totals block spans, both inclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct BlockBounds {
    first: u64,
    last: u64,
}

/// The first and last position of block `block`.
fn block_bounds(block_size: u64, block: u64) -> BlockBounds {
    let first = block.saturating_mul(block_size);
    BlockBounds {
        first,
        last: first.saturating_add(block_size - 1),
    }
}

/// Whose totals a sum belongs to, for [`LedgerError::TotalsOverflow`].
#[derive(Clone, Copy, Debug)]
enum Whose<'a> {
    Agreement(&'a str),
    Kommune(Kommune),
}

impl std::fmt::Display for Whose<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Whose::Agreement(agreement) => write!(f, "agreement {agreement}"),
            Whose::Kommune(kommune) => write!(f, "kommune {kommune}"),
        }
    }
}

/// One agreement's change to its totals over a block, and its kommune.
struct AgreementChange {
    kommune: Kommune,
    change: RawTotals,
}

/// Writes the totals rows of block `block`, now complete: for every agreement and
/// every kommune with entries in it, the last row before it plus those entries.
/// The rows go in in key order, so each index page is written once per block.
fn close_block(conn: &Db, block_size: u64, block: u64) -> Result<(), LedgerError> {
    let changes = block_changes(conn, block_bounds(block_size, block))?;
    let befores = agreement_totals_before(conn, changes.agreements.keys(), block)?;
    let block = sql::position(block)?;
    for (agreement, AgreementChange { kommune, change }) in &changes.agreements {
        let before = befores.get(agreement).copied().unwrap_or_default();
        let next = before.plus(change, Whose::Agreement(agreement))?;
        conn.insert_later(
            "INSERT INTO agreement_totals (agreement, block, kommune, withheld_ore, corrected_ore, entries, last_payout)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            &[
                agreement.into(),
                block,
                kommune.number().into(),
                next.withheld_ore.into(),
                next.corrected_ore.into(),
                next.entries.into(),
                next.last_payout.into(),
            ],
        )?;
    }
    for (kommune, change) in &changes.kommuner {
        let before = conn
            .query_opt(
                KOMMUNE_TOTALS_BEFORE,
                &[kommune.number().into(), block],
                raw_totals,
            )?
            .unwrap_or_default();
        let next = before.plus(change, Whose::Kommune(*kommune))?;
        conn.insert_later(
            "INSERT INTO kommune_totals (kommune, block, withheld_ore, corrected_ore, entries, last_payout)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            &[
                kommune.number().into(),
                block,
                next.withheld_ore.into(),
                next.corrected_ore.into(),
                next.entries.into(),
                next.last_payout.into(),
            ],
        )?;
    }
    Ok(())
}

/// What the entries of one block change: per agreement and per kommune, in key order.
struct BlockChanges {
    agreements: BTreeMap<String, AgreementChange>,
    kommuner: BTreeMap<Kommune, RawTotals>,
}

/// Adds up the entries at positions `bounds` per agreement and per kommune.
fn block_changes(conn: &Db, bounds: BlockBounds) -> Result<BlockChanges, LedgerError> {
    let (first, last) = (sql::position(bounds.first)?, sql::position(bounds.last)?);
    let mut agreements: BTreeMap<String, AgreementChange> = BTreeMap::new();
    let mut kommuner: BTreeMap<Kommune, RawTotals> = BTreeMap::new();
    for kommune in Kommune::all() {
        conn.query_each(
            KOMMUNE_ENTRIES_BETWEEN,
            &[kommune.number().into(), first, last],
            |row| {
                let entry = entry_change(row, 1)?;
                let agreement = row.text(ENTRIES, 0)?;
                agreements
                    .entry(agreement.to_string())
                    .or_insert(AgreementChange {
                        kommune,
                        change: RawTotals::default(),
                    })
                    .change
                    .add(&entry, Whose::Agreement(agreement))?;
                kommuner
                    .entry(kommune)
                    .or_default()
                    .add(&entry, Whose::Kommune(kommune))
            },
        )?;
    }
    Ok(BlockChanges {
        agreements,
        kommuner,
    })
}

/// The totals rows of the last block before `block` of each of `agreements` that
/// has one. SQLite looks each up in its index; PostgreSQL asks once per chunk of
/// agreements (a block's end lists tens of thousands of them).
fn agreement_totals_before<'a>(
    conn: &Db,
    agreements: impl Iterator<Item = &'a String>,
    block: u64,
) -> Result<HashMap<String, RawTotals>, LedgerError> {
    let mut befores = HashMap::new();
    let block_value = sql::position(block)?;
    match conn {
        Db::Sqlite(_) => {
            for agreement in agreements {
                if let Some(before) = conn.query_opt(
                    AGREEMENT_TOTALS_BEFORE,
                    &[agreement.into(), block_value],
                    raw_totals,
                )? {
                    befores.insert(agreement.clone(), before);
                }
            }
        }
        Db::Postgres(session) => {
            let agreements: Vec<&str> = agreements.map(String::as_str).collect();
            for chunk in agreements.chunks(10_000) {
                super::postgres::agreement_totals_before(session, chunk, block, &mut |row| {
                    let agreement = row.text(TOTALS, 0)?.to_string();
                    let totals = RawTotals {
                        withheld_ore: row.int(TOTALS, 1)?,
                        corrected_ore: row.int(TOTALS, 2)?,
                        entries: row.int(TOTALS, 3)?,
                        last_payout: row.opt_int(TOTALS, 4)?,
                    };
                    befores.insert(agreement, totals);
                    Ok(())
                })?;
            }
        }
    }
    Ok(befores)
}

/// One entry's effect on totals.
struct EntryChange {
    kind: EntryKind,
    amount_ore: i64,
    /// Payout date in days since the common era; `None` for a correction.
    payout: Option<i64>,
}

/// Reads (position, kind, amount_ore, payout) from `row`, starting at column
/// `from`; the position only names the row if its kind is damaged.
fn entry_change(row: &Row<'_>, from: usize) -> Result<EntryChange, LedgerError> {
    let position = row.unsigned(ENTRIES, from)?;
    Ok(EntryChange {
        kind: row.entry_kind(ENTRIES, from + 1, || format!("at position {position}"))?,
        amount_ore: row.int(ENTRIES, from + 2)?,
        payout: row.opt_int(ENTRIES, from + 3)?,
    })
}

/// Totals as stored in a totals row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct RawTotals {
    /// Sum of withholdings, øre.
    withheld_ore: i64,
    /// Sum of corrections (signed), øre.
    corrected_ore: i64,
    /// Number of withholdings and corrections.
    entries: i64,
    /// The latest payout date, in days since the common era.
    last_payout: Option<i64>,
}

impl RawTotals {
    /// Adds one entry: a withholding to the withheld sum, a correction (signed) to
    /// the corrected sum. A sum that would overflow is an error naming `whose`,
    /// and leaves these totals as they were.
    fn add(&mut self, entry: &EntryChange, whose: Whose<'_>) -> Result<(), LedgerError> {
        let mut next = *self;
        match entry.kind {
            EntryKind::Withholding => {
                next.withheld_ore =
                    checked_sum(whose, "withheld sum", self.withheld_ore, entry.amount_ore)?;
            }
            EntryKind::Correction => {
                next.corrected_ore =
                    checked_sum(whose, "corrected sum", self.corrected_ore, entry.amount_ore)?;
            }
        }
        next.entries = checked_sum(whose, "entry count", self.entries, 1)?;
        next.last_payout = latest(self.last_payout, entry.payout);
        *self = next;
        Ok(())
    }

    /// These totals followed by `later`, or an error naming `whose` if a sum
    /// overflows.
    fn plus(&self, later: &RawTotals, whose: Whose<'_>) -> Result<RawTotals, LedgerError> {
        Ok(RawTotals {
            withheld_ore: checked_sum(
                whose,
                "withheld sum",
                self.withheld_ore,
                later.withheld_ore,
            )?,
            corrected_ore: checked_sum(
                whose,
                "corrected sum",
                self.corrected_ore,
                later.corrected_ore,
            )?,
            entries: checked_sum(whose, "entry count", self.entries, later.entries)?,
            last_payout: latest(self.last_payout, later.last_payout),
        })
    }

    /// Withheld plus corrected, or an error naming `whose` if it overflows.
    fn net_ore(&self, whose: Whose<'_>) -> Result<i64, LedgerError> {
        checked_sum(whose, "net sum", self.withheld_ore, self.corrected_ore)
    }
}

/// `a + b`, or [`LedgerError::TotalsOverflow`] naming `whose` `what` overflowed.
fn checked_sum(whose: Whose<'_>, what: &'static str, a: i64, b: i64) -> Result<i64, LedgerError> {
    a.checked_add(b).ok_or_else(|| LedgerError::TotalsOverflow {
        whose: whose.to_string(),
        what,
        sum: i128::from(a) + i128::from(b),
    })
}

/// `a - b`, or [`LedgerError::TotalsOverflow`] naming `whose` `what` overflowed.
fn checked_difference(
    whose: Whose<'_>,
    what: &'static str,
    a: i64,
    b: i64,
) -> Result<i64, LedgerError> {
    a.checked_sub(b).ok_or_else(|| LedgerError::TotalsOverflow {
        whose: whose.to_string(),
        what,
        sum: i128::from(a) - i128::from(b),
    })
}

fn latest(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

fn raw_totals(row: &Row<'_>) -> Result<RawTotals, LedgerError> {
    Ok(RawTotals {
        withheld_ore: row.int(TOTALS, 0)?,
        corrected_ore: row.int(TOTALS, 1)?,
        entries: row.int(TOTALS, 2)?,
        last_payout: row.opt_int(TOTALS, 3)?,
    })
}

/// A row of [`KOMMUNE_SUMS_BETWEEN`]: the totals, after checking that no entry
/// summed had a kind other than the two (its fifth column).
fn summed_totals(row: &Row<'_>, kommune: Kommune) -> Result<RawTotals, LedgerError> {
    if let Some(found) = row.opt_int(ENTRIES, 4)? {
        sql::entry_kind(found, || format!("among kommune {kommune}'s entries"))?;
    }
    raw_totals(row)
}

fn apply_file(conn: &Db, position: sql::Value<'_>, file: &FileExported) -> Result<(), LedgerError> {
    conn.execute(
        "INSERT INTO files (kommune, sequence, position, file_id, file_name, created_at_us,
            previous_cutoff_position, cutoff_position, test_marker, record_count, plus_ore, minus_ore, sha256)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        &[
            file.kommune.number().into(),
            file.sequence.into(),
            position,
            (&file.file_id).into(),
            (&file.file_name).into(),
            file.created_at_us.into(),
            sql::position(file.previous_cutoff_position)?,
            sql::position(file.cutoff_position)?,
            file.test_marker.into(),
            sql::position(file.record_count)?,
            file.plus_ore.into(),
            file.minus_ore.into(),
            (&file.sha256).into(),
        ],
    )?;
    Ok(())
}

fn apply_delivery(
    conn: &Db,
    position: sql::Value<'_>,
    step: &DeliveryStep<'_>,
) -> Result<(), LedgerError> {
    conn.execute(
        "INSERT INTO deliveries (position, kommune, sequence, kind, senders_file_id, detail, accepted)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        &[
            position,
            step.kommune.number().into(),
            step.sequence.into(),
            step.kind.into(),
            step.senders_file_id.into(),
            step.detail.as_str().into(),
            step.accepted.into(),
        ],
    )?;
    Ok(())
}

/// Totals of one agreement or one kommune at some position.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Sum of withholdings, øre.
    pub withheld_ore: i64,
    /// Sum of corrections (signed), øre.
    pub corrected_ore: i64,
    /// `withheld_ore + corrected_ore`.
    pub net_ore: i64,
    /// Number of withholdings and corrections.
    pub entries: u64,
    pub last_payout_date: Option<NaiveDate>,
}

impl Totals {
    fn from_raw(raw: RawTotals, whose: Whose<'_>) -> Result<Totals, LedgerError> {
        let damaged = |what: String| LedgerError::CorruptLedger {
            position: None,
            what: format!("the totals of {whose}: {what}"),
        };
        let last_payout_date = match raw.last_payout {
            None => None,
            Some(days) => Some(
                date_from_days(days)
                    .ok_or_else(|| damaged(format!("{days} is not a payout date")))?,
            ),
        };
        Ok(Totals {
            withheld_ore: raw.withheld_ore,
            corrected_ore: raw.corrected_ore,
            net_ore: raw.net_ore(whose)?,
            entries: u64::try_from(raw.entries)
                .map_err(|_| damaged(format!("{} entries", raw.entries)))?,
            last_payout_date,
        })
    }
}

/// Where a total as of `position` comes from: the last totals row of a block
/// before `block`, and the entries at positions `first..=position`.
struct AsOfBlock {
    block: sql::Value<'static>,
    first: sql::Value<'static>,
    position: sql::Value<'static>,
}

impl AsOfBlock {
    fn new(block_size: u64, position: u64) -> Result<AsOfBlock, LedgerError> {
        let block = position / block_size.max(1);
        Ok(AsOfBlock {
            block: sql::position(block)?,
            first: sql::position(block_bounds(block_size.max(1), block).first)?,
            position: sql::position(position)?,
        })
    }
}

/// The kommune of an agreement registered at or before `position`, if any.
pub(crate) fn agreement_kommune(
    conn: &Db,
    agreement: &str,
    position: u64,
) -> Result<Option<u16>, LedgerError> {
    conn.query_opt(
        "SELECT kommune FROM agreements WHERE agreement = ?1 AND position <= ?2",
        &[agreement.into(), sql::position(position)?],
        |row| row.narrow(AGREEMENTS, 0),
    )
}

/// One agreement's totals as of `position` (`None` if it had no entries by then).
pub(crate) fn agreement_totals(
    conn: &Db,
    block_size: u64,
    agreement: &str,
    position: u64,
) -> Result<Option<Totals>, LedgerError> {
    let kommune: Option<u16> = conn.query_opt(
        "SELECT kommune FROM agreements WHERE agreement = ?1",
        &args![agreement],
        |row| row.narrow(AGREEMENTS, 0),
    )?;
    let Some(kommune) = kommune else {
        return Ok(None);
    };
    let at = AsOfBlock::new(block_size, position)?;
    let mut totals = conn
        .query_opt(
            AGREEMENT_TOTALS_BEFORE,
            &[agreement.into(), at.block],
            raw_totals,
        )?
        .unwrap_or_default();
    let whose = Whose::Agreement(agreement);
    conn.query_each(
        "SELECT position, kind, amount_ore, payout FROM entries
         WHERE kommune = ?1 AND position BETWEEN ?2 AND ?3 AND agreement = ?4",
        &[kommune.into(), at.first, at.position, agreement.into()],
        |row| totals.add(&entry_change(row, 0)?, whose),
    )?;
    if totals.entries == 0 {
        return Ok(None);
    }
    Totals::from_raw(totals, whose).map(Some)
}

/// One kommune's totals at positions `1..=position`: its totals row of the last
/// block before `position`'s plus its entries since.
fn kommune_raw_through(
    conn: &Db,
    block_size: u64,
    kommune: Kommune,
    position: u64,
) -> Result<RawTotals, LedgerError> {
    let at = AsOfBlock::new(block_size, position)?;
    let totals = conn
        .query_opt(
            KOMMUNE_TOTALS_BEFORE,
            &[kommune.number().into(), at.block],
            raw_totals,
        )?
        .unwrap_or_default();
    let in_block = conn.query_one(
        KOMMUNE_SUMS_BETWEEN,
        &[
            kommune.number().into(),
            at.first,
            at.position,
            EntryKind::Withholding.into(),
            EntryKind::Correction.into(),
        ],
        |row| summed_totals(row, kommune),
    )?;
    totals.plus(&in_block, Whose::Kommune(kommune))
}

/// What one kommune's entries at positions `after + 1..=through` add up to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RangeTotals {
    pub entries: u64,
    /// Withholdings plus corrections (signed), øre.
    pub net_ore: i64,
}

/// One kommune's entries at positions `after + 1..=through`, read from the totals
/// rather than by a pass over them: a file's record count and net sum before it
/// is rendered cost two block lookups.
pub(crate) fn kommune_range_totals(
    conn: &Db,
    block_size: u64,
    kommune: Kommune,
    after: u64,
    through: u64,
) -> Result<RangeTotals, LedgerError> {
    if through <= after {
        return Ok(RangeTotals::default());
    }
    let whose = Whose::Kommune(kommune);
    let later = kommune_raw_through(conn, block_size, kommune, through)?;
    let earlier = kommune_raw_through(conn, block_size, kommune, after)?;
    let entries = checked_difference(whose, "entry count", later.entries, earlier.entries)?;
    Ok(RangeTotals {
        entries: u64::try_from(entries).map_err(|_| LedgerError::CorruptLedger {
            position: Some(through),
            what: format!(
                "kommune {kommune} has {entries} entries in positions {}..={through}",
                after + 1
            ),
        })?,
        net_ore: checked_difference(
            whose,
            "net sum",
            later.net_ore(whose)?,
            earlier.net_ore(whose)?,
        )?,
    })
}

/// Every kommune's totals as of `position`, in code order; kommuner without
/// entries by then are left out.
pub(crate) fn kommune_totals(
    conn: &Db,
    block_size: u64,
    position: u64,
) -> Result<Vec<(Kommune, Totals)>, LedgerError> {
    let mut result = Vec::new();
    for kommune in Kommune::all() {
        let totals = kommune_raw_through(conn, block_size, kommune, position)?;
        if totals.entries > 0 {
            result.push((kommune, Totals::from_raw(totals, Whose::Kommune(kommune))?));
        }
    }
    Ok(result)
}

/// Every agreement of one kommune with its totals as of `position`, by reference;
/// agreements without entries by then are left out.
pub(crate) fn agreements_of_kommune(
    conn: &Db,
    block_size: u64,
    kommune: Kommune,
    position: u64,
) -> Result<Vec<(String, Totals)>, LedgerError> {
    let at = AsOfBlock::new(block_size, position)?;
    let mut in_block: HashMap<String, RawTotals> = HashMap::new();
    conn.query_each(
        KOMMUNE_ENTRIES_BETWEEN,
        &[kommune.number().into(), at.first, at.position],
        |row| {
            let agreement = row.text(ENTRIES, 0)?;
            in_block
                .entry(agreement.to_string())
                .or_default()
                .add(&entry_change(row, 1)?, Whose::Agreement(agreement))
        },
    )?;
    let mut agreements = conn.query_vec(
        "SELECT agreement FROM agreements WHERE kommune = ?1",
        &args![kommune.number()],
        |row| Ok(row.text(AGREEMENTS, 0)?.to_string()),
    )?;
    // In byte order, as SQLite sorts text; `ORDER BY` on PostgreSQL follows the
    // database's collation (`ba0` before `BA1` in a Danish one).
    agreements.sort_unstable();
    let mut result = Vec::new();
    for agreement in agreements {
        let totals = conn
            .query_opt(
                AGREEMENT_TOTALS_BEFORE,
                &[(&agreement).into(), at.block],
                raw_totals,
            )?
            .unwrap_or_default();
        let whose = Whose::Agreement(&agreement);
        let totals = match in_block.get(&agreement) {
            Some(change) => totals.plus(change, whose)?,
            None => totals,
        };
        if totals.entries > 0 {
            let totals = Totals::from_raw(totals, whose)?;
            result.push((agreement, totals));
        }
    }
    Ok(result)
}

/// A receipt's error messages as the `deliveries` row's detail: "CODE DESCRIPTION:
/// TEXT" (their `Display`), joined by "; " (empty for an accepted receipt).
fn error_detail(errors: &[impl std::fmt::Display]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn withholding(amount_ore: i64) -> EntryChange {
        EntryChange {
            kind: EntryKind::Withholding,
            amount_ore,
            payout: Some(739_000),
        }
    }

    fn overflow_of(error: LedgerError) -> (String, &'static str, i128) {
        match error {
            LedgerError::TotalsOverflow { whose, what, sum } => (whose, what, sum),
            other => panic!("expected TotalsOverflow, got {other:?}"),
        }
    }

    // Regression: `add` and `plus` used `+=` and `+` on i64, which wrap in a
    // release build, so a damaged totals row near i64::MAX read back as a large
    // negative total instead of an error.
    #[test]
    fn given_a_withheld_sum_near_the_limit_when_an_entry_is_added_then_it_is_an_error_naming_the_agreement(
    ) {
        let mut totals = RawTotals {
            withheld_ore: i64::MAX - 10,
            ..RawTotals::default()
        };
        let before = totals;
        let error = totals
            .add(&withholding(11), Whose::Agreement("BA-1"))
            .expect_err("the sum does not fit an i64");
        let (whose, what, sum) = overflow_of(error);
        assert_eq!(whose, "agreement BA-1");
        assert_eq!(what, "withheld sum");
        assert_eq!(sum, i128::from(i64::MAX) + 1);
        assert_eq!(
            totals, before,
            "a refused entry leaves the totals as they were"
        );
        totals
            .add(&withholding(10), Whose::Agreement("BA-1"))
            .expect("up to the limit it fits");
        assert_eq!(totals.withheld_ore, i64::MAX);
    }

    #[test]
    fn given_totals_whose_sum_overflows_when_added_then_it_is_an_error_naming_the_kommune() {
        let kommune = Kommune::parse("0101").expect("a kommune");
        let earlier = RawTotals {
            corrected_ore: i64::MIN + 5,
            entries: 1,
            ..RawTotals::default()
        };
        let later = RawTotals {
            corrected_ore: -6,
            entries: 1,
            ..RawTotals::default()
        };
        let error = earlier
            .plus(&later, Whose::Kommune(kommune))
            .expect_err("the corrected sum does not fit an i64");
        let (whose, what, sum) = overflow_of(error);
        assert_eq!((whose.as_str(), what), ("kommune 0101", "corrected sum"));
        assert_eq!(sum, i128::from(i64::MIN) - 1);
        let fits = RawTotals {
            corrected_ore: -5,
            ..later
        };
        let total = earlier.plus(&fits, Whose::Kommune(kommune)).expect("fits");
        assert_eq!((total.corrected_ore, total.entries), (i64::MIN, 2));
    }

    #[test]
    fn given_a_net_sum_that_overflows_when_totals_are_read_then_it_is_an_error() {
        let raw = RawTotals {
            withheld_ore: i64::MAX,
            corrected_ore: 1,
            entries: 2,
            last_payout: None,
        };
        let error = Totals::from_raw(raw, Whose::Agreement("BA-2"))
            .expect_err("the net does not fit an i64");
        assert_eq!(
            overflow_of(error),
            (
                "agreement BA-2".to_string(),
                "net sum",
                i128::from(i64::MAX) + 1
            )
        );
    }

    #[test]
    fn a_block_spans_its_first_to_its_last_position() {
        assert_eq!(
            block_bounds(100, 3),
            BlockBounds {
                first: 300,
                last: 399
            }
        );
    }
}
