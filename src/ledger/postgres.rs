//! The PostgreSQL backend: connecting by URL, the schema, and the session that runs
//! the shared SQL of `ledger::sql` (with `$n` parameters and cached statements).
//!
//! Positions stay gapless and in commit order with writers on several nodes
//! because every write transaction first locks the one row of `ledger_head`
//! (`SELECT … FOR UPDATE`) and only then reads the tail of the log: writers take
//! turns, each appends at the head the previous one committed, and a reader, whose
//! statements see only committed transactions, never sees position N+1 without N.
//! No sequence is used: a sequence hands out numbers that a rollback leaves unused
//! and that concurrent transactions commit out of order (decision 0008).

use std::cell::RefCell;
use std::collections::HashMap;
use std::str::FromStr;
use std::time::{Duration, Instant};

use postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use postgres::{Client, Config, NoTls, Statement};

use super::sql::{Row, Value};
use super::LedgerError;

/// The schema on PostgreSQL: the same tables and keys as on SQLite (see
/// `schema.rs`), with integers as `bigint` and bytes as `bytea` (never `jsonb`,
/// which would rewrite the payloads whose bytes the hash chain covers).
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    key   text PRIMARY KEY,
    value bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS ledger_head (
    id             bigint PRIMARY KEY CHECK (id = 1),
    position       bigint NOT NULL,
    hash           bytea  NOT NULL,
    recorded_at_us bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    position       bigint PRIMARY KEY CHECK (position >= 1),
    event_id       bytea  NOT NULL,
    stream         text   NOT NULL,
    event_type     text   NOT NULL,
    schema_version bigint NOT NULL,
    recorded_at_us bigint NOT NULL,
    payload        bytea  NOT NULL,
    hash           bytea  NOT NULL
);
";

/// The projection tables on PostgreSQL.
pub(crate) const PROJECTION_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS agreements (
    agreement  text PRIMARY KEY,
    position   bigint NOT NULL,
    kommune    bigint NOT NULL,
    valid_from bigint NOT NULL,
    valid_to   bigint,
    ended      bigint
);
CREATE TABLE IF NOT EXISTS entries (
    kommune    bigint NOT NULL,
    position   bigint NOT NULL,
    reference  text   NOT NULL,
    kind       bigint NOT NULL,
    agreement  text   NOT NULL,
    corrects   text,
    amount_ore bigint NOT NULL,
    net_ore    bigint,
    payout     bigint,
    PRIMARY KEY (kommune, position)
);
CREATE UNIQUE INDEX IF NOT EXISTS entries_by_reference ON entries (kommune, reference);
CREATE TABLE IF NOT EXISTS agreement_totals (
    agreement     text   NOT NULL,
    block         bigint NOT NULL,
    kommune       bigint NOT NULL,
    withheld_ore  bigint NOT NULL,
    corrected_ore bigint NOT NULL,
    entries       bigint NOT NULL,
    last_payout   bigint,
    PRIMARY KEY (agreement, block)
);
CREATE TABLE IF NOT EXISTS kommune_totals (
    kommune       bigint NOT NULL,
    block         bigint NOT NULL,
    withheld_ore  bigint NOT NULL,
    corrected_ore bigint NOT NULL,
    entries       bigint NOT NULL,
    last_payout   bigint,
    PRIMARY KEY (kommune, block)
);
CREATE TABLE IF NOT EXISTS files (
    kommune                  bigint NOT NULL,
    sequence                 bigint NOT NULL,
    position                 bigint NOT NULL,
    file_id                  bytea  NOT NULL,
    file_name                text   NOT NULL,
    created_at_us            bigint NOT NULL,
    previous_cutoff_position bigint NOT NULL,
    cutoff_position          bigint NOT NULL,
    test_marker              bigint NOT NULL,
    record_count             bigint NOT NULL,
    plus_ore                 bigint NOT NULL,
    minus_ore                bigint NOT NULL,
    sha256                   bytea  NOT NULL,
    PRIMARY KEY (kommune, sequence)
);
CREATE TABLE IF NOT EXISTS deliveries (
    position        bigint PRIMARY KEY,
    kommune         bigint NOT NULL,
    sequence        bigint NOT NULL,
    kind            text   NOT NULL,
    senders_file_id bytea  NOT NULL,
    detail          text   NOT NULL,
    accepted        bigint
);
CREATE INDEX IF NOT EXISTS deliveries_by_file ON deliveries (kommune, sequence, position);
";

/// The key of the session-level advisory lock one batch export at a time holds
/// (on this database: PostgreSQL keeps advisory locks per database).
pub(crate) const EXPORT_LOCK_KEY: i64 = 0x5346_3235_3230_4558; // "SF2520EX"

/// The key of the transaction lock under which a new ledger's tables are made.
pub(crate) const INIT_LOCK_KEY: i64 = 0x5346_3235_3230_494E; // "SF2520IN"

/// A database URL as given, and the connection settings parsed from it.
#[derive(Clone)]
pub struct DatabaseUrl {
    text: String,
    config: Config,
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatabaseUrl({})", self.describe())
    }
}

impl DatabaseUrl {
    /// Parses a `postgresql://` (or `postgres://`) URL, multi-host lists and
    /// `target_session_attrs` included, or a libpq `key=value` string.
    pub fn parse(text: &str) -> Result<DatabaseUrl, LedgerError> {
        let bad = |reason: String| LedgerError::BadDatabaseUrl {
            url: redact(text),
            reason,
        };
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(bad("it is empty".into()));
        }
        let looks_like_url = trimmed.contains("://");
        if looks_like_url
            && !(trimmed.starts_with("postgresql://") || trimmed.starts_with("postgres://"))
        {
            return Err(bad(
                "only postgresql:// URLs are understood (SQLite is the default: leave the URL out)"
                    .into(),
            ));
        }
        if !looks_like_url && !trimmed.contains('=') {
            return Err(bad(
                "it is neither a postgresql:// URL nor key=value pairs".into()
            ));
        }
        let mut config = Config::from_str(trimmed).map_err(|error| bad(error.to_string()))?;
        if config.get_hosts().is_empty() {
            // libpq's default: the local server's socket directory.
            config.host_path("/run/postgresql");
        }
        if config.get_application_name().is_none() {
            config.application_name("sf2520");
        }
        Ok(DatabaseUrl {
            text: trimmed.to_string(),
            config,
        })
    }

    /// The URL without its password, for messages and logs.
    pub fn describe(&self) -> String {
        redact(&self.text)
    }

    /// A new connection.
    pub fn connect(&self) -> Result<Client, LedgerError> {
        self.connect_as(None)
    }

    /// A new connection with `application_name` set to `name` (what
    /// `pg_stat_activity` shows, and how a waiting export names the holder).
    pub fn connect_as(&self, name: Option<&str>) -> Result<Client, LedgerError> {
        let mut config = self.config.clone();
        if let Some(name) = name {
            config.application_name(name);
        }
        config.connect(NoTls).map_err(|error| LedgerError::Connect {
            target: self.describe(),
            reason: connect_reason(&error),
        })
    }
}

fn connect_reason(error: &postgres::Error) -> String {
    use std::error::Error as _;
    match (error.as_db_error(), error.source()) {
        (Some(db), _) => db.message().to_string(),
        (None, Some(source)) => source.to_string(),
        (None, None) => error.to_string(),
    }
}

/// `text` with any password replaced by `***`: in a URL the part after `user:`,
/// in key=value form the value of `password=`.
fn redact(text: &str) -> String {
    if let Some((scheme, rest)) = text.split_once("://") {
        let (authority_end, tail) = match rest.find(['/', '?']) {
            Some(at) => rest.split_at(at),
            None => (rest, ""),
        };
        let authority = match authority_end.rsplit_once('@') {
            Some((user_info, hosts)) => match user_info.split_once(':') {
                Some((user, _)) => format!("{user}:***@{hosts}"),
                None => authority_end.to_string(),
            },
            None => authority_end.to_string(),
        };
        let tail = redact_query_password(tail);
        return format!("{scheme}://{authority}{tail}");
    }
    text.split_whitespace()
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => "password=***".to_string(),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn redact_query_password(tail: &str) -> String {
    let Some((path, query)) = tail.split_once('?') else {
        return tail.to_string();
    };
    let query = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => "password=***".to_string(),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&");
    format!("{path}?{query}")
}

/// One connection, with its prepared statements.
pub(crate) struct Session {
    client: RefCell<Client>,
    statements: RefCell<HashMap<String, Statement>>,
    url: DatabaseUrl,
}

impl Session {
    pub fn connect(url: &DatabaseUrl) -> Result<Session, LedgerError> {
        Ok(Session {
            client: RefCell::new(url.connect()?),
            statements: RefCell::new(HashMap::new()),
            url: url.clone(),
        })
    }

    pub fn url(&self) -> &DatabaseUrl {
        &self.url
    }

    /// Connects again after the connection was lost (prepared statements are per
    /// connection, so they go too).
    pub fn reconnect(&self) -> Result<(), LedgerError> {
        let client = self.url.connect()?;
        *self.client.borrow_mut() = client;
        self.statements.borrow_mut().clear();
        Ok(())
    }

    /// Whether the client has seen the connection end (the server ended it, or
    /// the network did). The client notices only once it reads the end of the
    /// stream, which may come after the error that said so: see
    /// [`connection_ended`].
    pub fn is_closed(&self) -> bool {
        self.client.borrow().is_closed()
    }

    fn statement(&self, client: &mut Client, sql: &str) -> Result<Statement, LedgerError> {
        if let Some(statement) = self.statements.borrow().get(sql) {
            return Ok(statement.clone());
        }
        let statement = client.prepare(&dollar_parameters(sql))?;
        self.statements
            .borrow_mut()
            .insert(sql.to_string(), statement.clone());
        Ok(statement)
    }

    fn client(&self) -> Result<std::cell::RefMut<'_, Client>, LedgerError> {
        self.client
            .try_borrow_mut()
            .map_err(|_| LedgerError::CorruptLedger {
                position: None,
                what: "a query was started while another one was still reading rows on the same \
                       PostgreSQL connection (a program error)"
                    .into(),
            })
    }

    pub fn execute(&self, sql: &str, args: &[Value<'_>]) -> Result<u64, LedgerError> {
        let mut client = self.client()?;
        let statement = self.statement(&mut client, sql)?;
        let params: Vec<&(dyn ToSql + Sync)> = args
            .iter()
            .map(|value| value as &(dyn ToSql + Sync))
            .collect();
        Ok(client.execute(&statement, &params)?)
    }

    pub fn batch(&self, sql: &str) -> Result<(), LedgerError> {
        Ok(self.client()?.batch_execute(sql)?)
    }

    pub fn query_each(
        &self,
        sql: &str,
        args: &[Value<'_>],
        visit: &mut dyn FnMut(&Row<'_>) -> Result<(), LedgerError>,
    ) -> Result<(), LedgerError> {
        use postgres::fallible_iterator::FallibleIterator;
        let mut client = self.client()?;
        let statement = self.statement(&mut client, sql)?;
        let params = args.iter().map(|value| value as &(dyn ToSql + Sync));
        let mut rows = client.query_raw(&statement, params)?;
        while let Some(row) = rows.next()? {
            visit(&Row::Postgres(&row))?;
        }
        Ok(())
    }
}

/// Whether `error` itself says that the session is over: the client saw the
/// connection end, or the server said it is ending it: SQLSTATE class 08
/// (connection exception), 57P01-57P03 (terminated by an administrator, the
/// server crashing or shutting down), or any FATAL or PANIC, after which the
/// server always closes the connection. The client's [`Session::is_closed`]
/// alone is not enough: a FATAL in answer to a statement (say to COMMIT, from a
/// `pg_terminate_backend`) is returned before the client has read the end of the
/// stream that follows it.
pub(crate) fn connection_ended(error: &postgres::Error) -> bool {
    use postgres::error::Severity;
    if error.is_closed() {
        return true;
    }
    let Some(db) = error.as_db_error() else {
        return false;
    };
    let code = db.code().code();
    code.starts_with("08")
        || matches!(code, "57P01" | "57P02" | "57P03")
        || matches!(
            db.parsed_severity(),
            Some(Severity::Fatal | Severity::Panic)
        )
}

/// `?n` parameters as PostgreSQL's `$n` (the shared SQL has no `?` elsewhere).
fn dollar_parameters(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(character) = chars.next() {
        if character == '?' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(character);
        }
    }
    out
}

impl ToSql for Value<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut postgres::types::private::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match *self {
            Value::Int(value) => match *ty {
                Type::INT8 => value.to_sql(ty, out),
                Type::INT4 => i32::try_from(value)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(value)?.to_sql(ty, out),
                Type::BOOL => match value {
                    0 => false.to_sql(ty, out),
                    1 => true.to_sql(ty, out),
                    other => Err(format!("{other} is not a flag").into()),
                },
                _ => Err(format!("an integer cannot be sent as {ty}").into()),
            },
            Value::Text(text) => text.to_sql(ty, out),
            Value::Blob(bytes) => bytes.to_sql(ty, out),
            Value::Null => Ok(IsNull::Yes),
        }
    }

    fn accepts(ty: &Type) -> bool {
        matches!(
            *ty,
            Type::INT8
                | Type::INT4
                | Type::INT2
                | Type::BOOL
                | Type::TEXT
                | Type::VARCHAR
                | Type::BYTEA
        )
    }

    to_sql_checked!();
}

/// Takes the advisory export lock on its own connection, waiting up to `wait`
/// for a run on any node that holds it; the lock lasts as long as the returned
/// client (PostgreSQL releases it when the session ends, also when the holder's
/// process dies or its node loses the network).
pub(crate) fn lock_exports(
    url: &DatabaseUrl,
    holder: &str,
    wait: Duration,
) -> Result<Client, LedgerError> {
    let mut client = url.connect_as(Some(holder))?;
    let started = Instant::now();
    let mut reported: Option<Instant> = None;
    loop {
        let taken: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&EXPORT_LOCK_KEY])?
            .get(0);
        if taken {
            return Ok(client);
        }
        let holder = export_lock_holder(&mut client)?;
        if started.elapsed() >= wait {
            return Err(LedgerError::ExportRunning {
                holder,
                waited_s: started.elapsed().as_secs(),
            });
        }
        if reported.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
            tracing::warn!(%holder, "another export is running; waiting for it");
            reported = Some(Instant::now());
        }
        crate::interrupt::check()?;
        // The lock is not a queue; ask again shortly.
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Who holds the export lock: the `application_name` its session set, which
/// names the command, process, host and start time.
fn export_lock_holder(client: &mut Client) -> Result<String, LedgerError> {
    let row = client.query_opt(
        "SELECT a.application_name, a.client_addr::text, a.backend_start::text
         FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
         WHERE l.locktype = 'advisory' AND l.granted AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND l.objid = ($1::bigint & 4294967295)::oid AND l.classid = ($1::bigint >> 32)::oid
         LIMIT 1",
        &[&EXPORT_LOCK_KEY],
    )?;
    Ok(match row {
        Some(row) => {
            let name: Option<String> = row.get(0);
            let address: Option<String> = row.get(1);
            format!(
                "{} from {}",
                name.unwrap_or_else(|| "a session without a name".into()),
                address.unwrap_or_else(|| "a local socket".into())
            )
        }
        None => "a run that has just finished".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_become_dollar_numbers() {
        assert_eq!(
            dollar_parameters("SELECT a FROM t WHERE b = ?1 AND c = ?12 OR ?2 IS NULL"),
            "SELECT a FROM t WHERE b = $1 AND c = $12 OR $2 IS NULL"
        );
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgresql://sf2520:hemmelig@db1:5432,db2:5432/ledger?target_session_attrs=read-write"),
            "postgresql://sf2520:***@db1:5432,db2:5432/ledger?target_session_attrs=read-write"
        );
        assert_eq!(
            redact("host=db1 password=hemmelig dbname=ledger"),
            "host=db1 password=*** dbname=ledger"
        );
        assert_eq!(
            redact("postgresql://db1/ledger?password=hemmelig&sslmode=disable"),
            "postgresql://db1/ledger?password=***&sslmode=disable"
        );
    }

    #[test]
    fn urls_and_key_value_strings_parse() {
        let url = DatabaseUrl::parse(
            "postgresql://sf2520@db1:5432,db2:5433/ledger?target_session_attrs=read-write",
        )
        .unwrap();
        assert_eq!(url.config.get_hosts().len(), 2);
        assert_eq!(url.config.get_ports(), &[5432, 5433]);
        assert_eq!(url.config.get_dbname(), Some("ledger"));
        let url = DatabaseUrl::parse("host=/tmp/socket dbname=ledger user=postgres").unwrap();
        assert_eq!(url.config.get_dbname(), Some("ledger"));
        for bad in [
            "",
            "mysql://db/ledger",
            "ledger",
            "postgresql://db:notaport/x",
        ] {
            let error = DatabaseUrl::parse(bad).unwrap_err();
            assert!(
                matches!(error, LedgerError::BadDatabaseUrl { .. }),
                "{bad:?}: {error}"
            );
        }
    }
}
