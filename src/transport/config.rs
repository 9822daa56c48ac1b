//! The `[sftp]` configuration section: where Serviceplatformen is, who we are, and how patient to be.
//!
//! The section is read from the same TOML file as the rest of the program's settings;
//! other sections are left alone. Every key is checked when the file is loaded, so a
//! bad value is reported before anything connects, naming the key and what is wrong.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use russh::keys::ssh_key::Fingerprint;
use russh::keys::{Algorithm, EcdsaCurve, HashAlg, PublicKey};
use serde::Deserialize;
use thiserror::Error;
use uuid::Uuid;

use super::keys::ClientKey;

/// The most characters KOMBIT's `SFTPTypes.xsd` allows in `Sender`, `Recipients`
/// (`SFTPUserType`) and `FileName`.
pub(super) const SCHEMA_MAX_CHARS: usize = 255;

/// Why the configuration was refused. Messages name the file or the `[sftp]` key and what to do.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },

    #[error("[sftp] {key}: {why}")]
    Invalid { key: &'static str, why: String },

    #[error(
        "{what} {path} is readable by group or others (mode {mode:03o}); \
         it holds secrets or decides where they go: run `chmod 600 {path}`"
    )]
    TooOpen {
        what: &'static str,
        path: PathBuf,
        mode: u32,
    },

    #[error("[sftp] private_key {path}: {why}")]
    PrivateKey { path: PathBuf, why: String },
}

/// The `[sftp]` section, validated.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SftpConfig {
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    pub user: String,
    /// An unencrypted RSA (OpenSSH or PEM), ed25519 or ECDSA key. A relative path
    /// in the file is taken relative to the config file's directory.
    pub private_key: PathBuf,
    /// The only host key we accept from the server; never learned on first use.
    pub host_key: PinnedHostKey,
    /// The trigger's `Sender`: the sender's SFTP user name at Serviceplatformen
    /// (KOMBIT's `SFTPUserType`, at most 255 characters). Defaults to `user`.
    #[serde(default)]
    pub sender: String,
    /// The trigger's `Recipients`, SFTP user names; at least one.
    pub recipients: Vec<String>,
    /// `[sftp.routing]`: when set, every trigger's `FileContentDescriptor` carries
    /// `SFTPDynamicRoutingInfo`; otherwise it is empty.
    #[serde(default)]
    pub routing: Option<RoutingConfig>,
    #[serde(default = "default_out_dir")]
    pub remote_out_dir: String,
    #[serde(default = "default_in_dir")]
    pub remote_in_dir: String,
    /// Bounds the TCP connect, SSH handshake and login, and each SFTP request.
    #[serde(default = "default_connect_timeout_secs")]
    pub connect_timeout_secs: u64,
    /// How long to wait for the platform's receipt after the trigger is in place.
    #[serde(default = "default_receipt_timeout_secs")]
    pub receipt_timeout_secs: u64,
    #[serde(default = "default_receipt_poll_interval_ms")]
    pub receipt_poll_interval_ms: u64,
    #[serde(default)]
    pub retry: RetryConfig,
    /// How many kommuner are delivered in parallel.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
}

/// `[sftp.routing]`: the fields of KOMBIT's `SFTPDynamicRoutingInfo` that stay the
/// same for every file. `TransactionId` (the file's `SendersFileId`) and
/// `SenderTimestamp` (when the trigger is written) are filled in per trigger.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    /// `InfRef`: the integration's reference, as agreed with KOMBIT.
    pub inf_ref: String,
    /// `SenderIt-system`: our IT system's UUID at Serviceplatformen.
    pub sender_it_system: String,
    /// `SenderAuthority`: `urn:oio:cvr-nr:` and the sender's 8-digit CVR number.
    pub sender_authority: String,
    /// `RecipientIt-system`, optional.
    #[serde(default)]
    pub recipient_it_system: Option<String>,
    /// `RecipientAuthority`: required by the schema, `urn:oio:cvr-nr:` and 8 digits.
    pub recipient_authority: String,
}

impl RoutingConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        check_text("routing.inf_ref", &self.inf_ref)?;
        parse_uuid("routing.sender_it_system", &self.sender_it_system)?;
        if let Some(recipient) = &self.recipient_it_system {
            parse_uuid("routing.recipient_it_system", recipient)?;
        }
        check_cvr_urn("routing.sender_authority", &self.sender_authority)?;
        check_cvr_urn("routing.recipient_authority", &self.recipient_authority)
    }
}

impl RoutingConfig {
    /// `SenderIt-system` as a UUID; checked when the config was loaded.
    pub fn sender_it_system_uuid(&self) -> Result<Uuid, ConfigError> {
        parse_uuid("routing.sender_it_system", &self.sender_it_system)
    }

    /// `RecipientIt-system` as a UUID, if set; checked when the config was loaded.
    pub fn recipient_it_system_uuid(&self) -> Result<Option<Uuid>, ConfigError> {
        self.recipient_it_system
            .as_deref()
            .map(|text| parse_uuid("routing.recipient_it_system", text))
            .transpose()
    }
}

fn parse_uuid(key: &'static str, text: &str) -> Result<Uuid, ConfigError> {
    Uuid::try_parse(text).map_err(|e| {
        invalid(
            key,
            format!(
                "{text:?} is not a UUID ({e}); write it as xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"
            ),
        )
    })
}

/// KOMBIT's `CVRURNType`: `urn:oio:cvr-nr:[0-9]{8}`.
fn check_cvr_urn(key: &'static str, value: &str) -> Result<(), ConfigError> {
    let digits = value.strip_prefix("urn:oio:cvr-nr:");
    match digits {
        Some(d) if d.len() == 8 && d.bytes().all(|b| b.is_ascii_digit()) => Ok(()),
        _ => Err(invalid(
            key,
            format!("{value:?} is not `urn:oio:cvr-nr:` followed by 8 digits (a CVR number)"),
        )),
    }
}

/// Exponential backoff for connection failures (server down, connection dropped).
/// Each key left out of `[sftp.retry]` takes its default (see `Default`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts in all, the first included; 1 means no retry.
    pub max_attempts: u32,
    /// Delay before the second attempt; doubled after each failure.
    pub initial_delay_ms: u64,
    /// The doubling stops here.
    pub max_delay_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 5,
            initial_delay_ms: 1_000,
            max_delay_ms: 60_000,
        }
    }
}

fn default_port() -> u16 {
    22
}
fn default_out_dir() -> String {
    "OUT".to_owned()
}
fn default_in_dir() -> String {
    "IN".to_owned()
}
fn default_connect_timeout_secs() -> u64 {
    30
}
fn default_receipt_timeout_secs() -> u64 {
    900
}
fn default_receipt_poll_interval_ms() -> u64 {
    5_000
}
fn default_concurrency() -> usize {
    4
}

/// Reads the `[sftp]` section of the TOML file at `path`; `Ok(None)` when it has none.
///
/// Refuses a config file or private key that group or others can read, and checks
/// that the private key is an unencrypted RSA, ed25519 or ECDSA key.
pub fn load(path: &Path) -> Result<Option<SftpConfig>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        what: "config file",
        path: path.to_owned(),
        source,
    })?;
    let base_dir = path.parent().unwrap_or(Path::new("."));
    let Some(config) = parse(&text, base_dir).map_err(|message| ConfigError::Parse {
        path: path.to_owned(),
        message,
    })?
    else {
        return Ok(None);
    };
    refuse_open_permissions("config file", path)?;
    config.validate()?;
    check_private_key(&config.private_key)?;
    Ok(Some(config))
}

/// The whole file as far as this module cares; other sections are ignored.
#[derive(Deserialize)]
struct ConfigFile {
    sftp: Option<SftpConfig>,
}

/// Parses the `[sftp]` section of `text` without touching the disk; relative
/// `private_key` paths are resolved against `base_dir`. The error is TOML's message,
/// which names the key, the line and the column.
fn parse(text: &str, base_dir: &Path) -> Result<Option<SftpConfig>, String> {
    let file: ConfigFile = toml::from_str(text).map_err(|e| e.to_string())?;
    Ok(file.sftp.map(|mut config| {
        if config.private_key.is_relative() {
            config.private_key = base_dir.join(&config.private_key);
        }
        if config.sender.is_empty() {
            config.sender = config.user.clone();
        }
        config
    }))
}

impl SftpConfig {
    /// Checks every value that serde cannot: non-empty names, sane timeouts and limits.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_word("host", &self.host)?;
        check_word("user", &self.user)?;
        check_text("sender", &self.sender)?;
        check_schema_length("sender", &self.sender)?;
        if self.port == 0 {
            return Err(invalid("port", "must be between 1 and 65535"));
        }
        self.validate_recipients()?;
        check_remote_dir("remote_out_dir", &self.remote_out_dir)?;
        check_remote_dir("remote_in_dir", &self.remote_in_dir)?;
        if self.remote_out_dir == self.remote_in_dir {
            return Err(invalid("remote_in_dir", "must differ from remote_out_dir"));
        }
        self.validate_timing()?;
        if let Some(routing) = &self.routing {
            routing.validate()?;
        }
        self.retry.validate()
    }

    /// Things that are allowed but likely wrong, for `config check` to print.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.sender != self.user {
            warnings.push(format!(
                "[sftp] sender {:?} differs from user {:?}: Serviceplatformen expects the \
                 trigger's Sender to be the sending SFTP user's name; remove `sender` to use `user`",
                self.sender, self.user
            ));
        }
        warnings
    }

    fn validate_recipients(&self) -> Result<(), ConfigError> {
        if self.recipients.is_empty() {
            return Err(invalid("recipients", "must list at least one recipient"));
        }
        for (index, recipient) in self.recipients.iter().enumerate() {
            if recipient.trim().is_empty() {
                return Err(invalid(
                    "recipients",
                    format!("entry {} is empty", index + 1),
                ));
            }
            check_text("recipients", recipient)?;
            check_schema_length("recipients", recipient)?;
            if self.recipients[..index].contains(recipient) {
                return Err(invalid(
                    "recipients",
                    format!("{recipient:?} is listed twice"),
                ));
            }
        }
        Ok(())
    }

    fn validate_timing(&self) -> Result<(), ConfigError> {
        if self.connect_timeout_secs == 0 {
            return Err(invalid("connect_timeout_secs", "must be at least 1"));
        }
        if self.receipt_timeout_secs == 0 {
            return Err(invalid("receipt_timeout_secs", "must be at least 1"));
        }
        if self.receipt_poll_interval_ms == 0 {
            return Err(invalid("receipt_poll_interval_ms", "must be at least 1"));
        }
        if self.receipt_poll_interval_ms > self.receipt_timeout_secs.saturating_mul(1_000) {
            return Err(invalid(
                "receipt_poll_interval_ms",
                format!(
                    "{} ms is longer than receipt_timeout_secs ({} s)",
                    self.receipt_poll_interval_ms, self.receipt_timeout_secs
                ),
            ));
        }
        if self.concurrency == 0 {
            return Err(invalid("concurrency", "must be at least 1"));
        }
        Ok(())
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs)
    }

    pub fn receipt_timeout(&self) -> Duration {
        Duration::from_secs(self.receipt_timeout_secs)
    }

    pub fn receipt_poll_interval(&self) -> Duration {
        Duration::from_millis(self.receipt_poll_interval_ms)
    }

    /// `host:port`, for messages.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

impl RetryConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_attempts == 0 {
            return Err(invalid("retry.max_attempts", "must be at least 1"));
        }
        if self.initial_delay_ms > self.max_delay_ms {
            return Err(invalid(
                "retry.initial_delay_ms",
                format!(
                    "{} ms is more than retry.max_delay_ms ({} ms)",
                    self.initial_delay_ms, self.max_delay_ms
                ),
            ));
        }
        Ok(())
    }
}

fn invalid(key: &'static str, why: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        why: why.into(),
    }
}

/// A value that goes on the wire as a name: non-empty, no whitespace.
fn check_word(key: &'static str, value: &str) -> Result<(), ConfigError> {
    if value.is_empty() {
        return Err(invalid(key, "is empty"));
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(key, format!("{value:?} contains whitespace")));
    }
    Ok(())
}

/// A value that goes into the trigger XML: non-empty, no control characters.
fn check_text(key: &'static str, value: &str) -> Result<(), ConfigError> {
    if value.trim().is_empty() {
        return Err(invalid(key, "is empty"));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(
            key,
            format!("{value:?} contains a control character"),
        ));
    }
    Ok(())
}

/// KOMBIT's schema caps these values at 255 characters.
fn check_schema_length(key: &'static str, value: &str) -> Result<(), ConfigError> {
    let chars = value.chars().count();
    if chars > SCHEMA_MAX_CHARS {
        return Err(invalid(
            key,
            format!(
                "{chars} characters; KOMBIT's SFTPTypes.xsd allows at most {SCHEMA_MAX_CHARS} (SFTPUserType)"
            ),
        ));
    }
    Ok(())
}

/// A directory on the server, relative to the login directory (`OUT`, `IN`).
fn check_remote_dir(key: &'static str, value: &str) -> Result<(), ConfigError> {
    check_word(key, value)?;
    if value.split('/').any(|part| part == "..") {
        return Err(invalid(key, format!("{value:?} must not contain `..`")));
    }
    Ok(())
}

/// Refuses a file that group or others may read: it holds a secret (the private key)
/// or decides where our files go and which host key we trust (the config).
#[cfg(unix)]
fn refuse_open_permissions(what: &'static str, path: &Path) -> Result<(), ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let metadata = std::fs::metadata(path).map_err(|source| ConfigError::Read {
        what,
        path: path.to_owned(),
        source,
    })?;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(ConfigError::TooOpen {
            what,
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn refuse_open_permissions(_what: &'static str, _path: &Path) -> Result<(), ConfigError> {
    Ok(())
}

/// The key must be private to us and loadable without a passphrase: the batch job
/// runs unattended.
fn check_private_key(path: &Path) -> Result<(), ConfigError> {
    refuse_open_permissions("private key", path)?;
    ClientKey::load(path).map_err(|e| ConfigError::PrivateKey {
        path: path.to_owned(),
        why: e.to_string(),
    })?;
    Ok(())
}

/// The server's host key we trust: its SHA-256 fingerprint, taken either from a
/// `SHA256:...` fingerprint or from an OpenSSH public-key or known_hosts line
/// (which also says the key's algorithm).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct PinnedHostKey {
    fingerprint: Fingerprint,
    /// The key's algorithm, when the pin is a key line; a fingerprint does not say.
    algorithm: Option<Algorithm>,
}

/// Host-key algorithms one at a time, for a pin by fingerprint: a server offers
/// one host key per handshake, the first of the client's list it has.
const HOST_KEY_FAMILIES: [Algorithm; 5] = [
    Algorithm::Ed25519,
    Algorithm::Ecdsa {
        curve: EcdsaCurve::NistP256,
    },
    Algorithm::Ecdsa {
        curve: EcdsaCurve::NistP384,
    },
    Algorithm::Ecdsa {
        curve: EcdsaCurve::NistP521,
    },
    Algorithm::Rsa { hash: None },
];

impl PinnedHostKey {
    /// The expected `SHA256:` fingerprint.
    pub fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }

    /// The pinned key's algorithm (`ssh-rsa`, `ssh-ed25519`, …), when known.
    pub fn algorithm(&self) -> Option<&Algorithm> {
        self.algorithm.as_ref()
    }

    /// The host-key algorithm lists to offer the server, one handshake each, in
    /// order. A key-line pin gives one list: exactly its own algorithm (an RSA
    /// key's SHA-2 signatures, never SHA-1), so a server that also has keys of
    /// other types shows the pinned one. A fingerprint pin does not say which
    /// algorithm, so each is asked for in turn, ed25519 first.
    pub fn host_key_algorithms(&self) -> Vec<Vec<Algorithm>> {
        match &self.algorithm {
            Some(algorithm) => vec![signature_algorithms(algorithm)],
            None => HOST_KEY_FAMILIES.iter().map(signature_algorithms).collect(),
        }
    }

    /// Whether the server's offered key is the pinned one.
    pub fn matches(&self, offered: &PublicKey) -> bool {
        offered.fingerprint(HashAlg::Sha256) == self.fingerprint
    }

    fn from_fingerprint(text: &str) -> Result<Self, String> {
        // OpenSSH prints fingerprints without base64 padding; accept it pasted either way.
        let fingerprint = Fingerprint::from_str(text.trim_end_matches('='))
            .map_err(|e| format!("{text:?} is not a valid SHA256: fingerprint ({e})"))?;
        Ok(PinnedHostKey {
            fingerprint,
            algorithm: None,
        })
    }

    /// Accepts `ssh-ed25519 AAAA... [comment]` and known_hosts lines that put host
    /// names before it (`[host]:port ssh-ed25519 AAAA...`).
    fn from_key_line(text: &str) -> Result<Self, String> {
        if text.starts_with('@') {
            return Err(
                "known_hosts marker lines (@cert-authority, @revoked) are not host keys".into(),
            );
        }
        let tokens: Vec<&str> = text.split_whitespace().collect();
        let start = tokens
            .iter()
            .position(|token| is_key_algorithm(token))
            .ok_or_else(|| {
                format!(
                    "{text:?} is neither a SHA256: fingerprint nor an OpenSSH public key line \
                     (`ssh-ed25519 AAAA...`)"
                )
            })?;
        let line = tokens[start..].join(" ");
        let key = PublicKey::from_openssh(&line)
            .map_err(|e| format!("cannot parse the public key in {text:?}: {e}"))?;
        Ok(PinnedHostKey {
            fingerprint: key.fingerprint(HashAlg::Sha256),
            algorithm: Some(key.algorithm()),
        })
    }
}

/// The signature algorithms a host key of `algorithm` signs with: an RSA key
/// with rsa-sha2-512 or rsa-sha2-256 (OpenSSH's order), any other key with its own.
fn signature_algorithms(algorithm: &Algorithm) -> Vec<Algorithm> {
    match algorithm {
        Algorithm::Rsa { .. } => vec![
            Algorithm::Rsa {
                hash: Some(HashAlg::Sha512),
            },
            Algorithm::Rsa {
                hash: Some(HashAlg::Sha256),
            },
        ],
        other => vec![other.clone()],
    }
}

fn is_key_algorithm(token: &str) -> bool {
    matches!(Algorithm::new(token), Ok(algorithm) if !matches!(algorithm, Algorithm::Other(_)))
}

impl FromStr for PinnedHostKey {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err(
                "host_key is empty; pin the server's key, it is never trusted on first use".into(),
            );
        }
        if text.starts_with("SHA256:") {
            return Self::from_fingerprint(text);
        }
        if text.starts_with("MD5:") || text.starts_with("SHA512:") {
            return Err(format!("{text:?}: only SHA256: fingerprints are accepted"));
        }
        Self::from_key_line(text)
    }
}

impl TryFrom<String> for PinnedHostKey {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

impl std::fmt::Display for PinnedHostKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.fingerprint.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use russh::keys::ssh_key::private::Ed25519Keypair;
    use russh::keys::ssh_key::LineEnding;
    use russh::keys::PrivateKey;

    /// A fixed ed25519 key built from a seed, so no key material lives in the repository.
    fn test_key(seed: u8) -> PrivateKey {
        PrivateKey::from(Ed25519Keypair::from_seed(&[seed; 32]))
    }

    fn host_line(seed: u8) -> String {
        test_key(seed).public_key().to_openssh().unwrap()
    }

    fn minimal(host_key: &str) -> String {
        format!(
            "[other]\nkept = true\n\n[sftp]\nhost = \"sftp.example\"\nuser = \"ky\"\n\
             private_key = \"id_ed25519\"\nhost_key = \"{host_key}\"\n\
             sender = \"KY\"\nrecipients = [\"UDK\"]\n"
        )
    }

    /// Writes the config and key files with the given modes into a fresh directory.
    fn write_files(config: &str, config_mode: u32, key_mode: u32) -> (tempfile::TempDir, PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key_path = dir.path().join("id_ed25519");
        let key_text = test_key(1).to_openssh(LineEnding::LF).unwrap();
        std::fs::write(&key_path, key_text.as_bytes()).unwrap();
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(key_mode)).unwrap();
        let config_path = dir.path().join("sf2520.toml");
        std::fs::write(&config_path, config).unwrap();
        std::fs::set_permissions(&config_path, std::fs::Permissions::from_mode(config_mode))
            .unwrap();
        (dir, config_path)
    }

    fn parsed(text: &str) -> Result<SftpConfig, ConfigError> {
        let config = parse(text, Path::new("/etc/sf2520"))
            .map_err(|message| ConfigError::Parse {
                path: "test.toml".into(),
                message,
            })?
            .expect("has an [sftp] section");
        config.validate()?;
        Ok(config)
    }

    #[test]
    fn defaults_fill_the_optional_keys() {
        let config = parsed(&minimal(&host_line(2))).unwrap();
        assert_eq!(config.port, 22);
        assert_eq!(config.remote_out_dir, "OUT");
        assert_eq!(config.remote_in_dir, "IN");
        assert_eq!(config.concurrency, 4);
        assert_eq!(config.retry, RetryConfig::default());
        assert_eq!(config.private_key, Path::new("/etc/sf2520/id_ed25519"));
    }

    #[test]
    fn a_file_without_sftp_section_is_none() {
        assert!(parse("[ledger]\npath = \"x\"\n", Path::new("."))
            .unwrap()
            .is_none());
    }

    #[test]
    fn host_key_line_and_fingerprint_pin_the_same_key() {
        let line = host_line(2);
        let fingerprint = test_key(2)
            .public_key()
            .fingerprint(HashAlg::Sha256)
            .to_string();
        let from_line: PinnedHostKey = line.parse().unwrap();
        let from_known_hosts: PinnedHostKey = format!("[127.0.0.1]:2222 {line}").parse().unwrap();
        let from_fingerprint: PinnedHostKey = fingerprint.parse().unwrap();
        assert_eq!(from_line.fingerprint(), from_fingerprint.fingerprint());
        assert_eq!(from_known_hosts, from_line);
        // A key line says the key's algorithm, and the client asks for exactly
        // it; a fingerprint does not, and every algorithm is asked for in turn.
        assert_eq!(from_line.algorithm(), Some(&Algorithm::Ed25519));
        assert_eq!(from_line.host_key_algorithms(), [[Algorithm::Ed25519]]);
        assert_eq!(from_fingerprint.algorithm(), None);
        assert_eq!(from_fingerprint.host_key_algorithms().len(), 5);
        assert_eq!(from_line.to_string(), fingerprint);
        assert!(from_line.matches(test_key(2).public_key()));
        assert!(!from_line.matches(test_key(3).public_key()));
    }

    #[test]
    fn bad_host_keys_are_refused_with_the_reason() {
        for (text, expected) in [
            ("", "never trusted on first use"),
            ("MD5:16:27:ac", "only SHA256"),
            ("SHA256:not-base64!", "not a valid SHA256"),
            ("just some text", "neither a SHA256: fingerprint nor"),
            ("@revoked * ssh-ed25519 AAAA", "marker lines"),
        ] {
            let error = text.parse::<PinnedHostKey>().unwrap_err();
            assert!(error.contains(expected), "{text:?} gave {error:?}");
        }
    }

    #[test]
    fn unknown_and_missing_keys_are_named() {
        let typo = minimal(&host_line(2)).replace("sender =", "sendr =");
        let error = parsed(&typo).unwrap_err().to_string();
        assert!(error.contains("sendr"), "{error}");
        let missing = minimal(&host_line(2)).replace("user = \"ky\"\n", "");
        let error = parsed(&missing).unwrap_err().to_string();
        let bad_pin = parsed(&minimal("SHA256:short")).unwrap_err().to_string();
        assert!(
            bad_pin.contains("host_key") && bad_pin.contains("SHA256:short"),
            "{bad_pin}"
        );
        assert!(error.contains("user"), "{error}");
    }

    #[test]
    fn invalid_values_name_the_key() {
        let base = minimal(&host_line(2));
        for ((from, to), key) in [
            (("recipients = [\"UDK\"]", "recipients = []"), "recipients"),
            (("recipients = [\"UDK\"]", "recipients = [\"UDK\", \"UDK\"]"), "recipients"),
            (("host = \"sftp.example\"", "host = \"\""), "host"),
            (("[sftp]", "[sftp]\nport = 0"), "port"),
            (("[sftp]", "[sftp]\nremote_in_dir = \"OUT\""), "remote_in_dir"),
            (("[sftp]", "[sftp]\nremote_out_dir = \"../OUT\""), "remote_out_dir"),
            (("[sftp]", "[sftp]\nconcurrency = 0"), "concurrency"),
            (("[sftp]", "[sftp]\nreceipt_timeout_secs = 0"), "receipt_timeout_secs"),
            (
                ("[sftp]", "[sftp]\nreceipt_timeout_secs = 1\nreceipt_poll_interval_ms = 5000"),
                "receipt_poll_interval_ms",
            ),
            (
                ("[other]", "[sftp.retry]\nmax_attempts = 0\ninitial_delay_ms = 1\nmax_delay_ms = 2\n[other]"),
                "retry.max_attempts",
            ),
            (
                ("[other]", "[sftp.retry]\nmax_attempts = 3\ninitial_delay_ms = 10\nmax_delay_ms = 2\n[other]"),
                "retry.initial_delay_ms",
            ),
        ] {
            let text = base.replace(from, to);
            match parsed(&text) {
                Err(ConfigError::Invalid { key: named, .. }) => assert_eq!(named, key, "{text}"),
                other => panic!("expected Invalid {{ key: {key} }} for\n{text}\ngot {other:?}"),
            }
        }
    }

    #[test]
    fn sender_defaults_to_user_and_a_different_sender_is_warned_about() {
        let base = minimal(&host_line(2)).replace("sender = \"KY\"\n", "");
        let config = parsed(&base).unwrap();
        assert_eq!(config.sender, "ky");
        assert!(config.warnings().is_empty());
        let config = parsed(&minimal(&host_line(2))).unwrap();
        let warnings = config.warnings();
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains("\"KY\"") && warnings[0].contains("\"ky\""),
            "{warnings:?}"
        );
    }

    #[test]
    fn names_longer_than_the_schema_allows_are_refused() {
        let base = minimal(&host_line(2));
        let fits = base.replace(
            "sender = \"KY\"",
            &format!("sender = \"{}\"", "æ".repeat(255)),
        );
        assert!(
            parsed(&fits).is_ok(),
            "255 characters fit, whatever their bytes"
        );
        for (from, to, key) in [
            (
                "sender = \"KY\"",
                format!("sender = \"{}\"", "S".repeat(256)),
                "sender",
            ),
            (
                "recipients = [\"UDK\"]",
                format!("recipients = [\"{}\"]", "R".repeat(256)),
                "recipients",
            ),
        ] {
            match parsed(&base.replace(from, &to)) {
                Err(ConfigError::Invalid { key: named, why }) => {
                    assert_eq!(named, key);
                    assert!(why.contains("255"), "{why}");
                }
                other => panic!("{key}: expected Invalid, got {other:?}"),
            }
        }
    }

    #[test]
    fn routing_values_are_checked_against_the_schema_types() {
        let routing = "\n[sftp.routing]\ninf_ref = \"KY\"\n\
                       sender_it_system = \"6f1c8a53-2b4e-4d2a-9c1e-0a7b3c5d9e11\"\n\
                       sender_authority = \"urn:oio:cvr-nr:29189846\"\n\
                       recipient_authority = \"urn:oio:cvr-nr:29980540\"\n";
        let base = minimal(&host_line(2)).replace("[other]\nkept = true\n\n", "") + routing;
        let config = parsed(&base).unwrap();
        assert_eq!(config.routing.as_ref().unwrap().inf_ref, "KY");
        for (from, to, key) in [
            (
                "urn:oio:cvr-nr:29189846",
                "29189846",
                "routing.sender_authority",
            ),
            (
                "urn:oio:cvr-nr:29980540",
                "urn:oio:cvr-nr:2998054",
                "routing.recipient_authority",
            ),
            (
                "6f1c8a53-2b4e-4d2a-9c1e-0a7b3c5d9e11",
                "not-a-uuid",
                "routing.sender_it_system",
            ),
            ("inf_ref = \"KY\"", "inf_ref = \" \"", "routing.inf_ref"),
        ] {
            match parsed(&base.replace(from, to)) {
                Err(ConfigError::Invalid { key: named, .. }) => assert_eq!(named, key),
                other => panic!("{key}: expected Invalid, got {other:?}"),
            }
        }
        let missing = base.replace("recipient_authority = \"urn:oio:cvr-nr:29980540\"\n", "");
        assert!(parsed(&missing)
            .unwrap_err()
            .to_string()
            .contains("recipient_authority"));
    }

    #[test]
    fn load_reads_a_private_file_and_its_key() {
        let (_dir, path) = write_files(&minimal(&host_line(2)), 0o600, 0o600);
        let config = load(&path).unwrap().unwrap();
        assert_eq!(
            config.private_key,
            path.parent().unwrap().join("id_ed25519")
        );
    }

    #[test]
    fn a_config_file_readable_by_others_is_refused_with_the_chmod_fix() {
        let (_dir, path) = write_files(&minimal(&host_line(2)), 0o644, 0o600);
        let error = load(&path).unwrap_err();
        assert!(matches!(
            error,
            ConfigError::TooOpen {
                what: "config file",
                mode: 0o644,
                ..
            }
        ));
        let message = error.to_string();
        assert!(
            message.contains(&format!("chmod 600 {}", path.display())),
            "{message}"
        );
    }

    #[test]
    fn a_private_key_readable_by_group_is_refused_with_the_chmod_fix() {
        let (dir, path) = write_files(&minimal(&host_line(2)), 0o600, 0o640);
        let message = load(&path).unwrap_err().to_string();
        let key_path = dir.path().join("id_ed25519");
        assert!(
            message.contains(&format!("chmod 600 {}", key_path.display())),
            "{message}"
        );
    }

    #[test]
    fn a_missing_or_garbled_private_key_is_named() {
        let (dir, path) = write_files(&minimal(&host_line(2)), 0o600, 0o600);
        std::fs::write(dir.path().join("id_ed25519"), "not a key").unwrap();
        let error = load(&path).unwrap_err();
        assert!(matches!(error, ConfigError::PrivateKey { .. }), "{error}");
        std::fs::remove_file(dir.path().join("id_ed25519")).unwrap();
        let message = load(&path).unwrap_err().to_string();
        assert!(message.contains("id_ed25519"), "{message}");
    }
}
