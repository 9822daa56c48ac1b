//! Personal data at rest (crypto-shredding, decision 0010): the key file that is
//! never in the database, one data key per agreement wrapped under it in the
//! `subject_keys` table, and the sealing and opening of the CPRs in event payloads.
//!
//! The key file holds 32 random bytes. From them HKDF-SHA256 derives the
//! key-encryption key (ChaCha20-Poly1305) that wraps every data key, and the key
//! file's identity, which the ledger keeps in `meta` so that a wrong key file is
//! refused before anything is read or written. Nothing looks a person up by CPR;
//! should something need to, it would use a keyed hash under a key derived here
//! with a label of its own, kept in a projection that retention deletes, never in
//! the log (decision 0010).
//! Destroying an agreement's wrapped data key (`sf2520 retention --apply`) makes
//! every CPR sealed under it unreadable for good, while the hash chain, which
//! covers the sealed bytes, stays intact.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};

use super::postgres;
use super::sql::{args, Db, Source};
use super::LedgerError;
use crate::domain::{AgreementRef, Cpr, Event, PersonalCpr, SealedCpr, SEALED_CPR_LEN};

/// The key file's name in the data directory when the configuration names none.
pub const KEY_FILE: &str = "ledger.kek";

/// The key file's one line: this prefix, then 64 hex digits.
const KEY_FILE_PREFIX: &str = "sf2520-kek-v1:";

/// The HKDF salt and the labels of what is derived from the key file's secret.
const HKDF_SALT: &[u8] = b"sf2520 key file v1";
const LABEL_WRAP: &[u8] = b"sf2520 wrap data keys v1";
const LABEL_ID: &[u8] = b"sf2520 key file id v1";

/// What the associated data of a wrapped data key and of a sealed CPR start with;
/// the agreement reference follows, so a sealed value moved to another agreement
/// does not open.
const AAD_DATA_KEY: &[u8] = b"sf2520 data key v1\0";
const AAD_CPR: &[u8] = b"sf2520 cpr v1\0";

/// Bytes of a wrapped data key: nonce, 32 sealed bytes, tag.
pub(crate) const WRAPPED_KEY_LEN: usize = NONCE_LEN + 32 + 16;

/// `meta` key of the key file's identity; a ledger without it stores plain CPRs
/// (written before sealing existed, docs/operations.md "Sealing an older ledger").
pub(crate) const KEY_ID_META: &str = "key_file_id";

/// Data keys remembered per process before the memory starts afresh.
const REMEMBERED_MAX: usize = 200_000;

/// The key file named by the configuration (`--key-file`, `SF2520_KEY_FILE`,
/// `[privacy] key_file`); `None`: [`KEY_FILE`] in each data directory.
static KEY_FILE_PATH: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Makes this process's ledgers use the key file at `path` (`None`: the default
/// in each data directory).
pub fn set_key_file(path: Option<PathBuf>) {
    *KEY_FILE_PATH
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = path;
}

/// The key file a ledger in `dir` uses.
pub fn key_file_path(dir: &Path) -> PathBuf {
    KEY_FILE_PATH
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone()
        .unwrap_or_else(|| dir.join(KEY_FILE))
}

/// The keys derived from a key file.
pub struct KeyFile {
    path: PathBuf,
    wrap: LessSafeKey,
    id: i64,
}

/// A 32-byte output of HKDF.
struct Okm32;

impl hkdf::KeyType for Okm32 {
    fn len(&self) -> usize {
        32
    }
}

fn derive(prk: &hkdf::Prk, label: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    prk.expand(&[label], Okm32)
        .and_then(|okm| okm.fill(&mut out))
        .expect("HKDF-SHA256 gives 32 bytes");
    out
}

fn io_error(path: &Path, action: &'static str, source: std::io::Error) -> LedgerError {
    LedgerError::KeyFileIo {
        path: path.to_path_buf(),
        action,
        source,
    }
}

impl KeyFile {
    fn from_secret(path: &Path, secret: &[u8; 32]) -> KeyFile {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT).extract(secret);
        let wrap = UnboundKey::new(&CHACHA20_POLY1305, &derive(&prk, LABEL_WRAP))
            .expect("32 bytes make a ChaCha20-Poly1305 key");
        let id_bytes = derive(&prk, LABEL_ID);
        let mut id = [0u8; 8];
        id.copy_from_slice(&id_bytes[..8]);
        KeyFile {
            path: path.to_path_buf(),
            wrap: LessSafeKey::new(wrap),
            id: i64::from_be_bytes(id),
        }
    }

    /// Creates a new key file at `path`, owner-only, never over an existing file or
    /// through a symbolic link. The file is written whole under a name of its own
    /// and then linked to `path`, so that a process that finds `path` finds it
    /// complete; when two create one at once, the second gets
    /// [`LedgerError::KeyFileIo`] with `AlreadyExists` (see [`KeyFile::load_or_create`]).
    pub fn create(path: &Path) -> Result<KeyFile, LedgerError> {
        let mut secret = [0u8; 32];
        SystemRandom::new()
            .fill(&mut secret)
            .map_err(|_| LedgerError::KeyFileInvalid {
                path: path.to_path_buf(),
                why: "the system's random number generator failed".into(),
            })?;
        let mut text = String::from(KEY_FILE_PREFIX);
        for byte in secret {
            text.push_str(&format!("{byte:02x}"));
        }
        text.push('\n');
        let staged = path.with_file_name(format!(
            ".{}.{}.partial",
            path.file_name()
                .and_then(|name| name.to_str())
                .unwrap_or(KEY_FILE),
            std::process::id()
        ));
        let written = write_staged(&staged, text.as_bytes()).and_then(|()| {
            fs::hard_link(&staged, path).map_err(|source| io_error(path, "create", source))
        });
        // The staged name goes whatever happened; `path` is the file from here on.
        let _ = fs::remove_file(&staged);
        written?;
        if let Some(parent) = path.parent() {
            if let Ok(dir) = fs::File::open(parent) {
                // The file's name is durable with its directory; a failure only
                // risks the name, which `load` would then report missing.
                let _ = dir.sync_all();
            }
        }
        Ok(KeyFile::from_secret(path, &secret))
    }

    /// The key file at `path`, created if there is none: a new ledger's. Two
    /// processes creating a ledger at once end up with the same file.
    pub fn load_or_create(path: &Path) -> Result<KeyFile, LedgerError> {
        match KeyFile::load(path) {
            Err(LedgerError::KeyFileMissing { .. }) => match KeyFile::create(path) {
                Err(LedgerError::KeyFileIo { source, .. })
                    if source.kind() == std::io::ErrorKind::AlreadyExists =>
                {
                    KeyFile::load(path)
                }
                other => other,
            },
            other => other,
        }
    }

    /// Reads the key file at `path`: it must be the running user's, owner-only, a
    /// regular file (not followed through a link) and well formed.
    pub fn load(path: &Path) -> Result<KeyFile, LedgerError> {
        let mut file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::NotFound => LedgerError::KeyFileMissing {
                    path: path.to_path_buf(),
                },
                _ if source.raw_os_error() == Some(libc::ELOOP) => LedgerError::KeyFileInvalid {
                    path: path.to_path_buf(),
                    why: "it is a symbolic link; name the file itself".into(),
                },
                _ => io_error(path, "open", source),
            })?;
        let metadata = file
            .metadata()
            .map_err(|source| io_error(path, "inspect", source))?;
        if !metadata.is_file() {
            return Err(LedgerError::KeyFileInvalid {
                path: path.to_path_buf(),
                why: "it is not a regular file".into(),
            });
        }
        if metadata.mode() & 0o077 != 0 {
            return Err(LedgerError::InsecurePermissions {
                path: path.to_path_buf(),
                mode: metadata.mode() & 0o7777,
                directory: false,
            });
        }
        let mut text = String::new();
        // A key file is one short line; read a little more to notice a longer one.
        Read::by_ref(&mut file)
            .take(256)
            .read_to_string(&mut text)
            .map_err(|source| io_error(path, "read", source))?;
        let secret = parse_secret(&text).map_err(|why| LedgerError::KeyFileInvalid {
            path: path.to_path_buf(),
            why: why.into(),
        })?;
        Ok(KeyFile::from_secret(path, &secret))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The identity the ledger keeps in `meta` (no secret: a one-way derivation).
    pub fn id(&self) -> i64 {
        self.id
    }
}

/// Writes `bytes` to the new file `staged` (owner-only, not through a link) and
/// makes them durable.
fn write_staged(staged: &Path, bytes: &[u8]) -> Result<(), LedgerError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(staged)
        .map_err(|source| io_error(staged, "create", source))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|source| io_error(staged, "write", source))
}

fn parse_secret(text: &str) -> Result<[u8; 32], &'static str> {
    let line = text.strip_suffix('\n').unwrap_or(text);
    let hex = line
        .strip_prefix(KEY_FILE_PREFIX)
        .ok_or("it does not start with `sf2520-kek-v1:`; it is not an sf2520 key file")?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("it does not hold exactly 64 hexadecimal digits after `sf2520-kek-v1:`");
    }
    let mut secret = [0u8; 32];
    for (index, byte) in secret.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * index..2 * index + 2], 16)
            .map_err(|_| "a hexadecimal digit is not one")?;
    }
    Ok(secret)
}

/// A nonce: 12 random bytes from the thread-local CSPRNG behind `Uuid::new_v4`
/// (seeded by the OS; a system call per CPR sealed would cost more than the
/// sealing). Each data key seals a few hundred values in its life, so 90 random
/// bits make a repeat practically impossible.
fn fresh_nonce() -> [u8; NONCE_LEN] {
    let random = uuid::Uuid::new_v4();
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&random.as_bytes()[..NONCE_LEN]);
    nonce
}

fn aad(prefix: &[u8], agreement: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(prefix.len() + agreement.len());
    aad.extend_from_slice(prefix);
    aad.extend_from_slice(agreement.as_bytes());
    aad
}

/// The associated data of a sealed CPR, built on the stack: the export opens one
/// per record. An agreement reference is at most 15 characters of ISO-8859-1, so
/// 30 bytes of UTF-8; a longer one (never valid) is refused by `None`.
fn cpr_aad(agreement: &str) -> Option<([u8; 64], usize)> {
    let mut buffer = [0u8; 64];
    let end = AAD_CPR.len() + agreement.len();
    buffer
        .get_mut(AAD_CPR.len()..end)?
        .copy_from_slice(agreement.as_bytes());
    buffer[..AAD_CPR.len()].copy_from_slice(AAD_CPR);
    Some((buffer, end))
}

/// The ChaCha20-Poly1305 key of 32 raw bytes (a copy, no key schedule: cheap).
fn chacha_key(raw: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, raw).expect("32 bytes make a key"))
}

/// Seals the ten digits of a CPR under `key`: nonce ‖ ciphertext ‖ tag.
fn seal_cpr(key: &LessSafeKey, agreement: &str, digits: &[u8; 10]) -> Option<[u8; SEALED_CPR_LEN]> {
    let (aad_buffer, aad_len) = cpr_aad(agreement)?;
    let nonce = fresh_nonce();
    let mut sealed = [0u8; SEALED_CPR_LEN];
    sealed[..NONCE_LEN].copy_from_slice(&nonce);
    sealed[NONCE_LEN..NONCE_LEN + 10].copy_from_slice(digits);
    let (body, tag_out) = sealed[NONCE_LEN..].split_at_mut(10);
    let tag = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&aad_buffer[..aad_len]),
            body,
        )
        .ok()?;
    tag_out.copy_from_slice(tag.as_ref());
    Some(sealed)
}

/// Opens a sealed CPR under `key` to its ten digits; `None` if it does not
/// authenticate.
fn open_cpr(key: &LessSafeKey, agreement: &str, sealed: &[u8; SEALED_CPR_LEN]) -> Option<[u8; 10]> {
    let (aad_buffer, aad_len) = cpr_aad(agreement)?;
    let nonce = Nonce::try_assume_unique_for_key(&sealed[..NONCE_LEN]).ok()?;
    let mut buffer = [0u8; SEALED_CPR_LEN - NONCE_LEN];
    buffer.copy_from_slice(&sealed[NONCE_LEN..]);
    let plain = key
        .open_in_place(nonce, Aad::from(&aad_buffer[..aad_len]), &mut buffer)
        .ok()?;
    <[u8; 10]>::try_from(&*plain).ok()
}

/// FNV-1a over bytes, and a multiply-rotate step per 64-bit word (as rustc's
/// FxHash): the remembered data keys are looked up once per record exported, by
/// agreement references from our own ledger, where SipHash's protection against
/// chosen keys buys nothing and costs a tenth of the export. An [`InlineRef`] is
/// hashed as four words: four steps instead of 40 byte-wide ones.
#[derive(Default)]
struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut hash = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for byte in bytes {
            hash = (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = hash;
    }
}

type Remembered = HashMap<InlineRef, Known, std::hash::BuildHasherDefault<Fnv>>;

/// An agreement reference held in the map's own slot (at most 15 characters of
/// ISO-8859-1, so at most 30 bytes of UTF-8): a lookup per exported record then
/// touches one place in memory, not a slot and a string elsewhere.
#[derive(Clone, Copy, PartialEq, Eq)]
struct InlineRef {
    len: u8,
    bytes: [u8; 31],
}

impl std::hash::Hash for InlineRef {
    /// The length and the bytes as four little-endian words: equal references
    /// give equal words (unused bytes are zero).
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let mut all = [0u8; 32];
        all[0] = self.len;
        all[1..].copy_from_slice(&self.bytes);
        for word in all.chunks_exact(8) {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(word);
            state.write_u64(u64::from_le_bytes(bytes));
        }
    }
}

impl InlineRef {
    /// `None` for a reference too long to be one (never remembered, so read each
    /// time: correct, only slower).
    fn of(agreement: &str) -> Option<InlineRef> {
        let len = u8::try_from(agreement.len())
            .ok()
            .filter(|len| *len <= 31)?;
        let mut bytes = [0u8; 31];
        bytes[..agreement.len()].copy_from_slice(agreement.as_bytes());
        Some(InlineRef { len, bytes })
    }
}

/// What this process knows of an agreement: its data key and the sealed form of
/// its CPR last sealed or opened. Every CPR of an agreement is the same number
/// (the rules see to it), so a withholding is sealed to the very bytes its
/// agreement's registration holds when those are known, and opening those bytes
/// again costs a comparison, not a decryption.
#[derive(Clone, Copy)]
struct Known {
    key: DataKey,
    last: Option<([u8; SEALED_CPR_LEN], Cpr)>,
}

impl Known {
    /// The number `sealed` holds, if it is the very bytes this agreement's CPR
    /// was last sealed to or opened from (the key's state is the caller's).
    fn remembered_cpr(&self, sealed: &SealedCpr) -> Option<Cpr> {
        self.last
            .filter(|(bytes, _)| bytes == sealed.as_bytes())
            .map(|(_, number)| number)
    }
}

/// Seals `plain` under `key` with a fresh nonce; returns nonce ‖ ciphertext ‖ tag.
fn seal_bytes(key: &LessSafeKey, aad_bytes: &[u8], plain: &[u8]) -> Vec<u8> {
    seal_with(key, fresh_nonce(), aad_bytes, plain)
}

fn seal_with(key: &LessSafeKey, nonce: [u8; NONCE_LEN], aad_bytes: &[u8], plain: &[u8]) -> Vec<u8> {
    let mut buffer = plain.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad_bytes),
        &mut buffer,
    )
    .expect("ChaCha20-Poly1305 seals short values");
    let mut out = Vec::with_capacity(NONCE_LEN + buffer.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&buffer);
    out
}

/// Opens nonce ‖ ciphertext ‖ tag under `key`; `None` if it does not authenticate.
fn open_bytes(key: &LessSafeKey, aad_bytes: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    let (nonce, rest) = sealed.split_at_checked(NONCE_LEN)?;
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut buffer = rest.to_vec();
    let plain = key
        .open_in_place(nonce, Aad::from(aad_bytes), &mut buffer)
        .ok()?;
    Some(plain.to_vec())
}

/// An agreement's data key, as the ledger knows it: the 32 raw bytes (a
/// `LessSafeKey` is sized for every algorithm ring has, some 500 bytes, which a
/// cache of every agreement's key cannot afford; making one from the bytes is a
/// copy).
#[derive(Clone, Copy)]
enum DataKey {
    Live([u8; 32]),
    /// Destroyed by `retention --apply` at this time (µs) in the event at `position`.
    Erased {
        at_us: i64,
        position: u64,
    },
}

/// The key file of a ledger with sealed personal data, and the data keys this
/// process has unwrapped.
pub(crate) struct Keyring {
    file: std::sync::Arc<KeyFile>,
    known: Mutex<Remembered>,
}

const SUBJECT_KEYS: Source = Source {
    table: "subject_keys",
};

impl Keyring {
    pub(crate) fn new(file: KeyFile) -> Keyring {
        Keyring {
            file: std::sync::Arc::new(file),
            known: Mutex::new(Remembered::default()),
        }
    }

    /// The same key file with a cache of data keys of its own: for a thread that
    /// looks up a key per record (the export's log readers), so that no two
    /// threads take turns on one lock and one table for every record.
    pub(crate) fn fresh(&self) -> Keyring {
        Keyring {
            file: std::sync::Arc::clone(&self.file),
            known: Mutex::new(Remembered::default()),
        }
    }

    pub(crate) fn file(&self) -> &KeyFile {
        &self.file
    }

    fn remembered(&self, agreement: &str) -> Option<Known> {
        self.known
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&InlineRef::of(agreement)?)
            .copied()
    }

    fn remember(&self, agreement: &str, key: DataKey) {
        let mut known = self
            .known
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if known.len() >= REMEMBERED_MAX {
            known.clear();
        }
        if let Some(reference) = InlineRef::of(agreement) {
            known.insert(reference, Known { key, last: None });
        }
    }

    /// Remembers that `sealed` is `cpr` sealed under `agreement`'s data key.
    fn remember_sealed(&self, agreement: &str, sealed: [u8; SEALED_CPR_LEN], cpr: Cpr) {
        let mut known = self
            .known
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(entry) = InlineRef::of(agreement).and_then(|r| known.get_mut(&r)) {
            entry.last = Some((sealed, cpr));
        }
    }

    /// Forgets every data key (after an erasure, or when another process may have
    /// erased some).
    pub(crate) fn forget(&self) {
        self.known
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clear();
    }

    /// Unwraps a `subject_keys` row: the wrapped key, or its erasure.
    fn unwrap_row(
        &self,
        agreement: &str,
        wrapped: Option<&[u8]>,
        erased_at_us: Option<i64>,
        erased_position: Option<i64>,
    ) -> Result<DataKey, LedgerError> {
        let damaged = |why: &str| LedgerError::DataKeyDamaged {
            agreement: agreement.to_string(),
            why: why.to_string(),
        };
        match (wrapped, erased_at_us, erased_position) {
            (Some(wrapped), None, None) if wrapped.len() == WRAPPED_KEY_LEN => {
                let raw = open_bytes(&self.file.wrap, &aad(AAD_DATA_KEY, agreement), wrapped)
                    .ok_or_else(|| {
                        damaged(
                            "its wrapped data key does not open under the key file (the row \
                             was altered or copied from another agreement)",
                        )
                    })?;
                let raw = <[u8; 32]>::try_from(raw.as_slice())
                    .map_err(|_| damaged("its data key is not 32 bytes"))?;
                Ok(DataKey::Live(raw))
            }
            (None, Some(at_us), Some(position)) => Ok(DataKey::Erased {
                at_us,
                position: u64::try_from(position)
                    .map_err(|_| damaged("its erasure position is negative"))?,
            }),
            _ => Err(damaged(
                "its row holds neither a wrapped key nor a complete erasure",
            )),
        }
    }

    /// The data key of `agreement`, read (and unwrapped) once per process.
    fn data_key(&self, db: &Db, agreement: &str) -> Result<Option<Known>, LedgerError> {
        if let Some(known) = self.remembered(agreement) {
            return Ok(Some(known));
        }
        let row = db.query_opt(
            "SELECT wrapped, erased_at_us, erased_position FROM subject_keys WHERE agreement = ?1",
            &args![agreement],
            |row| {
                Ok((
                    row.opt_blob(SUBJECT_KEYS, 0)?.map(<[u8]>::to_vec),
                    row.opt_int(SUBJECT_KEYS, 1)?,
                    row.opt_int(SUBJECT_KEYS, 2)?,
                ))
            },
        )?;
        let Some((wrapped, at_us, position)) = row else {
            return Ok(None);
        };
        let key = self.unwrap_row(agreement, wrapped.as_deref(), at_us, position)?;
        self.remember(agreement, key);
        Ok(Some(Known { key, last: None }))
    }

    /// Reads the data keys of `agreements` this process does not know yet (see
    /// [`Keyring::read_keys`]).
    pub(crate) fn prefetch<'a>(
        &self,
        db: &Db,
        agreements: impl Iterator<Item = &'a str>,
    ) -> Result<(), LedgerError> {
        let wanted: Vec<String> = {
            // One lock for the whole window, not one per event.
            let known = self
                .known
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            agreements
                .filter(|agreement| {
                    InlineRef::of(agreement).is_none_or(|reference| !known.contains_key(&reference))
                })
                .map(str::to_string)
                .collect()
        };
        self.read_keys(db, wanted)
    }

    /// Reads the data keys of `agreements`: in one query on PostgreSQL (where
    /// each lookup is a round trip); on SQLite one lookup each, in the order of
    /// the table's key, so that each lookup finds the pages the one before read
    /// (in the order the records come, each was a read of a page from the file:
    /// a tenth of the export, issue 24). Read ahead only: on SQLite a key that
    /// cannot be read here is read again when a record needs it, and its error
    /// reported there (an agreement whose entries lie outside every file asked
    /// for must not stop the export).
    fn read_keys(&self, db: &Db, mut agreements: Vec<String>) -> Result<(), LedgerError> {
        agreements.sort_unstable();
        agreements.dedup();
        let Db::Postgres(session) = db else {
            for agreement in &agreements {
                // Read ahead only (above): an error here comes again where it counts.
                let _ = self.data_key(db, agreement);
            }
            return Ok(());
        };
        for chunk in agreements.chunks(10_000) {
            postgres::prefetch_subject_keys(session, chunk, &mut |row| {
                let agreement = row.text(SUBJECT_KEYS, 0)?;
                let key = self.unwrap_row(
                    agreement,
                    row.opt_blob(SUBJECT_KEYS, 1)?,
                    row.opt_int(SUBJECT_KEYS, 2)?,
                    row.opt_int(SUBJECT_KEYS, 3)?,
                )?;
                self.remember(agreement, key);
                Ok(())
            })?;
        }
        Ok(())
    }

    /// A new data key for `agreement`, wrapped and stored in this transaction.
    fn create_data_key(&self, db: &Db, agreement: &str) -> Result<Known, LedgerError> {
        let mut raw = [0u8; 32];
        SystemRandom::new()
            .fill(&mut raw)
            .map_err(|_| LedgerError::KeyFileInvalid {
                path: self.file.path.clone(),
                why: "the system's random number generator failed".into(),
            })?;
        let wrapped = seal_bytes(&self.file.wrap, &aad(AAD_DATA_KEY, agreement), &raw);
        db.insert_later(
            "INSERT INTO subject_keys (agreement, wrapped, erased_at_us, erased_position) VALUES (?1, ?2, NULL, NULL)",
            &args![agreement, wrapped.as_slice()],
        )?;
        let key = DataKey::Live(raw);
        self.remember(agreement, key);
        Ok(Known { key, last: None })
    }

    /// Replaces the plain CPR of `event` (if it carries one) by its sealed form
    /// under the agreement's data key, creating the key for a new agreement.
    pub(crate) fn seal(&self, db: &Db, event: &mut Event) -> Result<(), LedgerError> {
        let registers = matches!(event, Event::AgreementRegistered(_));
        let Some((agreement, cpr)) = event.personal_cpr_mut() else {
            return Ok(());
        };
        let PersonalCpr::Plain(plain) = *cpr else {
            return Ok(());
        };
        let known = match self.data_key(db, agreement.as_str())? {
            Some(known) => known,
            None if registers => self.create_data_key(db, agreement.as_str())?,
            None => return Err(missing_key(agreement)),
        };
        let raw = live(agreement, known.key)?;
        if let Some((sealed, _)) = known.last.filter(|(_, number)| *number == plain) {
            // The bytes this agreement's CPR was sealed to already.
            *cpr = PersonalCpr::Sealed(SealedCpr::from_bytes(sealed));
            return Ok(());
        }
        let key = chacha_key(&raw);
        let digits = <[u8; 10]>::try_from(plain.digits().as_bytes()).expect("a CPR is ten digits");
        let sealed = seal_cpr(&key, agreement.as_str(), &digits).ok_or_else(|| {
            LedgerError::DataKeyDamaged {
                agreement: agreement.to_string(),
                why: "its reference is too long to seal a CPR for".into(),
            }
        })?;
        self.remember_sealed(agreement.as_str(), sealed, plain);
        *cpr = PersonalCpr::Sealed(SealedCpr::from_bytes(sealed));
        Ok(())
    }

    /// Opens each of `cprs` that this process opened or sealed before (the bytes
    /// its agreement's CPR was last sealed to, under a live key) and leaves the
    /// rest sealed, for [`Keyring::open`] to open or to say why not; then reads
    /// the data keys it does not know yet ([`Keyring::read_keys`]). One lock and
    /// one lookup for each, with nothing between them, so that the processor
    /// waits for several of the table's slots at once rather than for each in
    /// turn (the table of a large ledger does not fit in the cache: a slot is a
    /// miss).
    pub(crate) fn open_known<'e>(
        &self,
        db: &Db,
        cprs: impl Iterator<Item = (&'e AgreementRef, &'e mut PersonalCpr)>,
    ) -> Result<(), LedgerError> {
        let mut unknown = Vec::new();
        {
            let known = self
                .known
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            for (agreement, cpr) in cprs {
                let PersonalCpr::Sealed(sealed) = *cpr else {
                    continue;
                };
                let Some(reference) = InlineRef::of(agreement.as_str()) else {
                    continue;
                };
                match known.get(&reference) {
                    Some(
                        remembered @ Known {
                            key: DataKey::Live(_),
                            ..
                        },
                    ) => {
                        if let Some(number) = remembered.remembered_cpr(&sealed) {
                            *cpr = PersonalCpr::Plain(number);
                        }
                    }
                    // An erased key: [`Keyring::open`] says so.
                    Some(_) => {}
                    None => unknown.push(agreement.as_str().to_string()),
                }
            }
        }
        self.read_keys(db, unknown)
    }

    /// Replaces the sealed CPR of `event` (if it carries one) by the number.
    pub(crate) fn open(&self, db: &Db, event: &mut Event) -> Result<(), LedgerError> {
        let Some((agreement, cpr)) = event.personal_cpr_mut() else {
            return Ok(());
        };
        let PersonalCpr::Sealed(sealed) = *cpr else {
            return Ok(());
        };
        let known = self
            .data_key(db, agreement.as_str())?
            .ok_or_else(|| missing_key(agreement))?;
        let raw = live(agreement, known.key)?;
        if let Some(number) = known.remembered_cpr(&sealed) {
            *cpr = PersonalCpr::Plain(number);
            return Ok(());
        }
        let key = chacha_key(&raw);
        let digits = open_cpr(&key, agreement.as_str(), sealed.as_bytes()).ok_or_else(|| {
            LedgerError::DataKeyDamaged {
                agreement: agreement.to_string(),
                why: "a CPR sealed under its data key does not open (the payload or the key \
                      was altered)"
                    .into(),
            }
        })?;
        let text = std::str::from_utf8(&digits).ok();
        let number = text.and_then(|text| Cpr::parse(text).ok()).ok_or_else(|| {
            LedgerError::DataKeyDamaged {
                agreement: agreement.to_string(),
                why: "a sealed CPR opens to something that is no CPR".into(),
            }
        })?;
        self.remember_sealed(agreement.as_str(), *sealed.as_bytes(), number);
        *cpr = PersonalCpr::Plain(number);
        Ok(())
    }

    /// Destroys the data key of each of `agreements` in this transaction: the
    /// wrapped key is overwritten by nothing and the erasure recorded.
    pub(crate) fn erase(
        &self,
        db: &Db,
        agreements: &[AgreementRef],
        at_us: i64,
        position: u64,
    ) -> Result<(), LedgerError> {
        let position = super::sql::position(position)?;
        for agreement in agreements {
            db.execute(
                "UPDATE subject_keys SET wrapped = NULL, erased_at_us = ?2, erased_position = ?3 WHERE agreement = ?1",
                &[agreement.as_str().into(), at_us.into(), position],
            )?;
        }
        self.forget();
        Ok(())
    }
}

fn missing_key(agreement: &AgreementRef) -> LedgerError {
    LedgerError::DataKeyDamaged {
        agreement: agreement.to_string(),
        why: "it has no data key in subject_keys, but the log holds a CPR sealed under one".into(),
    }
}

fn live(agreement: &AgreementRef, key: DataKey) -> Result<[u8; 32], LedgerError> {
    match key {
        DataKey::Live(key) => Ok(key),
        DataKey::Erased { at_us, position } => Err(LedgerError::PersonalDataErased {
            agreement: agreement.to_string(),
            erased_on: super::store::date_text(at_us),
            position,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_round_trips_and_a_bad_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        let created = KeyFile::create(&path).unwrap();
        let loaded = KeyFile::load(&path).unwrap();
        assert_eq!(created.id(), loaded.id());
        assert!(matches!(
            KeyFile::create(&path),
            Err(LedgerError::KeyFileIo { .. })
        ));
        // A second creator finds the first's file whole, and no staged file stays.
        assert_eq!(KeyFile::load_or_create(&path).unwrap().id(), created.id());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        fs::write(dir.path().join("bad"), "sf2520-kek-v1:1234\n").unwrap();
        fs::set_permissions(
            dir.path().join("bad"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        assert!(matches!(
            KeyFile::load(&dir.path().join("bad")),
            Err(LedgerError::KeyFileInvalid { .. })
        ));
        assert!(matches!(
            KeyFile::load(&dir.path().join("none")),
            Err(LedgerError::KeyFileMissing { .. })
        ));
    }

    /// The key file, wrapping and sealing of docs/log-format.md ("Sealed vectors",
    /// generated there from the recipe by tests/log_format.rs) are this code's.
    #[test]
    fn the_documents_sealed_vectors_are_what_this_code_makes() {
        let doc = include_str!("../../docs/log-format.md");
        let run = |first: u8| -> Vec<u8> { (first..first + 32).collect() };
        let hex_lines = |bytes: &[u8]| {
            bytes
                .chunks(16)
                .map(|chunk| {
                    chunk
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        let secret: [u8; 32] = run(0).try_into().unwrap();
        let file = KeyFile::from_secret(Path::new("doc"), &secret);
        assert!(doc.contains(&format!("key_file_id {}", file.id())));
        let nonce = |first: u8| -> [u8; NONCE_LEN] { run(first)[..NONCE_LEN].try_into().unwrap() };
        let wrapped = seal_with(
            &file.wrap,
            nonce(0x40),
            &aad(AAD_DATA_KEY, "BA000123456"),
            &run(0x20),
        );
        assert!(
            doc.contains(&hex_lines(&wrapped)),
            "the wrapped key differs from the document's"
        );
        let keyring = Keyring::new(file);
        let DataKey::Live(data_key) = keyring
            .unwrap_row("BA000123456", Some(&wrapped), None, None)
            .unwrap()
        else {
            panic!("a live key")
        };
        let data_key = chacha_key(&data_key);
        let sealed = seal_with(
            &data_key,
            nonce(0x50),
            &aad(AAD_CPR, "BA000123456"),
            b"0101901234",
        );
        // In the AgreementRegistered payload the sealed CPR follows its length 0x26.
        let mut in_payload = vec![0x26];
        in_payload.extend(&sealed);
        let sealed_array: [u8; SEALED_CPR_LEN] = sealed.as_slice().try_into().unwrap();
        assert_eq!(
            open_cpr(&data_key, "BA000123456", &sealed_array),
            Some(*b"0101901234")
        );
        assert_eq!(open_cpr(&data_key, "BA000123457", &sealed_array), None);
        let payload_hex = doc.replace('\n', " ");
        assert!(payload_hex.contains(&hex_lines(&in_payload).replace('\n', " ")));
    }

    #[test]
    fn a_value_sealed_for_one_agreement_does_not_open_for_another() {
        let key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &[9; 32]).unwrap());
        let sealed = seal_bytes(&key, &aad(AAD_CPR, "A-1"), b"0101901234");
        assert_eq!(sealed.len(), SEALED_CPR_LEN);
        assert_eq!(
            open_bytes(&key, &aad(AAD_CPR, "A-1"), &sealed).as_deref(),
            Some(&b"0101901234"[..])
        );
        assert!(open_bytes(&key, &aad(AAD_CPR, "A-2"), &sealed).is_none());
        let mut flipped = sealed.clone();
        flipped[14] ^= 1;
        assert!(open_bytes(&key, &aad(AAD_CPR, "A-1"), &flipped).is_none());
    }
}
