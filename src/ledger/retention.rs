//! Retention (decision 0010): which agreements' personal data and which official
//! files' outbox copies have outlived the bookkeeping period, and the erasure
//! itself: a `RetentionApplied` event and the destruction of the agreements'
//! data keys in one transaction, then the database's own copies wiped.
//!
//! An agreement's personal data may go once it has ended and the last financial
//! year (the calendar year) in which anything happened to it (its registration,
//! its end, any entry's payout date or recording) ended more than `years` years
//! before the as-of date. A file's outbox copy may go once the financial year of
//! its creation did, or as soon as it holds an entry of an erased agreement.

use std::collections::{BTreeMap, HashMap};

use chrono::{Datelike, NaiveDate};

use super::projection::date_from_days;
use super::sql::{Db, Source};
use super::{Ledger, LedgerError, OfficialFile};
use crate::domain::{AgreementRef, Cpr, Event, FileRef, Kommune, PersonalCpr, RetentionApplied};

/// The rule: as of `as_of`, keep `years` full financial years after the last one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetentionRule {
    pub as_of: NaiveDate,
    pub years: u32,
}

impl RetentionRule {
    /// Whether a financial year (a calendar year) is past retention: it ended
    /// more than `years` years before `as_of`.
    pub fn expired(&self, year: i32) -> bool {
        i64::from(year) + i64::from(self.years) < i64::from(self.as_of.year())
    }
}

/// An agreement whose personal data retention erases.
#[derive(Clone, Debug)]
pub struct ErasableAgreement {
    pub agreement: AgreementRef,
    pub kommune: Kommune,
    /// The last financial year anything happened to it.
    pub last_year: i32,
    /// Its CPR, opened while its key still exists, so that copies outside the
    /// database (test files, the inbox's archive) can be found before it goes.
    pub cpr: Cpr,
}

/// Why an official file's outbox copy goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileExpiry {
    /// Its financial year is past retention.
    OwnRetention,
    /// It holds entries of these erased agreements.
    HoldsErased(Vec<AgreementRef>),
}

/// What `retention` would erase as of its rule.
#[derive(Clone, Debug)]
pub struct RetentionPlan {
    pub rule: RetentionRule,
    pub agreements: Vec<ErasableAgreement>,
    /// Every official file past retention or holding an erased agreement (the
    /// caller removes the copies it finds).
    pub files: Vec<(OfficialFile, FileExpiry)>,
}

const AGREEMENTS: Source = Source {
    table: "agreements",
};
const ENTRIES: Source = Source { table: "entries" };

fn year_of_us(time_us: i64) -> Result<i32, LedgerError> {
    chrono::DateTime::from_timestamp_micros(time_us)
        .map(|time| time.year())
        .ok_or_else(|| LedgerError::CorruptLedger {
            position: None,
            what: format!("the recorded-at time {time_us} µs is no time"),
        })
}

fn year_of_days(days: i64, what: &str) -> Result<i32, LedgerError> {
    date_from_days(days)
        .map(|date| date.year())
        .ok_or_else(|| LedgerError::CorruptLedger {
            position: None,
            what: format!("{what} {days} is no date"),
        })
}

impl Ledger {
    /// What retention as of `rule` erases; reads only, changes nothing.
    pub fn retention_plan(&self, rule: RetentionRule) -> Result<RetentionPlan, LedgerError> {
        let mut ended = self.ended_agreements(rule)?;
        self.add_entry_years(&mut ended)?;
        let mut agreements = Vec::new();
        for (agreement, (kommune, last_year)) in ended {
            if !rule.expired(last_year) {
                continue;
            }
            let agreement =
                AgreementRef::parse(&agreement).map_err(|_| LedgerError::CorruptLedger {
                    position: None,
                    what: format!(
                        "the agreements table names {agreement:?}, which is no reference"
                    ),
                })?;
            let cpr = self.agreement_cpr(&agreement)?;
            agreements.push(ErasableAgreement {
                agreement,
                kommune,
                last_year,
                cpr,
            });
        }
        let files = self.expired_files(rule, &agreements)?;
        Ok(RetentionPlan {
            rule,
            agreements,
            files,
        })
    }

    /// Ended agreements whose data key still exists, with the later of their end's
    /// and their registration's years.
    fn ended_agreements(
        &self,
        rule: RetentionRule,
    ) -> Result<BTreeMap<String, (Kommune, i32)>, LedgerError> {
        let as_of = i64::from(rule.as_of.num_days_from_ce());
        let rows = self.db().query_vec(
            "SELECT a.agreement, a.kommune, COALESCE(a.ended, a.valid_to), ev.recorded_at_us
             FROM agreements a
             JOIN subject_keys k ON k.agreement = a.agreement
             JOIN events ev ON ev.position = a.position
             WHERE k.wrapped IS NOT NULL AND COALESCE(a.ended, a.valid_to) < ?1",
            &[as_of.into()],
            |row| {
                let number = row.narrow::<u16>(AGREEMENTS, 1)?;
                let kommune =
                    Kommune::from_number(number).ok_or_else(|| LedgerError::CorruptLedger {
                        position: None,
                        what: format!("an agreement names kommune {number}, which is no kommune"),
                    })?;
                let end_year = year_of_days(row.int(AGREEMENTS, 2)?, "an agreement's end date")?;
                let registered_year = year_of_us(row.int(AGREEMENTS, 3)?)?;
                Ok((
                    row.text(AGREEMENTS, 0)?.to_string(),
                    (kommune, end_year.max(registered_year)),
                ))
            },
        )?;
        Ok(rows.into_iter().collect())
    }

    /// Raises each agreement's last year to that of its entries' payouts and
    /// recordings (a correction counts for the agreement it corrects).
    fn add_entry_years(
        &self,
        agreements: &mut BTreeMap<String, (Kommune, i32)>,
    ) -> Result<(), LedgerError> {
        if agreements.is_empty() {
            return Ok(());
        }
        self.db().query_each(
            "SELECT e.agreement, MAX(e.payout), MAX(ev.recorded_at_us)
             FROM entries e JOIN events ev ON ev.position = e.position
             GROUP BY e.agreement",
            &[],
            |row| {
                let Some((_, last_year)) = agreements.get_mut(row.text(ENTRIES, 0)?) else {
                    return Ok(());
                };
                if let Some(days) = row.opt_int(ENTRIES, 1)? {
                    *last_year = (*last_year).max(year_of_days(days, "a payout date")?);
                }
                if let Some(time_us) = row.opt_int(ENTRIES, 2)? {
                    *last_year = (*last_year).max(year_of_us(time_us)?);
                }
                Ok(())
            },
        )
    }

    /// The CPR of `agreement`, opened from its registration.
    fn agreement_cpr(&self, agreement: &AgreementRef) -> Result<Cpr, LedgerError> {
        let position: u64 = self.db().query_one(
            "SELECT position FROM agreements WHERE agreement = ?1",
            &[agreement.as_str().into()],
            |row| row.unsigned(AGREEMENTS, 0),
        )?;
        let mut event = self.event_at(position)?.event()?;
        self.open_personal_data(&mut event)?;
        match event {
            Event::AgreementRegistered(registered) => match registered.cpr {
                PersonalCpr::Plain(cpr) => Ok(cpr),
                PersonalCpr::Sealed(_) => Err(LedgerError::NotALedger {
                    path: self.dir().to_path_buf(),
                    why: "its CPRs are sealed and it was opened without its key file".into(),
                }),
            },
            _ => Err(LedgerError::CorruptPayload {
                position,
                reason: format!("agreement {agreement}'s row points at another kind of event"),
            }),
        }
    }

    /// Every official file past retention or holding an entry of `erased`.
    fn expired_files(
        &self,
        rule: RetentionRule,
        erased: &[ErasableAgreement],
    ) -> Result<Vec<(OfficialFile, FileExpiry)>, LedgerError> {
        let positions = self.erased_positions(erased)?;
        let mut expired = Vec::new();
        for file in self.official_files(None)? {
            let holds: Vec<AgreementRef> = positions
                .get(&file.kommune.number())
                .map(|entries| {
                    let from =
                        entries.partition_point(|(p, _)| *p <= file.previous_cutoff_position);
                    let to = entries.partition_point(|(p, _)| *p <= file.cutoff_position);
                    let mut held: Vec<AgreementRef> =
                        entries[from..to].iter().map(|(_, a)| a.clone()).collect();
                    held.sort_by(|a, b| a.as_str().cmp(b.as_str()));
                    held.dedup();
                    held
                })
                .unwrap_or_default();
            if !holds.is_empty() {
                expired.push((file, FileExpiry::HoldsErased(holds)));
            } else if rule.expired(year_of_us(file.created_at_us)?) {
                expired.push((file, FileExpiry::OwnRetention));
            }
        }
        Ok(expired)
    }

    /// The entry positions of the `erased` agreements, per kommune number, sorted.
    fn erased_positions(
        &self,
        erased: &[ErasableAgreement],
    ) -> Result<HashMap<u16, Vec<(u64, AgreementRef)>>, LedgerError> {
        let mut positions: HashMap<u16, Vec<(u64, AgreementRef)>> = HashMap::new();
        if erased.is_empty() {
            return Ok(positions);
        }
        let wanted: HashMap<&str, &AgreementRef> = erased
            .iter()
            .map(|e| (e.agreement.as_str(), &e.agreement))
            .collect();
        self.db().query_each(
            "SELECT kommune, position, agreement FROM entries ORDER BY kommune, position",
            &[],
            |row| {
                if let Some(agreement) = wanted.get(row.text(ENTRIES, 2)?) {
                    positions
                        .entry(row.narrow::<u16>(ENTRIES, 0)?)
                        .or_default()
                        .push((row.unsigned(ENTRIES, 1)?, (*agreement).clone()));
                }
                Ok(())
            },
        )?;
        Ok(positions)
    }

    /// Records the erasure of `agreements` and the removal of `files`' outbox
    /// copies in one event, destroys the agreements' data keys in the same
    /// transaction, then wipes what the database keeps of the old keys (SQLite:
    /// the WAL checkpointed and truncated, deleted content already zeroed by
    /// `secure_delete`; PostgreSQL: the table rewritten by `VACUUM FULL`).
    pub fn apply_retention(
        &mut self,
        rule: RetentionRule,
        agreements: &[AgreementRef],
        files: &[FileRef],
    ) -> Result<u64, LedgerError> {
        let event = Event::RetentionApplied(RetentionApplied {
            agreements: agreements.to_vec(),
            files: files.to_vec(),
            as_of: rule.as_of,
            retention_years: rule.years,
        });
        let position = self.write(|appender| {
            let position = appender.append(&event)?;
            appender.erase_data_keys(agreements, position)?;
            Ok(position)
        })?;
        if let Some(keys) = self.keyring() {
            keys.forget();
        }
        self.wipe_erased_keys()?;
        Ok(position)
    }

    /// Removes what the database keeps of data keys destroyed earlier (a run of
    /// `retention --apply` that found nothing new to erase finishes an earlier one).
    pub fn wipe_erased_keys(&self) -> Result<(), LedgerError> {
        wipe_erased(self.db(), self.busy_wait())
    }
}

const XACT: Source = Source {
    table: "pg_current_snapshot()",
};

/// Removes the database's own leftovers of destroyed keys: on SQLite the WAL's
/// old pages; on PostgreSQL the old row versions, by rewriting the table. `VACUUM
/// FULL` keeps a version that a transaction still running might see, so it waits
/// first (at most `wait`) until every transaction that began before the erasure
/// committed has ended.
fn wipe_erased(db: &Db, wait: std::time::Duration) -> Result<(), LedgerError> {
    if let Db::Sqlite(conn) = db {
        return super::sqlite::checkpoint_truncate(conn);
    }
    let after: i64 = db.query_one("SELECT pg_current_xact_id()::text::bigint", &[], |row| {
        row.int(XACT, 0)
    })?;
    let deadline = std::time::Instant::now() + wait;
    loop {
        let oldest: i64 = db.query_one(
            "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint",
            &[],
            |row| row.int(XACT, 0),
        )?;
        if oldest > after {
            break;
        }
        if std::time::Instant::now() >= deadline {
            return Err(LedgerError::Busy {
                holder: "a transaction that began before the erasure is still running, so \
                         the destroyed keys' old row versions could not be removed yet; run \
                         `sf2520 retention --apply` again (it finds nothing new to erase and \
                         removes them)"
                    .into(),
                waited_s: wait.as_secs(),
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    db.batch("VACUUM FULL subject_keys")
}
