//! The SF2520 file format: layout table, record writer, strict reader, format document.
//!
//! [`layout`] is the single source of byte positions; `writer` renders typed
//! records through it, `reader` checks and parses through it, and [`doc`] prints
//! it as `docs/sf2520-format.md`.

pub mod doc;
mod error;
mod fast;
pub mod layout;
mod lex;
mod reader;
mod render;
mod writer;

pub use error::{ReadError, ReadErrorKind, ReadErrors, WriteError};
pub use reader::{check_file, read_file, CheckedFile, ParsedDetail, ParsedFile};
pub use render::{render_record, FieldValue, RecordBytes};
pub use writer::{file_name, render_file, DetailRecord, FileHeader, FileSummary, FileWriter};
