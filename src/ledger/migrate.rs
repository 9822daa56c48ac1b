//! Moving a log between backends: `sf2520 migrate --to URL` copies an embedded
//! ledger's log into an empty PostgreSQL database, and a backup of a PostgreSQL
//! ledger is the same copy the other way, into an SQLite ledger file. Both copy
//! the events byte for byte (positions, ids, times, payloads, hashes), rebuild
//! the projections from them with the one projector, and prove the copy's head
//! position and hash equal to the source's.

use std::path::Path;

use super::codec::{self, chain_hash, encode, StoredEvent, GENESIS_HASH};
use super::keys::KEY_ID_META;
use super::postgres::{DatabaseUrl, Session};
use super::projection::Projector;
use super::sql::{self, Db};
use super::store::{
    initialize, insert_event, postgres_schema_version, read_head, read_meta, write_meta, Head,
    FLOOR_KEY, LEDGER_ID_KEY,
};
use super::{Ledger, LedgerError};
use crate::domain::{Event, LedgerSealed};

/// Events copied per transaction.
const COPY_WINDOW: u64 = 8_192;

/// What a migration did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigrateReport {
    pub events: u64,
    /// The head of the copy, equal to the source's.
    pub head: Head,
    pub target: String,
}

impl Ledger {
    /// Copies this ledger's log into the empty PostgreSQL database at `url`,
    /// rebuilds the projections there, and checks that the copy ends at the same
    /// position with the same hash. A database that already holds a ledger (or
    /// any table of one) is refused and left as it is. `progress` is called with
    /// each copied position.
    pub fn migrate_to(
        &self,
        url: &DatabaseUrl,
        mut progress: impl FnMut(u64),
    ) -> Result<MigrateReport, LedgerError> {
        let target = Db::Postgres(Box::new(Session::connect(url)?));
        refuse_non_empty(&target, url)?;
        let head = self.head()?;
        initialize(
            &target,
            self.dir(),
            self.totals_block(),
            read_meta(self.db(), KEY_ID_META)?,
        )?;
        carry_meta(self, &target)?;
        copy_subject_keys(self, &target)?;
        copy_events(self, &target, head.position, &mut progress)?;
        target.execute(
            "UPDATE ledger_head SET position = ?1, hash = ?2, recorded_at_us = ?3 WHERE id = 1",
            &[
                sql::position(head.position)?,
                (&head.hash).into(),
                head.recorded_at_us.into(),
            ],
        )?;
        let copied = read_head(&target)?;
        if copied != head {
            return Err(LedgerError::CorruptLedger {
                position: Some(copied.position),
                what: format!(
                    "the copy in {} ends at position {} with another head than the source's \
                     position {}; drop the copied tables before trying again",
                    url.describe(),
                    copied.position,
                    head.position
                ),
            });
        }
        Ok(MigrateReport {
            events: head.position,
            head: copied,
            target: url.describe(),
        })
    }
}

/// Writes `source`'s log into the new SQLite ledger file `target` (empty or
/// absent), with its projections: the logical backup of a PostgreSQL ledger.
pub(crate) fn logical_copy(source: &Ledger, target: &Path) -> Result<(), LedgerError> {
    let conn = rusqlite::Connection::open(target).map_err(|error| LedgerError::Open {
        path: target.to_path_buf(),
        source: error,
    })?;
    let db = Db::Sqlite(conn);
    let dir = target.parent().unwrap_or(Path::new("."));
    let head = source.head()?;
    initialize(
        &db,
        dir,
        source.totals_block(),
        read_meta(source.db(), KEY_ID_META)?,
    )?;
    carry_meta(source, &db)?;
    copy_subject_keys(source, &db)?;
    copy_events(source, &db, head.position, &mut |_| {})?;
    if read_head(&db)? != head {
        return Err(LedgerError::CorruptLedger {
            position: Some(head.position),
            what: "the copy's head differs from the source's".into(),
        });
    }
    Ok(())
}

/// The ledger's identity and time floor, so that the copy claims the same outbox
/// and stamps no event before the last export's creation time.
fn carry_meta(source: &Ledger, target: &Db) -> Result<(), LedgerError> {
    for key in [LEDGER_ID_KEY, FLOOR_KEY] {
        if let Some(value) = read_meta(source.db(), key)? {
            write_meta(target, key, value)?;
        }
    }
    Ok(())
}

/// Copies the wrapped data keys (and erasures) of a ledger that seals personal
/// data as they are: they open under the same key file, which the copy shares.
fn copy_subject_keys(source: &Ledger, target: &Db) -> Result<(), LedgerError> {
    if read_meta(source.db(), KEY_ID_META)?.is_none() {
        return Ok(());
    }
    const KEYS: sql::Source = sql::Source {
        table: "subject_keys",
    };
    let rows = source.db().query_vec(
        "SELECT agreement, wrapped, erased_at_us, erased_position FROM subject_keys ORDER BY agreement",
        &[],
        |row| row.owned_values(KEYS),
    )?;
    target.batch("BEGIN")?;
    let copied = (|| {
        for row in &rows {
            let values: Vec<sql::Value<'_>> = row.iter().map(sql::Owned::as_value).collect();
            target.insert_later(
                "INSERT INTO subject_keys (agreement, wrapped, erased_at_us, erased_position) VALUES (?1, ?2, ?3, ?4)",
                &values,
            )?;
        }
        Ok::<_, LedgerError>(())
    })();
    target.finish(copied)
}

/// Copies events 1..=`through` in transactions of [`COPY_WINDOW`], applying each
/// to the target's projections.
fn copy_events(
    source: &Ledger,
    target: &Db,
    through: u64,
    progress: &mut dyn FnMut(u64),
) -> Result<(), LedgerError> {
    let mut projector = Projector::new(target, source.totals_block());
    let mut after = 0;
    while after < through {
        crate::interrupt::check()?;
        let last = after.saturating_add(COPY_WINDOW).min(through);
        let events = window(source, after, last)?;
        target.batch("BEGIN")?;
        let copied = (|| {
            for stored in &events {
                insert_event(target, stored)?;
                projector.apply(stored.position, &stored.event()?)?;
            }
            Ok::<_, LedgerError>(())
        })();
        target.finish(copied)?;
        progress(last);
        after = last;
    }
    Ok(())
}

/// What `sf2520 seal` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealReport {
    /// The old ledger's head, which the copy's `LedgerSealed` event names.
    pub source_head: Head,
    /// Events whose CPR the copy seals.
    pub sealed_events: u64,
    /// The copy's head (its `LedgerSealed` event).
    pub head: Head,
}

impl Ledger {
    /// Copies this ledger, written before CPRs were sealed, into `target` (a new,
    /// empty ledger that seals them): every event at the same position, with the
    /// same id, stream, type and time, its CPR sealed and its hash chained anew,
    /// the projections built by the one projector; then one `LedgerSealed` event
    /// naming this ledger's head. Positions, and so every file's entry range and
    /// bytes, stay as they were.
    pub fn seal_into(
        &self,
        target: &mut Ledger,
        mut progress: impl FnMut(u64),
    ) -> Result<SealReport, LedgerError> {
        if target.head()?.position != 0 {
            return Err(LedgerError::TargetNotEmpty {
                target: target.dir().display().to_string(),
                what: "it already holds events".into(),
            });
        }
        let keys = target.keyring().ok_or_else(|| LedgerError::NotALedger {
            path: target.dir().to_path_buf(),
            why: "the copy must be a new ledger that seals CPRs".into(),
        })?;
        let source_head = self.head()?;
        carry_meta(self, target.db())?;
        let mut projector = Projector::new(target.db(), target.totals_block());
        let mut previous = GENESIS_HASH;
        let mut sealed_events = 0;
        let mut after = 0;
        while after < source_head.position {
            crate::interrupt::check()?;
            let last = after.saturating_add(COPY_WINDOW).min(source_head.position);
            let events = window(self, after, last)?;
            let db = target.db();
            db.batch("BEGIN")?;
            let copied = (|| {
                for stored in events {
                    let mut event = stored.event()?;
                    if event.personal_cpr().is_some() {
                        keys.seal(db, &mut event)?;
                        sealed_events += 1;
                    }
                    let resealed = resealed(stored, &event, &previous);
                    previous = resealed.hash;
                    insert_event(db, &resealed)?;
                    projector.apply(resealed.position, &event)?;
                }
                Ok::<_, LedgerError>(())
            })();
            db.finish(copied)?;
            progress(last);
            after = last;
        }
        let head = target.write(|appender| {
            appender.append(&Event::LedgerSealed(LedgerSealed {
                source_head_position: source_head.position,
                source_head_hash: source_head.hash,
                sealed_events,
            }))?;
            Ok(appender.head())
        })?;
        Ok(SealReport {
            source_head,
            sealed_events,
            head,
        })
    }
}

/// `stored` with the payload of `event` (its CPR sealed, or as it was) and the
/// hash chained after `previous`.
fn resealed(stored: StoredEvent, event: &Event, previous: &[u8; 32]) -> StoredEvent {
    let payload = encode(event);
    let schema_version = codec::schema_version(event);
    let hash = chain_hash(
        previous,
        stored.position,
        &stored.event_id,
        &stored.stream,
        &stored.event_type,
        schema_version,
        stored.recorded_at_us,
        &payload,
    );
    StoredEvent {
        payload,
        schema_version,
        hash,
        ..stored
    }
}

/// The stored events of `source` at positions in `(after, last]`, in order.
fn window(source: &Ledger, after: u64, last: u64) -> Result<Vec<StoredEvent>, LedgerError> {
    source.db().query_vec(
        &format!(
            "SELECT {} FROM events WHERE position > ?1 AND position <= ?2 ORDER BY position",
            StoredEvent::COLUMNS
        ),
        &[sql::position(after)?, sql::position(last)?],
        StoredEvent::from_row,
    )
}

/// Refuses a target database that already holds tables of a ledger.
fn refuse_non_empty(target: &Db, url: &DatabaseUrl) -> Result<(), LedgerError> {
    if postgres_schema_version(target)?.is_some() {
        return Err(LedgerError::TargetNotEmpty {
            target: url.describe(),
            what: "it already holds a ledger".into(),
        });
    }
    let tables = target.query_vec(
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()
         AND tablename IN ('meta', 'ledger_head', 'events', 'agreements', 'entries',
                           'agreement_totals', 'kommune_totals', 'files', 'deliveries')",
        &[],
        |row| Ok(row.text(sql::Source { table: "pg_tables" }, 0)?.to_string()),
    )?;
    if !tables.is_empty() {
        return Err(LedgerError::TargetNotEmpty {
            target: url.describe(),
            what: format!("it has the table(s) {}", tables.join(", ")),
        });
    }
    Ok(())
}
