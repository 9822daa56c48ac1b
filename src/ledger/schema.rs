//! The SQLite schema: the event log and the projection tables kept beside it.

/// Bumped when the schema changes; stored in `meta`.
pub const SCHEMA_VERSION: i64 = 1;

/// The event log. `position` is the rowid: gapless from 1, enforced on append.
pub const LOG_TABLES: &str = "
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
CREATE INDEX IF NOT EXISTS events_by_time ON events (recorded_at_us);
";

/// Projections: derived from the log, rebuilt by replay, compared by `verify`.
/// The `*_totals` tables keep one row per change, so a total as of any position is
/// one index lookup (the last row at or before it).
pub const PROJECTION_TABLES: &str = "
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
    reference  TEXT    NOT NULL,
    position   INTEGER NOT NULL,
    kind       INTEGER NOT NULL,
    agreement  TEXT    NOT NULL,
    corrects   TEXT,
    amount_ore INTEGER NOT NULL,
    net_ore    INTEGER,
    PRIMARY KEY (kommune, reference)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entries_by_position ON entries (kommune, position);
CREATE TABLE IF NOT EXISTS agreement_totals (
    agreement     TEXT    NOT NULL,
    position      INTEGER NOT NULL,
    kommune       INTEGER NOT NULL,
    withheld_ore  INTEGER NOT NULL,
    corrected_ore INTEGER NOT NULL,
    entries       INTEGER NOT NULL,
    last_payout   INTEGER,
    PRIMARY KEY (agreement, position)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS kommune_totals (
    kommune       INTEGER NOT NULL,
    position      INTEGER NOT NULL,
    withheld_ore  INTEGER NOT NULL,
    corrected_ore INTEGER NOT NULL,
    entries       INTEGER NOT NULL,
    last_payout   INTEGER,
    PRIMARY KEY (kommune, position)
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
pub const PROJECTION_ORDER: &[(&str, &str)] = &[
    ("agreements", "agreement"),
    ("entries", "kommune, reference"),
    ("agreement_totals", "agreement, position"),
    ("kommune_totals", "kommune, position"),
    ("files", "kommune, sequence"),
    ("deliveries", "position"),
];
