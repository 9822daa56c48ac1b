//! The outbox: files written atomically (temporary name, fsync, rename, fsync of
//! the directory), owner-only, hashed while written; orphans removed.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::ExportError;
use crate::ledger::create_private_dir;

/// A writer that hashes and counts what passes through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// The inner writer, the SHA-256 and the byte count of everything written.
    pub fn finish(self) -> (W, [u8; 32], u64) {
        (self.inner, self.hasher.finalize().into(), self.bytes)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.hasher.update(&buf[..written]);
        self.bytes += u64::try_from(written).unwrap_or(u64::MAX);
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A file as written: where, its SHA-256 and size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrittenFile {
    pub path: PathBuf,
    pub sha256: [u8; 32],
    pub size_bytes: u64,
}

/// The writer `write_atomically` hands to its `render` closure.
pub type OutboxWriter = HashingWriter<BufWriter<File>>;

/// Writes `dir/name` so that it either does not exist or is complete: `render`
/// writes into `dir/.name.partial`, which is fsynced, renamed and the directory
/// fsynced. The file is created `0600`, the directory `0700` if missing.
pub fn write_atomically<T>(
    dir: &Path,
    name: &str,
    render: impl FnOnce(&mut OutboxWriter) -> Result<T, ExportError>,
) -> Result<(T, WrittenFile), ExportError> {
    let mut file = PartialFile::create(dir, name, 256 * 1024)?;
    let value = render(file.writer())?;
    let written = file.commit()?;
    sync_dir(dir)?;
    Ok((value, written))
}

/// A file on its way into the outbox: written as `dir/.name.partial` until
/// [`PartialFile::commit`] fsyncs and renames it. [`write_atomically`] for one file;
/// the batch export holds many open at once and fsyncs the directory once after
/// committing them all.
pub struct PartialFile {
    dir: PathBuf,
    name: String,
    partial: PathBuf,
    writer: OutboxWriter,
}

impl PartialFile {
    /// Creates `dir/.name.partial` (`0600`; `dir` `0700` if missing), buffered by
    /// `buffer_bytes`.
    pub fn create(dir: &Path, name: &str, buffer_bytes: usize) -> Result<Self, ExportError> {
        create_private_dir(dir)?;
        let partial = dir.join(format!(".{name}.partial"));
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&partial)
            .map_err(ExportError::io("cannot create", &partial))?;
        Ok(PartialFile {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            partial,
            writer: HashingWriter::new(BufWriter::with_capacity(buffer_bytes, file)),
        })
    }

    pub fn writer(&mut self) -> &mut OutboxWriter {
        &mut self.writer
    }

    /// Flushes, fsyncs and renames the file into place. The rename is durable only
    /// once the caller has fsynced the directory ([`sync_dir`]).
    pub fn commit(self) -> Result<WrittenFile, ExportError> {
        let PartialFile {
            dir,
            name,
            partial,
            mut writer,
        } = self;
        writer
            .flush()
            .map_err(ExportError::io("cannot write", &partial))?;
        let (buffered, sha256, size_bytes) = writer.finish();
        let file = buffered
            .into_inner()
            .map_err(|error| ExportError::io("cannot write", &partial)(error.into_error()))?;
        file.sync_all()
            .map_err(ExportError::io("cannot fsync", &partial))?;
        drop(file);
        let path = dir.join(name);
        fs::rename(&partial, &path).map_err(ExportError::io("cannot rename into place", &path))?;
        Ok(WrittenFile {
            path,
            sha256,
            size_bytes,
        })
    }
}

/// Writes bytes atomically (see [`write_atomically`]).
pub fn write_bytes_atomically(
    dir: &Path,
    name: &str,
    bytes: &[u8],
) -> Result<WrittenFile, ExportError> {
    let path = dir.join(name);
    write_atomically(dir, name, |writer| {
        writer
            .write_all(bytes)
            .map_err(ExportError::io("cannot write", &path))
    })
    .map(|((), written)| written)
}

/// Makes a rename in `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<(), ExportError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(ExportError::io("cannot fsync directory", dir))
}

/// Removes SF2520 files in `dir` that the ledger does not know (left by a run
/// that died between writing a file and recording it) and unfinished `.partial`
/// files. Such a file is never official: the next run renders its løbenummer
/// afresh. Returns the names removed.
pub fn remove_orphans(
    dir: &Path,
    registered: &HashSet<String>,
) -> Result<Vec<String>, ExportError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(ExportError::io("cannot list", dir)(error)),
    };
    let mut removed = Vec::new();
    for entry in entries {
        let entry = entry.map_err(ExportError::io("cannot list", dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let partial = name.starts_with(".SF2520_") && name.ends_with(".partial");
        let orphan =
            name.starts_with("SF2520_") && name.ends_with(".txt") && !registered.contains(&name);
        if partial || orphan {
            let path = entry.path();
            fs::remove_file(&path).map_err(ExportError::io("cannot remove orphan", &path))?;
            tracing::warn!(file = %name, "removed an unrecorded file from the outbox; its løbenummer will be rendered again");
            removed.push(name);
        }
    }
    if !removed.is_empty() {
        sync_dir(dir)?;
    }
    Ok(removed)
}
