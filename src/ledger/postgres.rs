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

use super::sql::{Addition, Owned, Row, Value};
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

/// Each agreement's data key, wrapped under the key file (`keys`); not part of
/// the log and not a projection: a replay cannot make it, and erasure destroys it.
/// `ANALYZE` (autovacuum's too) would copy sample values of `wrapped` into
/// `pg_statistic`, where an erased key would outlive its row: its statistics are
/// never collected.
pub(crate) const KEYS_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS subject_keys (
    agreement       text PRIMARY KEY,
    wrapped         bytea,
    erased_at_us    bigint,
    erased_position bigint
);
ALTER TABLE subject_keys ALTER COLUMN wrapped SET STATISTICS 0;
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

/// A database URL as given, the connection settings parsed from it, and how a
/// ledger on it rides out a failover (`[database]` in the configuration file).
#[derive(Clone)]
pub struct DatabaseUrl {
    text: String,
    config: Config,
    /// How long a command that lost its connection keeps trying to reach a
    /// primary again (`[database] failover_wait_secs`).
    failover_wait: Duration,
    /// Whether writes are refused while the primary has no synchronous standby
    /// (`[database] require_synchronous`; by default, when the URL names more than
    /// one host).
    require_synchronous: bool,
}

/// How long a command waits for a new primary after losing its connection, by
/// default (`[database] failover_wait_secs`).
pub const DEFAULT_FAILOVER_WAIT: Duration = Duration::from_secs(60);

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
        let require_synchronous = config.get_hosts().len() > 1;
        Ok(DatabaseUrl {
            text: trimmed.to_string(),
            config,
            failover_wait: DEFAULT_FAILOVER_WAIT,
            require_synchronous,
        })
    }

    /// This URL with `[database]`'s failover settings: how long to wait for a new
    /// primary, and whether to require a synchronous standby (`None`: only when
    /// the URL names more than one host).
    pub fn with_failover(mut self, wait: Duration, require_synchronous: Option<bool>) -> Self {
        self.failover_wait = wait;
        if let Some(require) = require_synchronous {
            self.require_synchronous = require;
        }
        self
    }

    /// How long a command waits for a new primary after losing its connection.
    pub fn failover_wait(&self) -> Duration {
        self.failover_wait
    }

    /// Whether writes need a synchronous standby attached to the primary.
    pub fn requires_synchronous(&self) -> bool {
        self.require_synchronous
    }

    /// How many hosts the URL names (more than one: a primary and its standbys).
    pub fn host_count(&self) -> usize {
        self.config.get_hosts().len()
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
    /// With more than one host (a primary and its standbys), a command that
    /// starts during a failover waits for a primary as a running one does
    /// ([`DatabaseUrl::connect_until`]); with one host it fails at once, so that a
    /// wrong URL is said without delay.
    pub fn connect_as(&self, name: Option<&str>) -> Result<Client, LedgerError> {
        if self.host_count() > 1 {
            self.connect_named_until(name, Instant::now() + self.failover_wait)
        } else {
            self.connect_once(name)
        }
    }

    fn connect_once(&self, name: Option<&str>) -> Result<Client, LedgerError> {
        let mut config = self.config.clone();
        if let Some(name) = name {
            config.application_name(name);
        }
        config.connect(NoTls).map_err(|error| LedgerError::Connect {
            target: self.describe(),
            reason: connect_reason(&error),
        })
    }

    /// A new connection, trying again until `deadline` while none of the URL's
    /// hosts accepts one (a failover in progress: the old primary gone, the new one
    /// not yet promoted). The first refusal is logged; the last one is the error.
    pub fn connect_until(&self, deadline: Instant) -> Result<Client, LedgerError> {
        self.connect_named_until(None, deadline)
    }

    fn connect_named_until(
        &self,
        name: Option<&str>,
        deadline: Instant,
    ) -> Result<Client, LedgerError> {
        let mut pause = Duration::from_millis(50);
        let mut logged = false;
        loop {
            match self.connect_once(name) {
                Ok(client) => return Ok(client),
                Err(error) if Instant::now() >= deadline => return Err(error),
                Err(error) => {
                    if !logged {
                        tracing::warn!(%error, wait_s = deadline.saturating_duration_since(Instant::now()).as_secs(), "no primary accepts a connection yet; trying again (a failover in progress?)");
                        logged = true;
                    }
                    // A backoff between attempts, never past the deadline.
                    std::thread::sleep(
                        pause.min(deadline.saturating_duration_since(Instant::now())),
                    );
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
            }
        }
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
    /// Inserts not sent yet (see [`Session::insert_later`]), one group per
    /// statement in the order each first came.
    pending: RefCell<Vec<PendingInserts>>,
    /// Additions not sent yet (see [`Session::add_later`]): per kind, the summed
    /// delta of each key.
    additions: RefCell<Vec<PendingAdditions>>,
    url: DatabaseUrl,
}

/// The summed deltas of one kind of addition waiting to be sent.
struct PendingAdditions {
    addition: &'static Addition,
    deltas: HashMap<(i64, String), i64>,
}

/// The rows of one `INSERT … VALUES (…)` statement waiting to be sent.
struct PendingInserts {
    sql: &'static str,
    rows: Vec<Vec<Owned>>,
}

/// The most rows one multi-row insert carries: 512 rows of at most 16 values stay
/// far below PostgreSQL's 65,535 parameters, and rows go in chunks of powers of
/// two so that each statement has at most ten prepared forms.
const ROWS_PER_INSERT_MAX: usize = 512;

impl Session {
    pub(crate) fn connect(url: &DatabaseUrl) -> Result<Session, LedgerError> {
        Ok(Session {
            client: RefCell::new(url.connect()?),
            statements: RefCell::new(HashMap::new()),
            pending: RefCell::new(Vec::new()),
            additions: RefCell::new(Vec::new()),
            url: url.clone(),
        })
    }

    pub(crate) fn url(&self) -> &DatabaseUrl {
        &self.url
    }

    /// Connects again after the connection was lost (prepared statements are per
    /// connection, so they go too), trying until `deadline` (see
    /// [`DatabaseUrl::connect_until`]).
    pub(crate) fn reconnect(&self, deadline: Instant) -> Result<(), LedgerError> {
        let client = self.url.connect_until(deadline)?;
        *self.client.borrow_mut() = client;
        self.statements.borrow_mut().clear();
        self.discard_pending();
        Ok(())
    }

    /// Forgets what waits to be sent (the transaction it belonged to is gone).
    fn discard_pending(&self) {
        self.pending.borrow_mut().clear();
        self.additions.borrow_mut().clear();
    }

    /// Whether the client has seen the connection end (the server ended it, or
    /// the network did). The client notices only once it reads the end of the
    /// stream, which may come after the error that said so: see
    /// [`connection_ended`].
    pub(crate) fn is_closed(&self) -> bool {
        self.client.borrow().is_closed()
    }

    fn statement(&self, client: &mut Client, sql: &str) -> Result<Statement, LedgerError> {
        self.prepared(client, sql, || dollar_parameters(sql))
    }

    /// The statement cached under `key`, prepared from `text()` the first time.
    fn prepared(
        &self,
        client: &mut Client,
        key: &str,
        text: impl FnOnce() -> String,
    ) -> Result<Statement, LedgerError> {
        if let Some(statement) = self.statements.borrow().get(key) {
            return Ok(statement.clone());
        }
        let statement = client.prepare(&text())?;
        self.statements
            .borrow_mut()
            .insert(key.to_string(), statement.clone());
        Ok(statement)
    }

    /// Keeps one row of an `INSERT … VALUES (…)` to send with the others of the
    /// same statement (see [`Db::insert_later`](super::sql::Db::insert_later)).
    pub(crate) fn insert_later(
        &self,
        sql: &'static str,
        args: &[Value<'_>],
    ) -> Result<(), LedgerError> {
        let row: Vec<Owned> = args.iter().copied().map(Owned::of).collect();
        let mut pending = self.pending.borrow_mut();
        match pending
            .iter_mut()
            .find(|group| std::ptr::eq(group.sql, sql))
        {
            Some(group) => group.rows.push(row),
            None => pending.push(PendingInserts {
                sql,
                rows: vec![row],
            }),
        }
        Ok(())
    }

    /// Keeps one addition to send with the others of its kind (see
    /// [`Db::add_later`](super::sql::Db::add_later)).
    pub(crate) fn add_later(
        &self,
        addition: &'static Addition,
        number: i64,
        text: &str,
        delta: i64,
    ) -> Result<(), LedgerError> {
        let mut additions = self.additions.borrow_mut();
        let at = match additions
            .iter()
            .position(|group| std::ptr::eq(group.addition, addition))
        {
            Some(at) => at,
            None => {
                additions.push(PendingAdditions {
                    addition,
                    deltas: HashMap::new(),
                });
                additions.len() - 1
            }
        };
        let sum = additions[at]
            .deltas
            .entry((number, text.to_string()))
            .or_insert(0);
        *sum = sum
            .checked_add(delta)
            .ok_or_else(|| LedgerError::CorruptLedger {
                position: None,
                what: format!("the changes to the row ({number}, {text}) add up beyond 64 bits"),
            })?;
        Ok(())
    }

    /// Sends everything pending: first each insert statement's rows in multi-row
    /// inserts of [`ROWS_PER_INSERT_MAX`] rows or fewer, in the order they came,
    /// then each kind of addition in one statement.
    fn flush(&self, client: &mut Client) -> Result<(), LedgerError> {
        self.flush_inserts(client)?;
        let additions = std::mem::take(&mut *self.additions.borrow_mut());
        for group in additions {
            let mut numbers = Vec::with_capacity(group.deltas.len());
            let mut texts = Vec::with_capacity(group.deltas.len());
            let mut deltas = Vec::with_capacity(group.deltas.len());
            for ((number, text), delta) in group.deltas {
                numbers.push(number);
                texts.push(text);
                deltas.push(delta);
            }
            let statement = self.prepared(client, group.addition.many, || {
                group.addition.many.to_string()
            })?;
            client.execute(&statement, &[&numbers, &texts, &deltas])?;
        }
        Ok(())
    }

    fn flush_inserts(&self, client: &mut Client) -> Result<(), LedgerError> {
        let pending = std::mem::take(&mut *self.pending.borrow_mut());
        for group in pending {
            let template = ValuesTemplate::of(group.sql)?;
            let mut rows = group.rows.as_slice();
            while !rows.is_empty() {
                let count = chunk_rows(rows.len());
                let (chunk, rest) = rows.split_at(count);
                rows = rest;
                let key = format!("{count} rows of {}", group.sql);
                let statement = self.prepared(client, &key, || template.rows(count))?;
                let mut params: Vec<Value<'_>> = Vec::with_capacity(count * template.arity);
                for row in chunk {
                    if row.len() != template.arity {
                        return Err(LedgerError::CorruptLedger {
                            position: None,
                            what: format!(
                                "an insert was given {} values for {} parameters (a program error): {}",
                                row.len(),
                                template.arity,
                                group.sql
                            ),
                        });
                    }
                    params.extend(row.iter().map(Owned::as_value));
                }
                let params: Vec<&(dyn ToSql + Sync)> = params
                    .iter()
                    .map(|value| value as &(dyn ToSql + Sync))
                    .collect();
                client.execute(&statement, &params)?;
            }
        }
        Ok(())
    }

    /// The client, with every pending insert sent: what the next statement sees.
    fn flushed_client(&self) -> Result<std::cell::RefMut<'_, Client>, LedgerError> {
        let mut client = self.client()?;
        self.flush(&mut client)?;
        Ok(client)
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

    pub(crate) fn execute(&self, sql: &str, args: &[Value<'_>]) -> Result<u64, LedgerError> {
        let mut client = self.flushed_client()?;
        let statement = self.statement(&mut client, sql)?;
        let params: Vec<&(dyn ToSql + Sync)> = args
            .iter()
            .map(|value| value as &(dyn ToSql + Sync))
            .collect();
        Ok(client.execute(&statement, &params)?)
    }

    /// Runs statements without parameters, after the pending ones.
    pub(crate) fn batch(&self, sql: &str) -> Result<(), LedgerError> {
        Ok(self.flushed_client()?.batch_execute(sql)?)
    }

    /// Rolls the transaction back; what was waiting to be sent goes with it.
    pub(crate) fn rollback(&self) -> Result<(), LedgerError> {
        self.discard_pending();
        Ok(self.client()?.batch_execute("ROLLBACK")?)
    }

    /// Runs a PostgreSQL-only query (with `$n` parameters, arrays among them) and
    /// calls `visit` with each row; pending inserts are sent first.
    fn query_arrays(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        visit: &mut dyn FnMut(&Row<'_>) -> Result<(), LedgerError>,
    ) -> Result<(), LedgerError> {
        use postgres::fallible_iterator::FallibleIterator;
        let mut client = self.flushed_client()?;
        let statement = self.prepared(&mut client, sql, || sql.to_string())?;
        let mut rows = client.query_raw(&statement, params.iter().copied())?;
        while let Some(row) = rows.next()? {
            visit(&Row::Postgres(&row))?;
        }
        Ok(())
    }

    pub(crate) fn query_each(
        &self,
        sql: &str,
        args: &[Value<'_>],
        visit: &mut dyn FnMut(&Row<'_>) -> Result<(), LedgerError>,
    ) -> Result<(), LedgerError> {
        use postgres::fallible_iterator::FallibleIterator;
        let mut client = self.flushed_client()?;
        let statement = self.statement(&mut client, sql)?;
        let params = args.iter().map(|value| value as &(dyn ToSql + Sync));
        let mut rows = client.query_raw(&statement, params)?;
        while let Some(row) = rows.next()? {
            visit(&Row::Postgres(&row))?;
        }
        Ok(())
    }
}

/// What the primary says about its standbys: whether a commit that returns
/// is on a standby too (decision 0011).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replication {
    /// `synchronous_standby_names` (empty: no commit waits for a standby).
    pub standby_names: String,
    /// This session's `synchronous_commit` (`on` or `remote_apply` wait for the
    /// standby's flush; `remote_write`, `local` and `off` do not).
    pub synchronous_commit: String,
    /// Each standby `pg_stat_replication` lists: its `application_name` and
    /// `sync_state` (`sync`, `quorum`, `potential`, `async`; empty when this
    /// user may not see it: grant it `pg_monitor`).
    pub standbys: Vec<(String, String)>,
}

impl Replication {
    /// Why a commit that returned may be missing on the standby promoted next,
    /// or `None` when the primary keeps the promise (a synchronous standby is
    /// attached and this session's commits wait for its flush).
    pub fn shortfall(&self) -> Option<String> {
        if self.standby_names.trim().is_empty() {
            return Some(
                "synchronous_standby_names is empty: a commit returns before any standby has it"
                    .into(),
            );
        }
        if !matches!(self.synchronous_commit.as_str(), "on" | "remote_apply") {
            return Some(format!(
                "synchronous_commit is {:?}: a commit returns before the standby has flushed it (use on or remote_apply)",
                self.synchronous_commit
            ));
        }
        let attached = self
            .standbys
            .iter()
            .any(|(_, state)| matches!(state.as_str(), "sync" | "quorum"));
        if !attached {
            return Some(format!(
                "no synchronous standby is attached ({}): a commit would wait until one is",
                self.describe_standbys()
            ));
        }
        None
    }

    /// The standbys as `name (state)`, or "no standby connected".
    pub fn describe_standbys(&self) -> String {
        if self.standbys.is_empty() {
            return "no standby connected".into();
        }
        self.standbys
            .iter()
            .map(|(name, state)| {
                if state.is_empty() {
                    format!("{name} (state hidden: grant pg_monitor)")
                } else {
                    format!("{name} ({state})")
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The primary's replication as this session sees it (see [`Replication`]), in
/// one round trip: a write with `require_synchronous` asks it every time.
pub(crate) fn replication(session: &Session) -> Result<Replication, LedgerError> {
    let mut replication = Replication {
        standby_names: String::new(),
        synchronous_commit: String::new(),
        standbys: Vec::new(),
    };
    session.query_arrays(
        "SELECT current_setting('synchronous_standby_names'), current_setting('synchronous_commit'),
                r.application_name, COALESCE(r.sync_state, '')
         FROM (SELECT 1) AS one LEFT JOIN pg_stat_replication r ON true
         ORDER BY r.application_name",
        &[],
        &mut |row| {
            replication.standby_names = row.text(REPLICATION, 0)?.to_string();
            replication.synchronous_commit = row.text(REPLICATION, 1)?.to_string();
            if let Some(name) = row.opt_text(REPLICATION, 2)? {
                replication
                    .standbys
                    .push((name.to_string(), row.text(REPLICATION, 3)?.to_string()));
            }
            Ok(())
        },
    )?;
    Ok(replication)
}

const REPLICATION: super::sql::Source = super::sql::Source {
    table: "pg_stat_replication",
};

/// The registered agreements among `agreements`: (agreement, position, ended,
/// registration payload) per row, after every pending insert was sent.
pub(crate) fn prefetch_agreements(
    session: &Session,
    agreements: &[String],
    visit: &mut dyn FnMut(&Row<'_>) -> Result<(), LedgerError>,
) -> Result<(), LedgerError> {
    session.query_arrays(
        "SELECT a.agreement, a.position, a.ended, e.payload
         FROM unnest($1::text[]) AS wanted (agreement)
         JOIN agreements a ON a.agreement = wanted.agreement
         JOIN events e ON e.position = a.position",
        &[&agreements],
        visit,
    )
}

/// The `subject_keys` rows of `agreements`: (agreement, wrapped, erased_at_us,
/// erased_position) per row found.
pub(crate) fn prefetch_subject_keys(
    session: &Session,
    agreements: &[String],
    visit: &mut dyn FnMut(&Row<'_>) -> Result<(), LedgerError>,
) -> Result<(), LedgerError> {
    session.query_arrays(
        "SELECT k.agreement, k.wrapped, k.erased_at_us, k.erased_position
         FROM unnest($1::text[]) AS wanted (agreement)
         JOIN subject_keys k ON k.agreement = wanted.agreement",
        &[&agreements],
        visit,
    )
}

/// The entries among the (kommune, reference) `keys`: (kommune, reference,
/// position, kind, net_ore, payload) per row, after every pending insert was sent.
pub(crate) fn prefetch_entries(
    session: &Session,
    keys: &[(u16, String)],
    visit: &mut dyn FnMut(&Row<'_>) -> Result<(), LedgerError>,
) -> Result<(), LedgerError> {
    let kommuner: Vec<i64> = keys
        .iter()
        .map(|(kommune, _)| i64::from(*kommune))
        .collect();
    let references: Vec<&str> = keys
        .iter()
        .map(|(_, reference)| reference.as_str())
        .collect();
    session.query_arrays(
        "SELECT x.kommune, x.reference, x.position, x.kind, x.net_ore, e.payload
         FROM unnest($1::bigint[], $2::text[]) AS wanted (kommune, reference)
         JOIN entries x ON x.kommune = wanted.kommune AND x.reference = wanted.reference
         JOIN events e ON e.position = x.position",
        &[&kommuner, &references],
        visit,
    )
}

/// For each of `agreements` that has one, its totals row of the last block before
/// `block`: (agreement, withheld_ore, corrected_ore, entries, last_payout).
pub(crate) fn agreement_totals_before(
    session: &Session,
    agreements: &[&str],
    block: u64,
    visit: &mut dyn FnMut(&Row<'_>) -> Result<(), LedgerError>,
) -> Result<(), LedgerError> {
    let block =
        i64::try_from(block).map_err(|_| LedgerError::PositionOutOfRange { position: block })?;
    session.query_arrays(
        "SELECT wanted.agreement, t.withheld_ore, t.corrected_ore, t.entries, t.last_payout
         FROM unnest($1::text[]) AS wanted (agreement)
         CROSS JOIN LATERAL (
             SELECT withheld_ore, corrected_ore, entries, last_payout FROM agreement_totals
             WHERE agreement = wanted.agreement AND block < $2
             ORDER BY block DESC LIMIT 1
         ) t",
        &[&agreements, &block],
        visit,
    )
}

/// The largest power of two of rows, at most [`ROWS_PER_INSERT_MAX`], that
/// `left` rows fill.
fn chunk_rows(left: usize) -> usize {
    let mut count = ROWS_PER_INSERT_MAX;
    while count > left {
        count /= 2;
    }
    count.max(1)
}

/// An `INSERT … VALUES (…)` statement of the shared SQL, split to repeat its row.
struct ValuesTemplate {
    /// Everything up to and including `VALUES`.
    head: &'static str,
    /// The parenthesised row, with `?n` parameters.
    row: &'static str,
    /// Its highest parameter number: the values each row takes.
    arity: usize,
}

impl ValuesTemplate {
    fn of(sql: &'static str) -> Result<ValuesTemplate, LedgerError> {
        let not_one = || LedgerError::CorruptLedger {
            position: None,
            what: format!(
                "a delayed insert is not one INSERT … VALUES (…) (a program error): {sql}"
            ),
        };
        let at = sql.rfind("VALUES").ok_or_else(not_one)? + "VALUES".len();
        let (head, row) = sql.split_at(at);
        let row = row.trim();
        if !(sql.trim_start().starts_with("INSERT") && row.starts_with('(') && row.ends_with(')')) {
            return Err(not_one());
        }
        let arity = parameter_numbers(row).max().ok_or_else(not_one)?;
        Ok(ValuesTemplate { head, row, arity })
    }

    /// The statement for `count` rows, row `k`'s `?n` becoming `$(k * arity + n)`.
    fn rows(&self, count: usize) -> String {
        let mut out = String::with_capacity(self.head.len() + count * (self.row.len() + 16));
        out.push_str(self.head);
        for k in 0..count {
            out.push_str(if k == 0 { " " } else { ", " });
            let mut pieces = self.row.split('?');
            out.push_str(pieces.next().unwrap_or(""));
            for after in pieces {
                let digits = after
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(after.len());
                match after[..digits].parse::<usize>() {
                    Ok(number) => out.push_str(&format!("${}", k * self.arity + number)),
                    // Not a parameter: the `?` stays as it was.
                    Err(_) => out.push('?'),
                }
                out.push_str(&after[digits..]);
            }
        }
        out
    }
}

/// The numbers of the `?n` parameters in `sql`.
fn parameter_numbers(sql: &str) -> impl Iterator<Item = usize> + '_ {
    sql.split('?').skip(1).filter_map(|after| {
        let digits = after
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(after.len());
        after[..digits].parse().ok()
    })
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
    fn a_delayed_insert_repeats_its_row_with_numbers_of_its_own() {
        let template = ValuesTemplate::of(
            "INSERT INTO entries (kommune, position, kind, net_ore)\n VALUES (?1, ?2, 7, ?2, NULL)",
        )
        .expect("an insert");
        assert_eq!(template.arity, 2);
        assert_eq!(
            template.rows(3),
            "INSERT INTO entries (kommune, position, kind, net_ore)\n VALUES \
             ($1, $2, 7, $2, NULL), ($3, $4, 7, $4, NULL), ($5, $6, 7, $6, NULL)"
        );
        assert!(ValuesTemplate::of("UPDATE entries SET net_ore = ?1").is_err());
        assert!(ValuesTemplate::of("INSERT INTO t SELECT * FROM u").is_err());
    }

    #[test]
    fn delayed_inserts_go_in_chunks_of_powers_of_two() {
        let mut left = 1000;
        let mut chunks = Vec::new();
        while left > 0 {
            let count = chunk_rows(left);
            chunks.push(count);
            left -= count;
        }
        assert_eq!(chunks, [512, 256, 128, 64, 32, 8]);
        assert_eq!(chunk_rows(1), 1);
        assert_eq!(chunk_rows(100_000), ROWS_PER_INSERT_MAX);
    }

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
