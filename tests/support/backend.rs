//! Which database the conformance suites run on, chosen by the environment
//! variable `SF2520_TEST_BACKEND`: `sqlite` (the default) or `postgres`.
//!
//! A test makes one [`Store`] per data directory. On SQLite it is nothing but the
//! directory (the ledger makes its file there); on PostgreSQL it owns a fresh
//! database of the test server (`support::postgres`), dropped with it. While the
//! `Store` lives, everything that reaches a ledger by its data directory gets that
//! database: [`open_ledger`], the CLI (`support::cli::command` and `binary` put
//! `SF2520_DATABASE_URL` in its environment) and [`sql`], the direct connection
//! tests tamper through. On PostgreSQL a data directory without a `Store` is a
//! mistake in the test and panics, rather than quietly running on SQLite.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use sf2520::ledger::{DatabaseUrl, Ledger, Location, DATABASE_FILE, DEFAULT_TOTALS_BLOCK};

use super::postgres::{database, TestDatabase};

/// The environment variable that picks the backend.
pub(crate) const VARIABLE: &str = "SF2520_TEST_BACKEND";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

/// The backend of this test process, from [`VARIABLE`]; any other value panics.
pub(crate) fn backend() -> Backend {
    static CHOSEN: OnceLock<Backend> = OnceLock::new();
    *CHOSEN.get_or_init(|| match std::env::var(VARIABLE) {
        Err(std::env::VarError::NotPresent) => Backend::Sqlite,
        Ok(value) if value.is_empty() || value == "sqlite" => Backend::Sqlite,
        Ok(value) if value == "postgres" => Backend::Postgres,
        other => panic!("{VARIABLE}={other:?}: expected `sqlite` or `postgres`"),
    })
}

pub(crate) fn on_postgres() -> bool {
    backend() == Backend::Postgres
}

/// Data directory → the URL of its database (`None`: SQLite in the directory).
fn registry() -> &'static Mutex<HashMap<PathBuf, Option<String>>> {
    static REGISTRY: OnceLock<Mutex<HashMap<PathBuf, Option<String>>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// The database of one data directory for as long as this value lives.
pub(crate) struct Store {
    dir: PathBuf,
    database: Option<TestDatabase>,
}

impl Store {
    /// The database for the ledger in `dir` (which need not exist yet): on
    /// PostgreSQL a new, empty database.
    pub(crate) fn new(dir: &Path) -> Store {
        Store::on(dir, backend())
    }

    /// [`Store::new`] on `backend`, whatever this process's is (for tests that
    /// compare the two).
    pub(crate) fn on(dir: &Path, backend: Backend) -> Store {
        Store::register(dir, (backend == Backend::Postgres).then(database))
    }

    /// The ledger in `dir` on the given PostgreSQL database (one made with
    /// particular options, say a collation).
    pub(crate) fn with_database(dir: &Path, database: TestDatabase) -> Store {
        Store::register(dir, Some(database))
    }

    /// The database for a copy of this ledger in `dir`: on SQLite the file the
    /// caller copies with the directory; on PostgreSQL a new database holding a
    /// copy of this one's (no connection to it may be open meanwhile).
    pub(crate) fn copy(&self, dir: &Path) -> Store {
        Store::register(dir, self.database.as_ref().map(TestDatabase::copy))
    }

    fn register(dir: &Path, database: Option<TestDatabase>) -> Store {
        let url = database.as_ref().map(TestDatabase::url);
        let previous = registry()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(dir.to_path_buf(), url);
        assert!(
            previous.is_none(),
            "{} already has a test database",
            dir.display()
        );
        Store {
            dir: dir.to_path_buf(),
            database,
        }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The PostgreSQL database (`None` on SQLite).
    pub(crate) fn database(&self) -> Option<&TestDatabase> {
        self.database.as_ref()
    }

    /// Opens (creating if needed) the ledger, as `Ledger::open` does.
    pub(crate) fn open(&self) -> Ledger {
        self.open_with(DEFAULT_TOTALS_BLOCK)
    }

    /// Opens (creating if needed) the ledger; a new one gets totals blocks of
    /// `block` positions, as with `Ledger::open_with`.
    pub(crate) fn open_with(&self, block: u64) -> Ledger {
        Ledger::open_at(&location(&self.dir), true, block)
            .unwrap_or_else(|e| panic!("open the ledger of {}: {e}", self.dir.display()))
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        registry()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.dir);
    }
}

/// The database URL of `dir`'s ledger for the CLI's `SF2520_DATABASE_URL`:
/// `None` on SQLite; on PostgreSQL that of its [`Store`] (panics without one).
pub(crate) fn database_url(dir: &Path) -> Option<String> {
    // A Store made for a backend of its own (`Store::on`, `Store::with_database`)
    // counts whatever this process's backend is.
    let url = registry()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(dir)
        .cloned();
    match url {
        Some(url) => url,
        None if !on_postgres() => None,
        None => panic!(
            "{VARIABLE}=postgres, but {} has no test database: make a support::backend::Store for it",
            dir.display()
        ),
    }
}

/// Where `dir`'s ledger lives on this backend.
pub(crate) fn location(dir: &Path) -> Location {
    Location {
        dir: dir.to_path_buf(),
        database: database_url(dir)
            .map(|url| DatabaseUrl::parse(&url).expect("the test database's URL parses")),
    }
}

/// Opens (creating if needed) the ledger of `dir`: `Ledger::open(dir)` on this
/// backend.
pub(crate) fn open_ledger(dir: &Path) -> Ledger {
    Ledger::open_at(&location(dir), true, DEFAULT_TOTALS_BLOCK)
        .unwrap_or_else(|e| panic!("open the ledger of {}: {e}", dir.display()))
}

/// A value for or from [`Sql`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Value {
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
    Null,
}

impl From<i64> for Value {
    fn from(value: i64) -> Value {
        Value::Int(value)
    }
}

impl From<&str> for Value {
    fn from(value: &str) -> Value {
        Value::Text(value.to_string())
    }
}

impl From<String> for Value {
    fn from(value: String) -> Value {
        Value::Text(value)
    }
}

impl From<&[u8]> for Value {
    fn from(value: &[u8]) -> Value {
        Value::Bytes(value.to_vec())
    }
}

impl From<Vec<u8>> for Value {
    fn from(value: Vec<u8>) -> Value {
        Value::Bytes(value)
    }
}

impl Value {
    pub(crate) fn int(&self) -> i64 {
        match self {
            Value::Int(value) => *value,
            other => panic!("not an integer: {other:?}"),
        }
    }

    pub(crate) fn text(&self) -> &str {
        match self {
            Value::Text(value) => value,
            other => panic!("not text: {other:?}"),
        }
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Value::Bytes(value) => value,
            other => panic!("not bytes: {other:?}"),
        }
    }
}

/// A direct connection to a ledger's database, past the ledger, as someone
/// editing it by hand would have: SQL with `?1`-style parameters (sent to
/// PostgreSQL as `$1`), in the dialect both backends share.
pub(crate) enum Sql {
    Sqlite(rusqlite::Connection),
    Postgres(postgres::Client),
}

/// The direct connection to `dir`'s database on this backend.
pub(crate) fn sql(dir: &Path) -> Sql {
    match database_url(dir) {
        None => Sql::Sqlite(
            rusqlite::Connection::open(dir.join(DATABASE_FILE))
                .unwrap_or_else(|e| panic!("open {}: {e}", dir.join(DATABASE_FILE).display())),
        ),
        Some(url) => Sql::Postgres(
            postgres::Client::connect(&url, postgres::NoTls)
                .unwrap_or_else(|e| panic!("connect to {url}: {e}")),
        ),
    }
}

impl Sql {
    /// Runs statements without parameters.
    pub(crate) fn batch(&mut self, statements: &str) {
        match self {
            Sql::Sqlite(conn) => conn.execute_batch(statements).map_err(|e| e.to_string()),
            Sql::Postgres(client) => client.batch_execute(statements).map_err(|e| e.to_string()),
        }
        .unwrap_or_else(|e| panic!("{statements}: {e}"))
    }

    /// Runs one statement; the number of rows it changed.
    pub(crate) fn execute(&mut self, statement: &str, params: &[Value]) -> u64 {
        match self {
            Sql::Sqlite(conn) => {
                let params: Vec<rusqlite::types::Value> = params.iter().map(to_sqlite).collect();
                conn.execute(statement, rusqlite::params_from_iter(params))
                    .map(|rows| rows as u64)
                    .map_err(|e| e.to_string())
            }
            Sql::Postgres(client) => {
                let owned: Vec<Box<dyn postgres::types::ToSql + Sync>> =
                    params.iter().map(to_postgres).collect();
                let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
                    owned.iter().map(|value| value.as_ref()).collect();
                client
                    .execute(&dollar_parameters(statement), &refs)
                    .map_err(|e| e.to_string())
            }
        }
        .unwrap_or_else(|e| panic!("{statement}: {e}"))
    }

    /// Every row of a query, each as its columns' values.
    pub(crate) fn query(&mut self, statement: &str, params: &[Value]) -> Vec<Vec<Value>> {
        match self {
            Sql::Sqlite(conn) => {
                let params: Vec<rusqlite::types::Value> = params.iter().map(to_sqlite).collect();
                let mut prepared = conn
                    .prepare(statement)
                    .unwrap_or_else(|e| panic!("{statement}: {e}"));
                let columns = prepared.column_count();
                prepared
                    .query_map(rusqlite::params_from_iter(params), |row| {
                        (0..columns)
                            .map(|i| {
                                Ok(match row.get_ref(i)? {
                                    rusqlite::types::ValueRef::Integer(v) => Value::Int(v),
                                    rusqlite::types::ValueRef::Text(v) => {
                                        Value::Text(String::from_utf8_lossy(v).into_owned())
                                    }
                                    rusqlite::types::ValueRef::Blob(v) => Value::Bytes(v.to_vec()),
                                    rusqlite::types::ValueRef::Null => Value::Null,
                                    rusqlite::types::ValueRef::Real(v) => {
                                        panic!("{statement}: a real {v}")
                                    }
                                })
                            })
                            .collect()
                    })
                    .and_then(|rows| rows.collect())
                    .unwrap_or_else(|e| panic!("{statement}: {e}"))
            }
            Sql::Postgres(client) => {
                let owned: Vec<Box<dyn postgres::types::ToSql + Sync>> =
                    params.iter().map(to_postgres).collect();
                let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
                    owned.iter().map(|value| value.as_ref()).collect();
                let rows = client
                    .query(&dollar_parameters(statement), &refs)
                    .unwrap_or_else(|e| panic!("{statement}: {e}"));
                rows.iter()
                    .map(|row| (0..row.len()).map(|i| from_postgres(row, i)).collect())
                    .collect()
            }
        }
    }

    /// The one integer a query returns.
    pub(crate) fn query_int(&mut self, statement: &str, params: &[Value]) -> i64 {
        let rows = self.query(statement, params);
        assert_eq!(rows.len(), 1, "{statement}: {rows:?}");
        rows[0][0].int()
    }
}

fn to_sqlite(value: &Value) -> rusqlite::types::Value {
    match value {
        Value::Int(v) => rusqlite::types::Value::Integer(*v),
        Value::Text(v) => rusqlite::types::Value::Text(v.clone()),
        Value::Bytes(v) => rusqlite::types::Value::Blob(v.clone()),
        Value::Null => rusqlite::types::Value::Null,
    }
}

fn to_postgres(value: &Value) -> Box<dyn postgres::types::ToSql + Sync> {
    match value {
        Value::Int(v) => Box::new(*v),
        Value::Text(v) => Box::new(v.clone()),
        Value::Bytes(v) => Box::new(v.clone()),
        Value::Null => Box::new(None::<i64>),
    }
}

fn from_postgres(row: &postgres::Row, index: usize) -> Value {
    use postgres::types::Type;
    let column = &row.columns()[index];
    let value = match *column.type_() {
        Type::INT8 => row.get::<_, Option<i64>>(index).map(Value::Int),
        Type::INT4 => row
            .get::<_, Option<i32>>(index)
            .map(|v| Value::Int(v.into())),
        Type::BOOL => row
            .get::<_, Option<bool>>(index)
            .map(|v| Value::Int(v.into())),
        Type::TEXT | Type::VARCHAR | Type::NAME => {
            row.get::<_, Option<String>>(index).map(Value::Text)
        }
        Type::BYTEA => row.get::<_, Option<Vec<u8>>>(index).map(Value::Bytes),
        ref other => panic!("column {} is of type {other}", column.name()),
    };
    value.unwrap_or(Value::Null)
}

/// `?n` parameters as PostgreSQL's `$n`.
fn dollar_parameters(statement: &str) -> String {
    let mut out = String::with_capacity(statement.len());
    let mut chars = statement.chars().peekable();
    while let Some(character) = chars.next() {
        if character == '?' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(character);
        }
    }
    out
}

/// Changes every stored copy of `needle` in `dir`'s database (its fourth byte
/// becomes 'X': same length, still valid text), the way someone editing the
/// database by hand would. Returns how many copies were changed. On SQLite the
/// database file is edited byte by byte (the ledger must be closed, so that its
/// WAL is in the file); on PostgreSQL every text and bytea value of every table
/// that holds `needle` is rewritten.
pub(crate) fn tamper_database(dir: &Path, needle: &[u8]) -> usize {
    assert!(needle.len() >= 4, "the needle's fourth byte is changed");
    let mut tampered = needle.to_vec();
    tampered[3] = b'X';
    let replace_all = |bytes: &mut [u8]| {
        let mut changed = 0;
        let mut start = 0;
        while start + needle.len() <= bytes.len() {
            if &bytes[start..start + needle.len()] == needle {
                bytes[start..start + needle.len()].copy_from_slice(&tampered);
                changed += 1;
                start += needle.len();
            } else {
                start += 1;
            }
        }
        changed
    };
    let mut db = match database_url(dir) {
        None => {
            let path = dir.join(DATABASE_FILE);
            let mut bytes = std::fs::read(&path).unwrap();
            let changed = replace_all(&mut bytes);
            std::fs::write(&path, bytes).unwrap();
            return changed;
        }
        Some(_) => sql(dir),
    };
    let columns = db.query(
        "SELECT table_name::text, column_name::text, data_type::text
         FROM information_schema.columns
         WHERE table_schema = current_schema() AND data_type IN ('text', 'bytea')
         ORDER BY table_name, column_name",
        &[],
    );
    let mut changed = 0;
    for column in columns {
        let (table, name, kind) = (column[0].text(), column[1].text(), column[2].text());
        let rows = db.query(
            &format!("SELECT ctid::text, {name} FROM {table} WHERE {name} IS NOT NULL"),
            &[],
        );
        for row in rows {
            let mut bytes = match &row[1] {
                Value::Text(text) => text.as_bytes().to_vec(),
                Value::Bytes(bytes) => bytes.clone(),
                other => panic!("{table}.{name}: {other:?}"),
            };
            let copies = replace_all(&mut bytes);
            if copies == 0 {
                continue;
            }
            let value = if kind == "text" {
                Value::Text(String::from_utf8(bytes).expect("the needle is replaced by ASCII"))
            } else {
                Value::Bytes(bytes)
            };
            let updated = db.execute(
                &format!("UPDATE {table} SET {name} = ?1 WHERE ctid = ?2::text::tid"),
                &[value, row[0].clone()],
            );
            assert_eq!(updated, 1, "{table}.{name} at {}", row[0].text());
            changed += copies;
        }
    }
    changed
}
