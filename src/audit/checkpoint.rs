//! Signed checkpoints: a head signed with the operator's ed25519 key (`[audit]
//! signing_key` in the config), so that an auditor who holds only the public key
//! can check a head someone handed over, and then that the log still holds it.
//!
//! A checkpoint is a small text file:
//!
//! ```text
//! sf2520-checkpoint v1
//! head 42:5a5a…(64 hex digits)
//! made 2026-12-01T21:00:00Z
//! public-key <32 bytes in hex>
//! signature <64 bytes in hex>
//! ```
//!
//! The signature (ed25519, RFC 8032) is over the first three lines exactly as
//! written, each ending in `\n`. The `public-key` line says which key signed; it
//! is not trusted: the verifier names the key it trusts.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use serde::Deserialize;

use super::Anchor;

/// The first line of every checkpoint.
pub const MAGIC: &str = "sf2520-checkpoint v1";

/// What can go wrong with keys and checkpoints; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("{path} can be read by others (mode {mode:o}); the signing key must be private: chmod 600 {path}")]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("{path} is not an ed25519 private key in PKCS#8 DER ({reason}); make one with `openssl genpkey -algorithm ed25519 -outform DER -out {path}`")]
    BadKey { path: PathBuf, reason: String },
    #[error("{path}, line {line}: {what}")]
    Malformed {
        path: PathBuf,
        line: usize,
        what: String,
    },
    #[error("{path}: the signature does not verify with public key {public_key}: the checkpoint was altered or signed with another key")]
    BadSignature { path: PathBuf, public_key: String },
    #[error("the public key {0:?} is not 64 hex digits (32 bytes)")]
    BadPublicKey(String),
}

/// The `[audit]` section of the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// The ed25519 private key (PKCS#8 DER) that signs checkpoints; relative to the
    /// config file's directory.
    pub signing_key: Option<PathBuf>,
}

#[derive(Deserialize)]
struct ConfigFile {
    audit: Option<AuditConfig>,
}

/// Reads the `[audit]` section of the config file at `path` (other sections are
/// ignored); relative paths are resolved against the file's directory.
pub fn load_config(path: &Path) -> Result<AuditConfig, CheckpointError> {
    let text = std::fs::read_to_string(path).map_err(|source| CheckpointError::Read {
        what: "config file",
        path: path.to_owned(),
        source,
    })?;
    let file: ConfigFile = toml::from_str(&text).map_err(|error| CheckpointError::Config {
        path: path.to_owned(),
        message: error.to_string(),
    })?;
    let mut config = file.audit.unwrap_or_default();
    if let Some(key) = &mut config.signing_key {
        if key.is_relative() {
            *key = path.parent().unwrap_or(Path::new(".")).join(&*key);
        }
    }
    Ok(config)
}

/// Loads the signing key, refusing one that group or others can read.
pub fn load_key(path: &Path) -> Result<Ed25519KeyPair, CheckpointError> {
    use std::os::unix::fs::PermissionsExt;
    let read = |source| CheckpointError::Read {
        what: "signing key",
        path: path.to_owned(),
        source,
    };
    let mode = std::fs::metadata(path).map_err(read)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(CheckpointError::TooOpen {
            path: path.to_owned(),
            mode,
        });
    }
    let der = std::fs::read(path).map_err(read)?;
    Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).map_err(|error| CheckpointError::BadKey {
        path: path.to_owned(),
        reason: error.to_string(),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&text[at..at + 2], 16).ok())
        .collect()
}

/// A public key given as 64 hex digits.
pub fn parse_public_key(text: &str) -> Result<[u8; 32], CheckpointError> {
    from_hex(text.trim())
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| CheckpointError::BadPublicKey(text.to_string()))
}

/// The signed lines of a checkpoint.
fn signed_text(anchor: &Anchor, made: &str) -> String {
    format!("{MAGIC}\nhead {anchor}\nmade {made}\n")
}

/// A checkpoint of `anchor`, made at `made` (RFC 3339), signed with `key`.
pub fn sign(key: &Ed25519KeyPair, anchor: &Anchor, made: &str) -> String {
    let mut text = signed_text(anchor, made);
    let signature = key.sign(text.as_bytes());
    let _ = writeln!(text, "public-key {}", hex(key.public_key().as_ref()));
    let _ = writeln!(text, "signature {}", hex(signature.as_ref()));
    text
}

/// The public key of a signing key, in hex.
pub fn public_key_hex(key: &Ed25519KeyPair) -> String {
    hex(key.public_key().as_ref())
}

/// Reads the checkpoint at `path` and checks its signature with `trusted`; the
/// head it vouches for.
pub fn verify_checkpoint(path: &Path, trusted: &[u8; 32]) -> Result<Anchor, CheckpointError> {
    let text = std::fs::read_to_string(path).map_err(|source| CheckpointError::Read {
        what: "checkpoint",
        path: path.to_owned(),
        source,
    })?;
    let malformed = |line: usize, what: &str| CheckpointError::Malformed {
        path: path.to_owned(),
        line,
        what: what.to_string(),
    };
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() != 5 || !text.ends_with('\n') {
        return Err(malformed(
            lines.len(),
            "a checkpoint has exactly five lines",
        ));
    }
    if lines[0] != MAGIC {
        return Err(malformed(1, &format!("expected {MAGIC:?}")));
    }
    let field = |index: usize, name: &str| {
        lines[index]
            .strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(' '))
            .ok_or_else(|| malformed(index + 1, &format!("expected `{name} …`")))
    };
    let anchor: Anchor = field(1, "head")?
        .parse()
        .map_err(|error: super::AnchorParseError| malformed(2, &error.to_string()))?;
    let made = field(2, "made")?;
    field(3, "public-key")?;
    let signature = from_hex(field(4, "signature")?)
        .filter(|bytes| bytes.len() == 64)
        .ok_or_else(|| malformed(5, "the signature is not 128 hex digits"))?;
    UnparsedPublicKey::new(&ED25519, trusted)
        .verify(signed_text(&anchor, made).as_bytes(), &signature)
        .map_err(|_| CheckpointError::BadSignature {
            path: path.to_owned(),
            public_key: hex(trusted),
        })?;
    Ok(anchor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Ed25519KeyPair {
        let document = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
        Ed25519KeyPair::from_pkcs8(document.as_ref()).unwrap()
    }

    #[test]
    fn a_signed_checkpoint_verifies_and_any_change_does_not() {
        let key = key();
        let anchor = Anchor {
            position: 42,
            hash: [0x5a; 32],
        };
        let text = sign(&key, &anchor, "2026-12-01T21:00:00Z");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint");
        std::fs::write(&path, &text).unwrap();
        let trusted = parse_public_key(&public_key_hex(&key)).unwrap();
        assert_eq!(verify_checkpoint(&path, &trusted).unwrap(), anchor);
        std::fs::write(&path, text.replace("head 42:", "head 43:")).unwrap();
        assert!(matches!(
            verify_checkpoint(&path, &trusted),
            Err(CheckpointError::BadSignature { .. })
        ));
        std::fs::write(&path, &text).unwrap();
        let other = parse_public_key(&public_key_hex(&self::key())).unwrap();
        assert!(matches!(
            verify_checkpoint(&path, &other),
            Err(CheckpointError::BadSignature { .. })
        ));
    }
}
