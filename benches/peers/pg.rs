//! The PostgreSQL peer: a throwaway server in a temporary directory (unix socket
//! only, removed on drop, also on panic; started by the tests' harness,
//! tests/support/postgres.rs, with this comparison's settings), the same ingest done the way a careful
//! PostgreSQL user would (one transaction per batch, set-based statements), and the
//! same SF2520 files rendered by SQL and streamed out with `COPY ... TO STDOUT`.

use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use chrono::NaiveDate;
use postgres::Client;
use sf2520::domain::Command;
use sf2520::ledger::OfficialFile;

// The tests' PostgreSQL harness: its server start and stop serve here too; the rest
// of it (the tests' one server per process, test databases) is unused here.
#[allow(dead_code)]
#[path = "../../tests/support/postgres.rs"]
mod server;

pub(crate) use server::Server as PgServer;

/// The server settings of the comparison: durable commits (fsync, synchronous
/// commit, full page writes) with the memory and checkpoint spacing a careful
/// operator would give a bulk load.
const SETTINGS: &[(&str, &str)] = &[
    ("fsync", "on"),
    ("synchronous_commit", "on"),
    ("full_page_writes", "on"),
    ("shared_buffers", "512MB"),
    ("max_wal_size", "8GB"),
    ("checkpoint_timeout", "30min"),
    ("work_mem", "64MB"),
    ("jit", "off"),
];

/// A throwaway server for the run; stopped and removed when dropped.
pub(crate) fn start() -> PgServer {
    PgServer::start(&find_bin(), SETTINGS)
}

/// `/usr/lib/postgresql/<version>/bin`, installing Debian's `postgresql` if needed.
fn find_bin() -> PathBuf {
    if let Some(bin) = server::installed_bin() {
        return bin;
    }
    eprintln!("peers: PostgreSQL server not found; installing Debian's postgresql package");
    let status = Process::new("sh")
        .args([
            "-c",
            "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql",
        ])
        .status()
        .expect("run apt-get");
    assert!(status.success(), "apt-get install postgresql failed");
    server::installed_bin().expect("initdb still missing after installing postgresql")
}

/// The peer's schema: the same facts our projections keep, with the same checks a
/// withholding passes (agreement known, of this kommune and CPR; positive amount;
/// period in order; reference unique per kommune; net never below zero).
const SCHEMA: &str = "
CREATE TABLE agreements (
    agreement  text PRIMARY KEY,
    kommune    int  NOT NULL,
    cpr        text NOT NULL,
    valid_from date NOT NULL,
    valid_to   date,
    UNIQUE (agreement, kommune, cpr)
);
CREATE TABLE entries (
    seq         bigint   NOT NULL,
    kommune     int      NOT NULL,
    reference   text     NOT NULL,
    kind        smallint NOT NULL,
    agreement   text     NOT NULL,
    cpr         text     NOT NULL,
    payout_date date     NOT NULL,
    period_from date     NOT NULL,
    period_to   date     NOT NULL,
    amount_ore  bigint   NOT NULL,
    corrects    text,
    net_ore     bigint CHECK (net_ore >= 0),
    PRIMARY KEY (kommune, reference),
    FOREIGN KEY (agreement, kommune, cpr) REFERENCES agreements (agreement, kommune, cpr),
    CHECK (kind = 2 OR amount_ore > 0),
    CHECK (period_from <= period_to)
);
CREATE INDEX entries_by_seq ON entries (kommune, seq);
CREATE TABLE agreement_totals (
    agreement     text   PRIMARY KEY,
    withheld_ore  bigint NOT NULL,
    corrected_ore bigint NOT NULL,
    entries       bigint NOT NULL
);
CREATE TABLE kommune_totals (
    kommune       int    PRIMARY KEY,
    withheld_ore  bigint NOT NULL,
    corrected_ore bigint NOT NULL,
    entries       bigint NOT NULL
);
";

const INSERT_AGREEMENTS: &str = "
INSERT INTO agreements (agreement, kommune, cpr, valid_from)
SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::date[])";

const INSERT_WITHHOLDINGS: &str = "
WITH w AS (
    SELECT * FROM unnest($1::bigint[], $2::int[], $3::text[], $4::text[], $5::text[],
                         $6::date[], $7::date[], $8::date[], $9::bigint[])
        AS u(seq, kommune, reference, agreement, cpr, payout_date, period_from, period_to, amount_ore)
), inserted AS (
    INSERT INTO entries (seq, kommune, reference, kind, agreement, cpr, payout_date,
                         period_from, period_to, amount_ore, corrects, net_ore)
    SELECT seq, kommune, reference, 1, agreement, cpr, payout_date, period_from, period_to,
           amount_ore, NULL, amount_ore
    FROM w
    RETURNING agreement, kommune, amount_ore
), by_agreement AS (
    INSERT INTO agreement_totals AS t (agreement, withheld_ore, corrected_ore, entries)
    SELECT agreement, sum(amount_ore), 0, count(*) FROM inserted GROUP BY agreement
    ON CONFLICT (agreement) DO UPDATE SET
        withheld_ore = t.withheld_ore + excluded.withheld_ore,
        entries = t.entries + excluded.entries
)
INSERT INTO kommune_totals AS t (kommune, withheld_ore, corrected_ore, entries)
SELECT kommune, sum(amount_ore), 0, count(*) FROM inserted GROUP BY kommune
ON CONFLICT (kommune) DO UPDATE SET
    withheld_ore = t.withheld_ore + excluded.withheld_ore,
    entries = t.entries + excluded.entries";

/// A correction updates its withholding's net (the CHECK refuses a negative one),
/// becomes an entry carrying the withholding's agreement, CPR and dates, and moves
/// the totals. A correction whose withholding is missing returns no row, which the
/// caller detects by the count.
const INSERT_CORRECTIONS: &str = "
WITH c AS (
    SELECT * FROM unnest($1::bigint[], $2::int[], $3::text[], $4::text[], $5::bigint[])
        AS u(seq, kommune, reference, corrects, amount_ore)
), corrected AS (
    UPDATE entries e SET net_ore = e.net_ore + c.amount_ore
    FROM c
    WHERE e.kommune = c.kommune AND e.reference = c.corrects AND e.kind = 1
    RETURNING c.seq, c.kommune, c.reference, e.agreement, e.cpr, e.payout_date,
              e.period_from, e.period_to, c.amount_ore, c.corrects
), inserted AS (
    INSERT INTO entries (seq, kommune, reference, kind, agreement, cpr, payout_date,
                         period_from, period_to, amount_ore, corrects, net_ore)
    SELECT seq, kommune, reference, 2, agreement, cpr, payout_date, period_from, period_to,
           amount_ore, corrects, NULL
    FROM corrected
    RETURNING agreement, kommune, amount_ore
), by_agreement AS (
    INSERT INTO agreement_totals AS t (agreement, withheld_ore, corrected_ore, entries)
    SELECT agreement, 0, sum(amount_ore), count(*) FROM inserted GROUP BY agreement
    ON CONFLICT (agreement) DO UPDATE SET
        corrected_ore = t.corrected_ore + excluded.corrected_ore,
        entries = t.entries + excluded.entries
), by_kommune AS (
    INSERT INTO kommune_totals AS t (kommune, withheld_ore, corrected_ore, entries)
    SELECT kommune, 0, sum(amount_ore), count(*) FROM inserted GROUP BY kommune
    ON CONFLICT (kommune) DO UPDATE SET
        corrected_ore = t.corrected_ore + excluded.corrected_ore,
        entries = t.entries + excluded.entries
)
SELECT count(*) FROM inserted";

/// Creates the schema and registers the agreements (not timed: agreements are
/// registered up front on both sides).
pub(crate) fn prepare(client: &mut Client, agreement_batches: &[Vec<Command>]) {
    client
        .batch_execute(SCHEMA)
        .expect("create the peer schema");
    let statement = client.prepare(INSERT_AGREEMENTS).expect("prepare");
    for batch in agreement_batches {
        let mut refs = Vec::new();
        let mut kommuner = Vec::new();
        let mut cprs = Vec::new();
        let mut from = Vec::new();
        for command in batch {
            let Command::RegisterAgreement(a) = command else {
                panic!("agreement batches hold registrations only");
            };
            refs.push(a.agreement.as_str().to_string());
            kommuner.push(i32::from(a.kommune.number()));
            cprs.push(a.cpr.plain().expect("generated plain").digits().to_string());
            from.push(a.valid_from);
        }
        let mut tx = client.transaction().expect("begin");
        tx.execute(&statement, &[&refs, &kommuner, &cprs, &from])
            .expect("insert agreements");
        tx.commit().expect("commit");
    }
}

/// Column arrays of one batch, in input order (`seq` keeps the log order).
#[derive(Default)]
struct Withholdings {
    seq: Vec<i64>,
    kommune: Vec<i32>,
    reference: Vec<String>,
    agreement: Vec<String>,
    cpr: Vec<String>,
    payout_date: Vec<NaiveDate>,
    period_from: Vec<NaiveDate>,
    period_to: Vec<NaiveDate>,
    amount_ore: Vec<i64>,
}

#[derive(Default)]
struct Corrections {
    seq: Vec<i64>,
    kommune: Vec<i32>,
    reference: Vec<String>,
    corrects: Vec<String>,
    amount_ore: Vec<i64>,
}

/// Prepared statements of the ingest.
pub(crate) struct Ingest {
    withholdings: postgres::Statement,
    corrections: postgres::Statement,
    next_seq: i64,
}

impl Ingest {
    pub(crate) fn new(client: &mut Client) -> Ingest {
        Ingest {
            withholdings: client.prepare(INSERT_WITHHOLDINGS).expect("prepare"),
            corrections: client.prepare(INSERT_CORRECTIONS).expect("prepare"),
            next_seq: 1,
        }
    }

    /// One batch in one transaction; returns after the commit (synchronous_commit=on,
    /// so the WAL is flushed to disk first).
    pub(crate) fn batch(&mut self, client: &mut Client, commands: &[Command]) {
        let mut w = Withholdings::default();
        let mut c = Corrections::default();
        for command in commands {
            let seq = self.next_seq;
            self.next_seq += 1;
            match command {
                Command::RecordWithholding(x) => {
                    w.seq.push(seq);
                    w.kommune.push(i32::from(x.kommune.number()));
                    w.reference.push(x.reference.as_str().to_string());
                    w.agreement.push(x.agreement.as_str().to_string());
                    w.cpr
                        .push(x.cpr.plain().expect("generated plain").digits().to_string());
                    w.payout_date.push(x.payout_date);
                    w.period_from.push(x.period_from);
                    w.period_to.push(x.period_to);
                    w.amount_ore.push(x.amount.ore());
                }
                Command::CorrectWithholding(x) => {
                    c.seq.push(seq);
                    c.kommune.push(i32::from(x.kommune.number()));
                    c.reference.push(x.reference.as_str().to_string());
                    c.corrects.push(x.corrects.as_str().to_string());
                    c.amount_ore.push(x.amount.ore());
                }
                other => panic!("entry batches hold entries only, not {other:?}"),
            }
        }
        let mut tx = client.transaction().expect("begin");
        tx.execute(
            &self.withholdings,
            &[
                &w.seq,
                &w.kommune,
                &w.reference,
                &w.agreement,
                &w.cpr,
                &w.payout_date,
                &w.period_from,
                &w.period_to,
                &w.amount_ore,
            ],
        )
        .expect("insert withholdings");
        if !c.seq.is_empty() {
            let inserted: i64 = tx
                .query_one(
                    &self.corrections,
                    &[&c.seq, &c.kommune, &c.reference, &c.corrects, &c.amount_ore],
                )
                .expect("insert corrections")
                .get(0);
            assert_eq!(
                usize::try_from(inserted).ok(),
                Some(c.seq.len()),
                "a correction named a missing withholding"
            );
        }
        tx.commit().expect("commit");
    }
}

/// The SQL that renders one official file: start record from the values our
/// `FileExported` recorded, one `010` per entry in log order, the `999` with the
/// control sums. Lines come without the CR (see [`copy_file`]).
fn file_query(file: &OfficialFile) -> String {
    let kommune = file.kommune.number();
    let sequence = file.sequence;
    let created_s = file.created_at_us.div_euclid(1_000_000);
    let test = if file.test_marker { "T" } else { " " };
    format!(
        "COPY (
  SELECT line FROM (
    SELECT 0 AS part, 0::bigint AS n,
      '000SF2520031' || lpad('{kommune}', 4, '0') || lpad('{sequence}', 6, '0')
      || to_char(to_timestamp({created_s}) AT TIME ZONE 'UTC', 'YYYYMMDDHH24MISS')
      || to_char(to_timestamp({created_s}) AT TIME ZONE 'UTC', 'YYYYMMDDHH24MISS')
      || '{test}' || repeat(' ', 77) AS line
    UNION ALL
    SELECT 1, n,
      '010' || lpad(n::text, 7, '0') || lpad(kommune::text, 4, '0') || cpr
      || rpad(agreement, 15) || lpad(kind::text, 2, '0')
      || to_char(payout_date, 'YYYYMMDD') || to_char(period_from, 'YYYYMMDD')
      || to_char(period_to, 'YYYYMMDD')
      || CASE WHEN amount_ore < 0 THEN '-' ELSE '+' END
      || lpad(abs(amount_ore)::text, 13, '0') || rpad(reference, 20)
      || rpad(coalesce(corrects, ''), 20) || repeat(' ', 9)
    FROM (SELECT row_number() OVER (ORDER BY seq) AS n, * FROM entries
          WHERE kommune = {kommune} ORDER BY seq) d
    UNION ALL
    SELECT 2, 0,
      '999' || lpad('{kommune}', 4, '0') || lpad('{sequence}', 6, '0')
      || lpad(count::text, 7, '0') || lpad(plus::text, 15, '0') || lpad(minus::text, 15, '0')
      || CASE WHEN plus - minus < 0 THEN '-' ELSE '+' END
      || lpad(abs(plus - minus)::text, 15, '0') || repeat(' ', 62)
    FROM (SELECT count(*) AS count,
                 coalesce(sum(amount_ore) FILTER (WHERE amount_ore > 0), 0) AS plus,
                 coalesce(-sum(amount_ore) FILTER (WHERE amount_ore < 0), 0) AS minus
          FROM entries WHERE kommune = {kommune}) s
  ) lines ORDER BY part, n
) TO STDOUT"
    )
}

/// Streams one file out of PostgreSQL into `path` and fsyncs it. `COPY`'s text
/// format ends rows with LF and would escape a CR inside a row, so the CR of each
/// CR LF is put back here: the one byte of the file the SQL does not make.
fn copy_file(client: &mut Client, file: &OfficialFile, path: &Path) -> u64 {
    client
        .batch_execute("SET client_encoding = 'LATIN1'")
        .expect("client encoding");
    let mut reader = client
        .copy_out(file_query(file).as_str())
        .expect("COPY TO STDOUT");
    let out = File::create(path).expect("create peer file");
    let mut writer = BufWriter::with_capacity(256 * 1024, out);
    let mut chunk = vec![0; 256 * 1024];
    let mut bytes = 0u64;
    loop {
        let read = reader.read(&mut chunk).expect("read COPY data");
        if read == 0 {
            break;
        }
        let mut rest = &chunk[..read];
        while let Some(newline) = rest.iter().position(|&byte| byte == b'\n') {
            writer.write_all(&rest[..newline]).expect("write");
            writer.write_all(b"\r\n").expect("write");
            rest = &rest[newline + 1..];
        }
        writer.write_all(rest).expect("write");
        bytes += u64::try_from(read).expect("fits the target type");
    }
    let out = writer.into_inner().expect("flush peer file");
    out.sync_all().expect("fsync peer file");
    bytes
}

/// Renders every file with `workers` connections in parallel (as many as our
/// export uses), each file fsynced like ours.
pub(crate) fn export(server: &PgServer, files: &[OfficialFile], dir: &Path, workers: usize) {
    fs::create_dir_all(dir).expect("peer outbox");
    let next = AtomicUsize::new(0);
    let clients: Mutex<Vec<Client>> =
        Mutex::new((0..workers).map(|_| server.connect("postgres")).collect());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                let mut client = clients.lock().expect("clients").pop().expect("a client");
                while let Some(file) = files.get(next.fetch_add(1, Ordering::Relaxed)) {
                    copy_file(&mut client, file, &dir.join(&file.file_name));
                }
            });
        }
    });
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .expect("fsync peer outbox");
}
