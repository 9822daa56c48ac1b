//! One SQL surface over the two backends' drivers: the shared parts of the storage
//! layer (projections, the rules' view, the files register, the export's reads)
//! speak it, and only `sqlite` and `postgres` know a driver.
//!
//! Statements are written once, in the subset both databases read alike, with
//! numbered parameters `?1`, `?2`, …; PostgreSQL receives them as `$1`, `$2`, ….
//! Values cross as [`Value`]: 64-bit integers, text, bytes or NULL, which is all
//! the ledger stores (PostgreSQL columns are `bigint`, `text` and `bytea`). Rows are
//! read through [`Row`], whose typed getters check every conversion: a value that
//! does not fit (a negative position, a 17-byte id) is
//! [`LedgerError::CorruptLedger`] naming the table and column, never a default.

use super::postgres::Session;
use super::LedgerError;
use crate::domain::EntryKind;

/// One parameter value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Value<'a> {
    Int(i64),
    Text(&'a str),
    Blob(&'a [u8]),
    Null,
}

impl From<i64> for Value<'_> {
    fn from(value: i64) -> Self {
        Value::Int(value)
    }
}

impl From<u16> for Value<'_> {
    fn from(value: u16) -> Self {
        Value::Int(i64::from(value))
    }
}

impl From<u32> for Value<'_> {
    fn from(value: u32) -> Self {
        Value::Int(i64::from(value))
    }
}

impl From<bool> for Value<'_> {
    fn from(value: bool) -> Self {
        Value::Int(i64::from(value))
    }
}

/// An entry kind as the `entries.kind` column stores it, so that no statement
/// spells the number out.
impl From<EntryKind> for Value<'_> {
    fn from(kind: EntryKind) -> Self {
        Value::Int(kind.stored())
    }
}

impl<'a> From<&'a str> for Value<'a> {
    fn from(value: &'a str) -> Self {
        Value::Text(value)
    }
}

impl<'a> From<&'a String> for Value<'a> {
    fn from(value: &'a String) -> Self {
        Value::Text(value)
    }
}

impl<'a> From<&'a [u8]> for Value<'a> {
    fn from(value: &'a [u8]) -> Self {
        Value::Blob(value)
    }
}

impl<'a, const N: usize> From<&'a [u8; N]> for Value<'a> {
    fn from(value: &'a [u8; N]) -> Self {
        Value::Blob(value)
    }
}

impl<'a, T: Into<Value<'a>>> From<Option<T>> for Value<'a> {
    fn from(value: Option<T>) -> Self {
        value.map_or(Value::Null, Into::into)
    }
}

/// A position (or count) as an SQL integer. Positions come from the log, which
/// starts at 1 and grows by one, so one beyond `i64::MAX` cannot be stored; asking
/// for it (a `--position` typed by hand) is an error, not a clamp.
pub(crate) fn position(position: u64) -> Result<Value<'static>, LedgerError> {
    i64::try_from(position)
        .map(Value::Int)
        .map_err(|_| LedgerError::PositionOutOfRange { position })
}

/// The entry kind stored as `found`; any other number is
/// [`LedgerError::UnknownEntryKind`] naming it and `location` (`at position 17`),
/// never a kind picked for it.
pub(crate) fn entry_kind(
    found: i64,
    location: impl FnOnce() -> String,
) -> Result<EntryKind, LedgerError> {
    EntryKind::from_stored(found).ok_or_else(|| LedgerError::UnknownEntryKind {
        found,
        location: location(),
    })
}

/// The parameter list of one statement: `args![a, b, c]`.
macro_rules! args {
    ($($value:expr),* $(,)?) => {
        [$($crate::ledger::sql::Value::from($value)),*]
    };
}
pub(crate) use args;

/// A value read from a row, owned (for comparing rows of two databases).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Owned {
    Int(i64),
    Text(String),
    Blob(Vec<u8>),
    Null,
}

impl Owned {
    pub(crate) fn of(value: Value<'_>) -> Owned {
        match value {
            Value::Int(value) => Owned::Int(value),
            Value::Text(text) => Owned::Text(text.to_string()),
            Value::Blob(bytes) => Owned::Blob(bytes.to_vec()),
            Value::Null => Owned::Null,
        }
    }

    pub(crate) fn as_value(&self) -> Value<'_> {
        match self {
            Owned::Int(value) => Value::Int(*value),
            Owned::Text(text) => Value::Text(text),
            Owned::Blob(bytes) => Value::Blob(bytes),
            Owned::Null => Value::Null,
        }
    }
}

/// One row of a result, read by column index.
pub(crate) enum Row<'r> {
    Sqlite(&'r rusqlite::Row<'r>),
    Postgres(&'r postgres::Row),
}

/// Names what a row came from, for [`LedgerError::CorruptLedger`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Source {
    pub table: &'static str,
}

impl Row<'_> {
    fn damaged(&self, source: Source, column: usize, what: impl std::fmt::Display) -> LedgerError {
        LedgerError::CorruptLedger {
            position: None,
            what: format!("{} column {column}: {what}", source.table),
        }
    }

    /// An integer column that may be NULL.
    pub(crate) fn opt_int(
        &self,
        source: Source,
        column: usize,
    ) -> Result<Option<i64>, LedgerError> {
        match self {
            Row::Sqlite(row) => match row.get_ref(column)? {
                rusqlite::types::ValueRef::Null => Ok(None),
                rusqlite::types::ValueRef::Integer(value) => Ok(Some(value)),
                other => Err(self.damaged(
                    source,
                    column,
                    format!("{} where an integer belongs", other.data_type()),
                )),
            },
            Row::Postgres(row) => {
                use postgres::types::Type;
                let kind = row.columns()[column].type_().clone();
                let value = match kind {
                    Type::INT8 => row.try_get::<_, Option<i64>>(column)?,
                    Type::INT4 => row.try_get::<_, Option<i32>>(column)?.map(i64::from),
                    Type::INT2 => row.try_get::<_, Option<i16>>(column)?.map(i64::from),
                    Type::BOOL => row.try_get::<_, Option<bool>>(column)?.map(i64::from),
                    other => {
                        return Err(self.damaged(
                            source,
                            column,
                            format!("{other} where an integer belongs"),
                        ))
                    }
                };
                Ok(value)
            }
        }
    }

    /// An integer column that must not be NULL.
    pub(crate) fn int(&self, source: Source, column: usize) -> Result<i64, LedgerError> {
        self.opt_int(source, column)?
            .ok_or_else(|| self.damaged(source, column, "NULL where a number belongs"))
    }

    /// A non-negative integer (a position, a count).
    pub(crate) fn unsigned(&self, source: Source, column: usize) -> Result<u64, LedgerError> {
        let value = self.int(source, column)?;
        u64::try_from(value)
            .map_err(|_| self.damaged(source, column, format!("{value} is negative")))
    }

    /// An integer of a narrower type (a kommune number, a løbenummer).
    pub(crate) fn narrow<T: TryFrom<i64>>(
        &self,
        source: Source,
        column: usize,
    ) -> Result<T, LedgerError> {
        let value = self.int(source, column)?;
        T::try_from(value).map_err(|_| {
            self.damaged(
                source,
                column,
                format!("{value} is out of range for {}", std::any::type_name::<T>()),
            )
        })
    }

    /// An `entries.kind` column, checked by [`entry_kind`]: `location` says which
    /// row it is for the error (the column's number would not help an operator).
    pub(crate) fn entry_kind(
        &self,
        source: Source,
        column: usize,
        location: impl FnOnce() -> String,
    ) -> Result<EntryKind, LedgerError> {
        entry_kind(self.int(source, column)?, location)
    }

    /// A 0/1 flag.
    pub(crate) fn flag(&self, source: Source, column: usize) -> Result<bool, LedgerError> {
        match self.int(source, column)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(self.damaged(source, column, format!("{other} is not 0 or 1"))),
        }
    }

    /// A 0/1 flag that may be NULL.
    pub(crate) fn opt_flag(
        &self,
        source: Source,
        column: usize,
    ) -> Result<Option<bool>, LedgerError> {
        match self.opt_int(source, column)? {
            None => Ok(None),
            Some(0) => Ok(Some(false)),
            Some(1) => Ok(Some(true)),
            Some(other) => Err(self.damaged(source, column, format!("{other} is not 0 or 1"))),
        }
    }

    /// A text column that may be NULL, borrowed from the row.
    pub(crate) fn opt_text(
        &self,
        source: Source,
        column: usize,
    ) -> Result<Option<&str>, LedgerError> {
        match self {
            Row::Sqlite(row) => match row.get_ref(column)? {
                rusqlite::types::ValueRef::Null => Ok(None),
                rusqlite::types::ValueRef::Text(bytes) => std::str::from_utf8(bytes)
                    .map(Some)
                    .map_err(|_| self.damaged(source, column, "text that is not UTF-8")),
                other => Err(self.damaged(
                    source,
                    column,
                    format!("{} where text belongs", other.data_type()),
                )),
            },
            Row::Postgres(row) => Ok(row.try_get::<_, Option<&str>>(column)?),
        }
    }

    /// A text column that must not be NULL.
    pub(crate) fn text(&self, source: Source, column: usize) -> Result<&str, LedgerError> {
        self.opt_text(source, column)?
            .ok_or_else(|| self.damaged(source, column, "NULL where text belongs"))
    }

    /// A bytes column that may be NULL, borrowed from the row.
    pub(crate) fn opt_blob(
        &self,
        source: Source,
        column: usize,
    ) -> Result<Option<&[u8]>, LedgerError> {
        match self {
            Row::Sqlite(row) => match row.get_ref(column)? {
                rusqlite::types::ValueRef::Null => Ok(None),
                rusqlite::types::ValueRef::Blob(bytes) => Ok(Some(bytes)),
                other => Err(self.damaged(
                    source,
                    column,
                    format!("{} where bytes belong", other.data_type()),
                )),
            },
            Row::Postgres(row) => Ok(row.try_get::<_, Option<&[u8]>>(column)?),
        }
    }

    /// A bytes column, borrowed from the row.
    pub(crate) fn blob(&self, source: Source, column: usize) -> Result<&[u8], LedgerError> {
        match self {
            Row::Sqlite(row) => match row.get_ref(column)? {
                rusqlite::types::ValueRef::Blob(bytes) => Ok(bytes),
                other => Err(self.damaged(
                    source,
                    column,
                    format!("{} where bytes belong", other.data_type()),
                )),
            },
            Row::Postgres(row) => Ok(row.try_get::<_, &[u8]>(column)?),
        }
    }

    /// Every column of the row as it is stored.
    pub(crate) fn owned_values(&self, source: Source) -> Result<Vec<Owned>, LedgerError> {
        match self {
            Row::Sqlite(row) => (0..row.as_ref().column_count())
                .map(|column| {
                    use rusqlite::types::ValueRef;
                    Ok(match row.get_ref(column)? {
                        ValueRef::Null => Owned::Null,
                        ValueRef::Integer(value) => Owned::Int(value),
                        ValueRef::Text(_) => Owned::Text(self.text(source, column)?.to_string()),
                        ValueRef::Blob(bytes) => Owned::Blob(bytes.to_vec()),
                        ValueRef::Real(_) => {
                            return Err(self.damaged(source, column, "a real number"))
                        }
                    })
                })
                .collect(),
            Row::Postgres(row) => (0..row.len())
                .map(|column| {
                    use postgres::types::Type;
                    let kind = row.columns()[column].type_().clone();
                    Ok(match kind {
                        Type::TEXT | Type::VARCHAR => self
                            .opt_text(source, column)?
                            .map_or(Owned::Null, |text| Owned::Text(text.to_string())),
                        Type::BYTEA => row
                            .try_get::<_, Option<&[u8]>>(column)?
                            .map_or(Owned::Null, |bytes| Owned::Blob(bytes.to_vec())),
                        _ => self
                            .opt_int(source, column)?
                            .map_or(Owned::Null, Owned::Int),
                    })
                })
                .collect(),
        }
    }

    /// A bytes column of exactly `N` bytes (an id, a hash).
    pub(crate) fn bytes<const N: usize>(
        &self,
        source: Source,
        column: usize,
    ) -> Result<[u8; N], LedgerError> {
        let bytes = self.blob(source, column)?;
        bytes.try_into().map_err(|_| {
            self.damaged(
                source,
                column,
                format!("{} bytes where {N} belong", bytes.len()),
            )
        })
    }
}

/// One kind of [`Db::add_later`]: the statement for one row (`?1` the number key,
/// `?2` the text key, `?3` the delta) and, for PostgreSQL, the statement for many
/// (`$1` a `bigint[]` of number keys, `$2` a `text[]` of text keys, `$3` a
/// `bigint[]` of deltas, each key once).
pub(crate) struct Addition {
    pub one: &'static str,
    pub many: &'static str,
}

/// A connection to the ledger's database.
pub(crate) enum Db {
    Sqlite(rusqlite::Connection),
    Postgres(Box<Session>),
}

impl Db {
    /// Which backend this is, for messages.
    pub(crate) fn backend(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "SQLite",
            Db::Postgres(_) => "PostgreSQL",
        }
    }

    /// Runs one statement; returns the number of rows it changed.
    pub(crate) fn execute(&self, sql: &str, args: &[Value<'_>]) -> Result<u64, LedgerError> {
        match self {
            Db::Sqlite(conn) => {
                let changed = conn
                    .prepare_cached(sql)?
                    .execute(rusqlite::params_from_iter(args.iter()))?;
                // usize is at most 64 bits on every target Rust supports here.
                u64::try_from(changed).map_err(|_| LedgerError::CorruptLedger {
                    position: None,
                    what: format!("a statement reports {changed} changed rows"),
                })
            }
            Db::Postgres(session) => session.execute(sql, args),
        }
    }

    /// Runs one `INSERT INTO … VALUES (…)` whose outcome the caller does not read,
    /// possibly later: SQLite runs it now; PostgreSQL keeps it and sends the rows
    /// of each statement together as multi-row inserts, before the next statement
    /// of any other kind (so every read sees it) and before the commit. An error it
    /// meets then fails that later statement, and so the transaction.
    pub(crate) fn insert_later(
        &self,
        sql: &'static str,
        args: &[Value<'_>],
    ) -> Result<(), LedgerError> {
        match self {
            Db::Sqlite(_) => self.execute(sql, args).map(drop),
            Db::Postgres(session) => session.insert_later(sql, args),
        }
    }

    /// Adds `delta` to a number of the row keyed (`number`, `text`), possibly
    /// later: SQLite runs `addition.one` now; PostgreSQL sums the deltas per key
    /// and sends them all in one `addition.many` after the pending inserts, before
    /// the next statement of any other kind. Additions commute, so their order
    /// does not matter; the row must exist by then (inserted earlier in the
    /// transaction, or before it).
    pub(crate) fn add_later(
        &self,
        addition: &'static Addition,
        number: i64,
        text: &str,
        delta: i64,
    ) -> Result<(), LedgerError> {
        match self {
            Db::Sqlite(_) => self
                .execute(addition.one, &[number.into(), text.into(), delta.into()])
                .map(drop),
            Db::Postgres(session) => session.add_later(addition, number, text, delta),
        }
    }

    /// Runs statements without parameters (schema, transaction control).
    pub(crate) fn batch(&self, sql: &str) -> Result<(), LedgerError> {
        match self {
            Db::Sqlite(conn) => Ok(conn.execute_batch(sql)?),
            Db::Postgres(session) => session.batch(sql),
        }
    }

    /// Rolls back the transaction this connection began (on PostgreSQL, dropping
    /// the statements still waiting to be sent).
    pub(crate) fn rollback(&self) -> Result<(), LedgerError> {
        match self {
            Db::Sqlite(conn) => Ok(conn.execute_batch("ROLLBACK")?),
            Db::Postgres(session) => session.rollback(),
        }
    }

    /// Ends the transaction this connection began: commits when `work` succeeded,
    /// rolls back (and returns `work`'s error) when it failed.
    pub(crate) fn finish<T>(&self, work: Result<T, LedgerError>) -> Result<T, LedgerError> {
        match work {
            Ok(value) => self.batch("COMMIT").map(|()| value),
            Err(error) => {
                if let Err(rollback) = self.rollback() {
                    tracing::debug!(%rollback, "rolling back after a failure");
                }
                Err(error)
            }
        }
    }

    /// Calls `visit` with each row of a query, in the query's order. `visit` must
    /// not use this connection (PostgreSQL streams the rows over it).
    pub(crate) fn query_each(
        &self,
        sql: &str,
        args: &[Value<'_>],
        mut visit: impl FnMut(&Row<'_>) -> Result<(), LedgerError>,
    ) -> Result<(), LedgerError> {
        match self {
            Db::Sqlite(conn) => {
                let mut statement = conn.prepare_cached(sql)?;
                let mut rows = statement.query(rusqlite::params_from_iter(args.iter()))?;
                while let Some(row) = rows.next()? {
                    visit(&Row::Sqlite(row))?;
                }
                Ok(())
            }
            Db::Postgres(session) => session.query_each(sql, args, &mut visit),
        }
    }

    /// The rows of a query, each mapped by `map`.
    pub(crate) fn query_vec<T>(
        &self,
        sql: &str,
        args: &[Value<'_>],
        mut map: impl FnMut(&Row<'_>) -> Result<T, LedgerError>,
    ) -> Result<Vec<T>, LedgerError> {
        let mut rows = Vec::new();
        self.query_each(sql, args, |row| {
            rows.push(map(row)?);
            Ok(())
        })?;
        Ok(rows)
    }

    /// The first row of a query, mapped by `map`; `None` if it has none.
    pub(crate) fn query_opt<T>(
        &self,
        sql: &str,
        args: &[Value<'_>],
        map: impl FnOnce(&Row<'_>) -> Result<T, LedgerError>,
    ) -> Result<Option<T>, LedgerError> {
        let mut map = Some(map);
        let mut found = None;
        self.query_each(sql, args, |row| {
            if let Some(map) = map.take() {
                found = Some(map(row)?);
            }
            Ok(())
        })?;
        Ok(found)
    }

    /// The one row a query must return.
    pub(crate) fn query_one<T>(
        &self,
        sql: &str,
        args: &[Value<'_>],
        map: impl FnOnce(&Row<'_>) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        self.query_opt(sql, args, map)?
            .ok_or_else(|| LedgerError::CorruptLedger {
                position: None,
                what: format!("a query that always returns a row returned none: {sql}"),
            })
    }
}

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match *self {
            Value::Int(value) => ValueRef::Integer(value),
            Value::Text(text) => ValueRef::Text(text.as_bytes()),
            Value::Blob(bytes) => ValueRef::Blob(bytes),
            Value::Null => ValueRef::Null,
        }))
    }
}
