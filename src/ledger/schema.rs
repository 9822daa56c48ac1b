//! The SQLite schema: the event log and the projection tables kept beside it.

/// Bumped when the schema changes; stored in `meta`. Only the projection tables
/// have changed so far, so an older ledger is brought up to date by rebuilding
/// them from its log (`store::rebuild_projections`); the log's bytes never change.
///
/// 1: one totals row per entry, an index on `events.recorded_at_us`.
/// 2: one totals row per agreement (and kommune) per block of positions
///    ([`DEFAULT_TOTALS_BLOCK`]); entries keyed by (kommune, position); no time index.
pub(super) const SCHEMA_VERSION: i64 = 2;

/// Positions per totals block in a new ledger (stored in `meta` as `totals_block`,
/// fixed for the ledger's life). A total as of a position reads one row per block
/// and at most this many entries of one kommune; ingest writes one totals row per
/// agreement touched in a block, at the block's end.
pub const DEFAULT_TOTALS_BLOCK: u64 = 262_144;

/// The event log. `position` is the rowid: gapless from 1, enforced on append.
pub(super) const LOG_TABLES: &str = "
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    position       INTEGER PRIMARY KEY,
    event_id       BLOB    NOT NULL,
    stream         TEXT    NOT NULL,
    event_type     TEXT    NOT NULL,
    schema_version INTEGER NOT NULL,
    recorded_at_us INTEGER NOT NULL,
    payload        BLOB    NOT NULL,
    hash           BLOB    NOT NULL
);
";

/// Each agreement's data key, wrapped under the key file (`keys`); not part of
/// the log and not a projection: a replay cannot make it, and erasure destroys it
/// (the row keeps only when and in which event). Created only in a ledger that
/// seals personal data.
pub(super) const KEYS_TABLES: &str = "
CREATE TABLE IF NOT EXISTS subject_keys (
    agreement       TEXT PRIMARY KEY,
    wrapped         BLOB,
    erased_at_us    INTEGER,
    erased_position INTEGER
) WITHOUT ROWID;
";

/// Projections: derived from the log, rebuilt by replay, compared by `verify`.
///
/// `entries` is keyed by (kommune, position), the order a file lists them in, with
/// a unique index for lookups by reference. The `*_totals` tables hold one row per
/// agreement (kommune) per block of positions in which it had entries: its totals
/// through the end of that block. A total as of position P is the last row of a
/// block before P's block plus the entries of P's block up to P (see
/// `projection::agreement_totals`). Ingest thus writes a block's totals rows once,
/// in key order, when the block is complete, rather than one row per entry into
/// an index ordered by agreement; that row per entry dirtied a page for nearly
/// every entry of a batch, and was half of what ingest cost.
pub(super) const PROJECTION_TABLES: &str = "
CREATE TABLE IF NOT EXISTS agreements (
    agreement  TEXT PRIMARY KEY,
    position   INTEGER NOT NULL,
    kommune    INTEGER NOT NULL,
    valid_from INTEGER NOT NULL,
    valid_to   INTEGER,
    ended      INTEGER
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS entries (
    kommune    INTEGER NOT NULL,
    position   INTEGER NOT NULL,
    reference  TEXT    NOT NULL,
    kind       INTEGER NOT NULL,
    agreement  TEXT    NOT NULL,
    corrects   TEXT,
    amount_ore INTEGER NOT NULL,
    net_ore    INTEGER,
    payout     INTEGER,
    PRIMARY KEY (kommune, position)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS entries_by_reference ON entries (kommune, reference);
CREATE TABLE IF NOT EXISTS agreement_totals (
    agreement     TEXT    NOT NULL,
    block         INTEGER NOT NULL,
    kommune       INTEGER NOT NULL,
    withheld_ore  INTEGER NOT NULL,
    corrected_ore INTEGER NOT NULL,
    entries       INTEGER NOT NULL,
    last_payout   INTEGER,
    PRIMARY KEY (agreement, block)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS kommune_totals (
    kommune       INTEGER NOT NULL,
    block         INTEGER NOT NULL,
    withheld_ore  INTEGER NOT NULL,
    corrected_ore INTEGER NOT NULL,
    entries       INTEGER NOT NULL,
    last_payout   INTEGER,
    PRIMARY KEY (kommune, block)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS files (
    kommune                  INTEGER NOT NULL,
    sequence                 INTEGER NOT NULL,
    position                 INTEGER NOT NULL,
    file_id                  BLOB    NOT NULL,
    file_name                TEXT    NOT NULL,
    created_at_us            INTEGER NOT NULL,
    previous_cutoff_position INTEGER NOT NULL,
    cutoff_position          INTEGER NOT NULL,
    test_marker              INTEGER NOT NULL,
    record_count             INTEGER NOT NULL,
    plus_ore                 INTEGER NOT NULL,
    minus_ore                INTEGER NOT NULL,
    sha256                   BLOB    NOT NULL,
    PRIMARY KEY (kommune, sequence)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS deliveries (
    position          INTEGER PRIMARY KEY,
    kommune           INTEGER NOT NULL,
    sequence          INTEGER NOT NULL,
    kind              TEXT    NOT NULL,
    senders_file_id   BLOB    NOT NULL,
    detail            TEXT    NOT NULL,
    accepted          INTEGER
);
CREATE INDEX IF NOT EXISTS deliveries_by_file ON deliveries (kommune, sequence, position);
";

/// The projection tables with their ordering keys, for comparison after a replay.
pub(super) const PROJECTION_ORDER: &[(&str, &str)] = &[
    ("agreements", "agreement"),
    ("entries", "kommune, position"),
    ("agreement_totals", "agreement, block"),
    ("kommune_totals", "kommune, block"),
    ("files", "kommune, sequence"),
    ("deliveries", "position"),
];
