//! The outbox and the files written into it. Official files are staged under
//! names unique to their run and this ledger, fsynced, read back, recorded, and
//! only then renamed to their official names (record first, then publish). The
//! outbox is claimed by one ledger (a marker file with its identity); a file the
//! ledger did not write is never touched, and files its own interrupted runs left
//! are finished (recorded ones) or moved to a quarantine folder (the rest).

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, ErrorKind, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::ExportError;
use crate::ledger::{create_private_dir, ensure_private_dir, nofollow, ExportLock};

/// The marker that claims an outbox for one ledger.
pub const OUTBOX_MARKER: &str = ".sf2520-outbox";
/// Where files of this ledger's interrupted runs are moved (never official).
pub const QUARANTINE_DIR: &str = ".quarantine";
/// Where `sf2520 accept-loss --apply` moves official files whose record the
/// database lost (decision 0011).
pub const LOST_DIR: &str = ".lost";

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
        // A slice's length always fits in u64 on the targets we build for.
        self.bytes += u64::try_from(written).map_err(io::Error::other)?;
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

/// The writer a staged file is rendered through.
/// The hash sees what the buffer hands on, a buffer at a time: SHA-256 over
/// 64 KiB runs at the speed of its instructions, over each 130-byte record it
/// paid a call and a partial block per record.
pub type OutboxWriter = BufWriter<HashingWriter<File>>;

/// Where a run stages its files: a directory and a tag that makes every
/// temporary name its own, `.NAME.TAG.partial`. For an outbox the tag starts with
/// the ledger's identity, so a later run of the same ledger knows its own leftovers.
#[derive(Clone, Debug)]
pub struct Staging {
    dir: PathBuf,
    tag: String,
}

impl Staging {
    /// Staging in a directory that is not an outbox (`--as-of`, `--test`, a
    /// reconstructed file, the receipts' archive): created owner-only if missing.
    /// A directory that is a symbolic link is refused, never written through.
    pub fn plain(dir: &Path) -> Result<Staging, ExportError> {
        create_private_dir(dir)?;
        nofollow::not_a_link(dir).map_err(ExportError::io("cannot write into", dir))?;
        Ok(Staging {
            dir: dir.to_path_buf(),
            tag: format!("p{}-{}", std::process::id(), short_id()),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn temporary(&self, name: &str) -> PathBuf {
        self.dir.join(format!(".{name}.{}.partial", self.tag))
    }
}

fn short_id() -> String {
    Uuid::new_v4().simple().to_string()[..12].to_string()
}

/// A file on its way into a directory: rendered into its temporary name until
/// [`PartialFile::finish`] fsyncs it. Removed when dropped unfinished.
pub struct PartialFile {
    staged: Staged,
    writer: OutboxWriter,
}

impl PartialFile {
    /// Creates the temporary file of `name` (`0600`), buffered by `buffer_bytes`.
    pub fn create(staging: &Staging, name: &str, buffer_bytes: usize) -> Result<Self, ExportError> {
        let temporary = staging.temporary(name);
        let file = nofollow::create_new(&temporary)
            .map_err(ExportError::io("cannot create", &temporary))?;
        Ok(PartialFile {
            staged: Staged {
                dir: staging.dir.clone(),
                name: name.to_string(),
                temporary: Some(temporary),
                keep: false,
            },
            writer: BufWriter::with_capacity(buffer_bytes, HashingWriter::new(file)),
        })
    }

    pub fn writer(&mut self) -> &mut OutboxWriter {
        &mut self.writer
    }

    /// Flushes and fsyncs the file under its temporary name.
    pub fn finish(self) -> Result<StagedFile, ExportError> {
        let PartialFile { staged, mut writer } = self;
        let temporary = staged.temporary().to_path_buf();
        writer
            .flush()
            .map_err(ExportError::io("cannot write", &temporary))?;
        let hashing = writer
            .into_inner()
            .map_err(|error| ExportError::io("cannot write", &temporary)(error.into_error()))?;
        let (file, sha256, size_bytes) = hashing.finish();
        file.sync_all()
            .map_err(ExportError::io("cannot fsync", &temporary))?;
        Ok(StagedFile {
            staged,
            sha256,
            size_bytes,
        })
    }
}

/// A temporary file that is removed when dropped, unless it was published or
/// is kept for the next run ([`StagedFile::keep_for_next_run`]).
struct Staged {
    dir: PathBuf,
    name: String,
    temporary: Option<PathBuf>,
    /// Left in place when dropped: the file may be recorded, and only its
    /// temporary file tells the next run that it was never published.
    keep: bool,
}

impl Staged {
    fn temporary(&self) -> &Path {
        self.temporary
            .as_deref()
            .expect("a staged file has its temporary name until published")
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        if let Some(path) = self.temporary.take() {
            if let Err(error) = fs::remove_file(&path) {
                if error.kind() != ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), %error, "could not remove a temporary file");
                }
            }
        }
    }
}

/// A complete, fsynced file under its temporary name, not yet published.
pub struct StagedFile {
    staged: Staged,
    pub sha256: [u8; 32],
    pub size_bytes: u64,
}

impl StagedFile {
    /// The temporary file, for reading it back before it is recorded.
    pub fn temporary(&self) -> &Path {
        self.staged.temporary()
    }

    /// Whether the temporary file stays in place if this is dropped
    /// unpublished: once a file may be recorded, its temporary file is how the
    /// next run knows it was never published (decision 0007), so it must not be
    /// removed.
    pub fn keep_when_dropped(&mut self, keep: bool) {
        self.staged.keep = keep;
    }

    /// Renames the file to its name. Durable once the directory is fsynced
    /// ([`sync_dir`]).
    pub fn publish(mut self) -> Result<WrittenFile, ExportError> {
        let path = self.staged.dir.join(&self.staged.name);
        fs::rename(self.staged.temporary(), &path)
            .map_err(ExportError::io("cannot rename into place", &path))?;
        self.staged.temporary = None;
        Ok(WrittenFile {
            path,
            sha256: self.sha256,
            size_bytes: self.size_bytes,
        })
    }
}

/// Writes `dir/name` so that it either does not exist or is complete (a
/// temporary name of its own, fsync, rename, fsync of the directory). Not for an
/// outbox: official files go through [`Outbox::put`].
pub fn write_bytes_atomically(
    dir: &Path,
    name: &str,
    bytes: &[u8],
) -> Result<WrittenFile, ExportError> {
    put_bytes(&Staging::plain(dir)?, name, bytes)
}

fn put_bytes(staging: &Staging, name: &str, bytes: &[u8]) -> Result<WrittenFile, ExportError> {
    let mut file = PartialFile::create(staging, name, 64 * 1024)?;
    let temporary = file.staged.temporary().to_path_buf();
    file.writer()
        .write_all(bytes)
        .map_err(ExportError::io("cannot write", &temporary))?;
    let written = file.finish()?.publish()?;
    sync_dir(&staging.dir)?;
    Ok(written)
}

/// Makes a rename in `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<(), ExportError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(ExportError::io("cannot fsync directory", dir))
}

/// What one name in an outbox is, to the ledger that claims it.
#[derive(Debug, PartialEq, Eq)]
enum Entry {
    /// An official file this ledger recorded.
    Recorded,
    /// The temporary file of one of this ledger's runs.
    OurTemporary { name: String },
    /// An SF2520 file, or the temporary file of one, that this ledger did not write.
    Foreign,
    /// Anything else (the marker, the quarantine, an operator's notes).
    Other,
}

fn classify(
    file_name: &str,
    ours: &str,
    recorded: &HashMap<String, [u8; 32]>,
    legacy_temporaries_are_ours: bool,
) -> Entry {
    if file_name.starts_with("SF2520_") && file_name.ends_with(".txt") {
        return if recorded.contains_key(file_name) {
            Entry::Recorded
        } else {
            Entry::Foreign
        };
    }
    let Some(inner) = file_name
        .strip_prefix('.')
        .and_then(|rest| rest.strip_suffix(".partial"))
        .filter(|inner| inner.starts_with("SF2520_"))
    else {
        return Entry::Other;
    };
    // `.NAME.TAG.partial`, where an outbox's TAG is `LEDGER-RUN`; before tags, a
    // run wrote `.NAME.partial`.
    if let Some(name) = inner.strip_suffix(".txt") {
        return if legacy_temporaries_are_ours {
            Entry::OurTemporary {
                name: format!("{name}.txt"),
            }
        } else {
            Entry::Foreign
        };
    }
    match inner.rsplit_once('.') {
        Some((name, tag))
            if tag
                .split_once('-')
                .is_some_and(|(ledger, _)| ledger == ours) =>
        {
            Entry::OurTemporary {
                name: name.to_string(),
            }
        }
        _ => Entry::Foreign,
    }
}

/// A temporary file that one of this ledger's earlier, interrupted runs left.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Leftover {
    /// The official name it was for.
    pub name: String,
    pub path: PathBuf,
}

/// What a look at an outbox found.
struct Scan {
    leftovers: Vec<Leftover>,
    /// SF2520 files, or their temporary files, that this ledger did not write.
    foreign: Vec<String>,
}

/// An outbox claimed by this ledger, under its export lock: the one way to write
/// an official file. Holding it proves no other run of this ledger writes here.
pub struct Outbox<'l> {
    staging: Staging,
    _lock: &'l ExportLock,
    leftovers: Vec<Leftover>,
}

impl<'l> Outbox<'l> {
    /// Claims `dir` for the ledger `ledger_id` (creating it owner-only, or
    /// checking an existing one is the running user's own), and looks at every
    /// file in it. Refused, deleting nothing, when the outbox is claimed by another
    /// ledger or holds an SF2520 file (or its temporary file) that this ledger did
    /// not write; `recorded` are this ledger's official files by name.
    pub fn claim(
        dir: &Path,
        ledger_id: u64,
        lock: &'l ExportLock,
        recorded: &HashMap<String, [u8; 32]>,
    ) -> Result<Outbox<'l>, ExportError> {
        ensure_private_dir(dir)?;
        let ours = format!("{ledger_id:016x}");
        let marker = dir.join(OUTBOX_MARKER);
        let claimed = read_claim(&marker)?;
        if let Some(owner) = &claimed {
            if *owner != ours {
                return Err(ExportError::OutboxClaimed {
                    dir: dir.to_path_buf(),
                    owner: owner.clone(),
                    ours,
                });
            }
        }
        let Scan { leftovers, foreign } = scan(dir, &ours, recorded, claimed.is_none())?;
        if !foreign.is_empty() {
            return Err(ExportError::ForeignFiles {
                dir: dir.to_path_buf(),
                count: foreign.len(),
                names: foreign.into_iter().take(5).collect::<Vec<_>>().join(", "),
            });
        }
        if claimed.is_none() {
            write_claim(dir, &marker, &ours)?;
        }
        Ok(Outbox {
            staging: Staging {
                dir: dir.to_path_buf(),
                tag: format!("{ours}-{}", short_id()),
            },
            _lock: lock,
            leftovers,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.staging.dir
    }

    /// Where this run stages its files.
    pub fn staging(&self) -> &Staging {
        &self.staging
    }

    /// Writes an official file's bytes (already checked against its event) under
    /// its official name.
    pub fn put(&self, name: &str, bytes: &[u8]) -> Result<WrittenFile, ExportError> {
        put_bytes(&self.staging, name, bytes)
    }

    /// Takes the leftover temporary files of earlier runs.
    pub fn take_leftovers(&mut self) -> Vec<Leftover> {
        std::mem::take(&mut self.leftovers)
    }

    /// Publishes a leftover temporary file under its official name.
    pub fn publish_leftover(&self, temporary: &Path, name: &str) -> Result<(), ExportError> {
        let path = self.dir().join(name);
        fs::rename(temporary, &path).map_err(ExportError::io("cannot rename into place", &path))
    }

    /// Moves a leftover temporary file into the quarantine folder (`0700`), with a
    /// log line: it was never official, and it holds CPR numbers.
    pub fn quarantine(&self, temporary: &Path) -> Result<PathBuf, ExportError> {
        let folder = self.dir().join(QUARANTINE_DIR);
        nofollow::private_dir(&folder).map_err(ExportError::io("cannot use", &folder))?;
        let name = temporary
            .file_name()
            .map(|name| name.to_string_lossy().trim_start_matches('.').to_string())
            .unwrap_or_default();
        let target = folder.join(name);
        fs::rename(temporary, &target).map_err(ExportError::io("cannot move into", &target))?;
        tracing::warn!(
            file = %target.display(),
            "moved the unfinished file of an interrupted export run into quarantine: it was never official (its løbenummer is rendered again); it holds CPR numbers, delete it when it is no longer needed"
        );
        Ok(target)
    }
}

fn read_claim(marker: &Path) -> Result<Option<String>, ExportError> {
    match fs::read_to_string(marker) {
        Ok(text) => {
            let owner = text
                .strip_prefix("sf2520 outbox of ledger ")
                .map(str::trim)
                .filter(|id| id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()))
                .ok_or_else(|| ExportError::DamagedClaim {
                    path: marker.to_path_buf(),
                })?;
            Ok(Some(owner.to_string()))
        }
        Err(error) if error.kind() == ErrorKind::NotFound => Ok(None),
        Err(error) => Err(ExportError::io("cannot read", marker)(error)),
    }
}

/// Writes the claim; if another ledger claimed the outbox in the meantime, its
/// claim stands and this one is refused.
fn write_claim(dir: &Path, marker: &Path, ours: &str) -> Result<(), ExportError> {
    let created = nofollow::create_new(marker);
    match created {
        Ok(mut file) => {
            file.write_all(format!("sf2520 outbox of ledger {ours}\n").as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(ExportError::io("cannot write", marker))?;
            sync_dir(dir)
        }
        Err(error) if error.kind() == ErrorKind::AlreadyExists => match read_claim(marker)? {
            Some(owner) if owner == ours => Ok(()),
            Some(owner) => Err(ExportError::OutboxClaimed {
                dir: dir.to_path_buf(),
                owner,
                ours: ours.to_string(),
            }),
            None => Err(ExportError::DamagedClaim {
                path: marker.to_path_buf(),
            }),
        },
        Err(error) => Err(ExportError::io("cannot create", marker)(error)),
    }
}

/// This ledger's leftover temporary files, and the names of foreign files.
fn scan(
    dir: &Path,
    ours: &str,
    recorded: &HashMap<String, [u8; 32]>,
    unclaimed: bool,
) -> Result<Scan, ExportError> {
    // A run before claims wrote `.NAME.partial`: in an outbox not yet claimed whose
    // SF2520 files are all this ledger's, such a file is this ledger's too.
    let names = list(dir)?;
    let all_recorded = names
        .iter()
        .filter(|name| name.starts_with("SF2520_") && name.ends_with(".txt"))
        .all(|name| recorded.contains_key(name));
    let legacy_ours = unclaimed && all_recorded;
    let (mut leftovers, mut foreign) = (Vec::new(), Vec::new());
    for file_name in names {
        match classify(&file_name, ours, recorded, legacy_ours) {
            Entry::OurTemporary { name } => leftovers.push(Leftover {
                name,
                path: dir.join(&file_name),
            }),
            Entry::Foreign => foreign.push(file_name),
            Entry::Recorded | Entry::Other => {}
        }
    }
    leftovers.sort();
    foreign.sort();
    Ok(Scan { leftovers, foreign })
}

fn list(dir: &Path) -> Result<Vec<String>, ExportError> {
    let entries = fs::read_dir(dir).map_err(ExportError::io("cannot list", dir))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(ExportError::io("cannot list", dir))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    Ok(names)
}

/// The SHA-256 of a file's contents.
pub fn sha256_of(path: &Path) -> Result<[u8; 32], ExportError> {
    let mut file = File::open(path).map_err(ExportError::io("cannot open", path))?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher).map_err(ExportError::io("cannot read", path))?;
    Ok(hasher.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A staged file is removed when dropped unpublished, unless it may be
    /// recorded: then its temporary file is what tells the next run to publish it.
    #[test]
    fn a_staged_file_kept_for_the_next_run_outlives_its_run() {
        let dir = tempfile::tempdir().unwrap();
        let staging = Staging::plain(dir.path()).unwrap();
        let staged = |name: &str| {
            let mut file = PartialFile::create(&staging, name, 64).unwrap();
            file.writer().write_all(b"bytes").unwrap();
            file.finish().unwrap()
        };
        let dropped = staged("a.txt");
        let dropped_path = dropped.temporary().to_path_buf();
        drop(dropped);
        assert!(!dropped_path.exists());
        let mut kept = staged("b.txt");
        kept.keep_when_dropped(true);
        let kept_path = kept.temporary().to_path_buf();
        drop(kept);
        assert_eq!(fs::read(&kept_path).unwrap(), b"bytes");
    }

    /// Regression: `receipts/` (and any plain staging directory: `test-files/`,
    /// `--as-of --out`) planted as a link made files with CPRs land elsewhere.
    #[test]
    fn a_staging_directory_that_is_a_link_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        let receipts = dir.path().join("receipts");
        std::os::unix::fs::symlink(&elsewhere, &receipts).unwrap();
        let error = write_bytes_atomically(&receipts, "r.xml", b"<receipt/>").unwrap_err();
        assert!(error.to_string().contains("symbolic link"), "{error}");
        assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
        let real = dir.path().join("real");
        write_bytes_atomically(&real, "r.xml", b"<receipt/>").unwrap();
        assert_eq!(fs::read(real.join("r.xml")).unwrap(), b"<receipt/>");
    }

    #[test]
    fn names_are_told_apart_by_whose_they_are() {
        let recorded: HashMap<String, [u8; 32]> =
            [("SF2520_0101_20261201_000001.txt".to_string(), [0; 32])].into();
        let ours = "00000000000000aa";
        let cases = [
            ("SF2520_0101_20261201_000001.txt", false, Entry::Recorded),
            ("SF2520_0101_20261201_000002.txt", false, Entry::Foreign),
            (
                ".SF2520_0101_20261201_000002.txt.00000000000000aa-abc.partial",
                false,
                Entry::OurTemporary {
                    name: "SF2520_0101_20261201_000002.txt".into(),
                },
            ),
            (
                ".SF2520_0101_20261201_000002.txt.00000000000000bb-abc.partial",
                false,
                Entry::Foreign,
            ),
            (
                ".SF2520_0101_20261201_000002.txt.partial",
                false,
                Entry::Foreign,
            ),
            (
                ".SF2520_0101_20261201_000002.txt.partial",
                true,
                Entry::OurTemporary {
                    name: "SF2520_0101_20261201_000002.txt".into(),
                },
            ),
            (".sf2520-outbox", false, Entry::Other),
            ("README", false, Entry::Other),
        ];
        for (name, legacy, expected) in cases {
            assert_eq!(classify(name, ours, &recorded, legacy), expected, "{name}");
        }
    }
}
