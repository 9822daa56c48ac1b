//! SftpClient: one SSH connection to Serviceplatformen with a pinned host key, and the
//! handful of SFTP operations delivery needs.
//!
//! The server must present exactly the host key in `[sftp] host_key`; any other key
//! ends the handshake before we authenticate or send a byte of data. Paths are
//! relative to the login directory (where `OUT/` and `IN/` live).

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use russh::client::{self, Handle};
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{Disconnect, Preferred};
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::client::SftpSession;
use russh_sftp::protocol::{FileAttributes, OpenFlags};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::config::{PinnedHostKey, SftpConfig};
use super::error::TransportError;
use super::keys::{ClientKey, KeyError};

/// How often an idle connection is probed, so that a dead server is noticed while we
/// wait for a receipt rather than at the next request.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);
const KEEPALIVE_MAX: usize = 3;

/// Mode of files we create on the server: `rw-------`.
const OWNER_READ_WRITE: u32 = 0o600;

/// An authenticated SFTP session. Dropping it closes the connection; [`SftpClient::close`]
/// does so politely.
pub struct SftpClient {
    address: String,
    handle: Handle<PinnedKeyCheck>,
    sftp: SftpSession,
}

/// The russh callback that enforces the pin.
struct PinnedKeyCheck {
    expected: PinnedHostKey,
}

/// What can end the handshake: russh's own errors, or our refusal of the host key.
#[derive(Debug)]
enum HandshakeError {
    Ssh(russh::Error),
    HostKeyMismatch { offered: String },
}

impl From<russh::Error> for HandshakeError {
    fn from(error: russh::Error) -> Self {
        HandshakeError::Ssh(error)
    }
}

impl client::Handler for PinnedKeyCheck {
    type Error = HandshakeError;

    /// Accepts only the pinned key. For a host certificate, the certified key must be
    /// the pinned one; the certificate's signer earns no trust.
    async fn check_server_key(
        &mut self,
        server_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let offered = server_key.public_key();
        if self.expected.matches(&offered) {
            Ok(true)
        } else {
            Err(HandshakeError::HostKeyMismatch {
                offered: format!(
                    "{} ({})",
                    offered.fingerprint(HashAlg::Sha256),
                    offered.algorithm()
                ),
            })
        }
    }
}

impl SftpClient {
    /// Connects, checks the host key against the pin, logs in with the private key and
    /// starts SFTP, all within `connect_timeout_secs`.
    pub async fn connect(config: &SftpConfig) -> Result<SftpClient, TransportError> {
        let key = load_private_key(&config.private_key)?;
        match tokio::time::timeout(config.connect_timeout(), Self::open(config, key)).await {
            Ok(result) => result,
            Err(_elapsed) => Err(TransportError::ConnectTimeout {
                address: config.address(),
                timeout_secs: config.connect_timeout_secs,
            }),
        }
    }

    async fn open(config: &SftpConfig, key: ClientKey) -> Result<SftpClient, TransportError> {
        let address = config.address();
        let mut handle = handshake(config).await?;
        let auth = authenticate(&mut handle, config, key).await?;
        if !auth.success() {
            return Err(TransportError::AuthRejected {
                address,
                user: config.user.clone(),
                key_path: config.private_key.clone(),
            });
        }
        let sftp = start_sftp(&handle, config, &address).await?;
        Ok(SftpClient {
            address,
            handle,
            sftp,
        })
    }

    /// `host:port` of the server, for messages.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Writes `bytes` to `path`, creating or truncating it, and waits until the server
    /// has acknowledged every write and the close (and fsync, where offered).
    /// A new file is created readable by the login user only (DESIGN §7.6).
    pub async fn upload(&self, path: &str, bytes: &[u8]) -> Result<(), TransportError> {
        let fail = |e: SftpError| sftp_error("upload", path, e);
        let flags = OpenFlags::CREATE | OpenFlags::TRUNCATE | OpenFlags::WRITE;
        let owner_only = FileAttributes {
            permissions: Some(OWNER_READ_WRITE),
            ..FileAttributes::default()
        };
        let mut file = self
            .sftp
            .open_with_flags_and_attributes(path, flags, owner_only)
            .await
            .map_err(fail)?;
        let io_fail = |e: std::io::Error| io_error("upload", path, e);
        file.write_all(bytes).await.map_err(io_fail)?;
        file.flush().await.map_err(io_fail)?;
        file.shutdown().await.map_err(io_fail)
    }

    /// The size of the file at `path`, as the server reports it.
    pub async fn size(&self, path: &str) -> Result<u64, TransportError> {
        let metadata = self
            .sftp
            .metadata(path)
            .await
            .map_err(|e| sftp_error("stat", path, e))?;
        metadata.size.ok_or_else(|| TransportError::Remote {
            operation: "stat",
            path: path.to_owned(),
            message: "the server did not report a size".into(),
        })
    }

    /// The bytes of the file at `path`, if it holds at most `limit_bytes`; a
    /// larger one is [`TransportError::TooLarge`] and is never read whole: the
    /// size the server reports for the open file is checked first, and the read
    /// stops one byte past the limit whatever that size said (a file still
    /// growing, a server that does not report sizes).
    pub async fn read_at_most(
        &self,
        path: &str,
        limit_bytes: u64,
    ) -> Result<Vec<u8>, TransportError> {
        let too_large = |size_bytes| TransportError::TooLarge {
            path: path.to_owned(),
            size_bytes,
            limit_bytes,
        };
        let mut file = self
            .sftp
            .open(path)
            .await
            .map_err(|e| sftp_error("read", path, e))?;
        let reported = file
            .metadata()
            .await
            .map_err(|e| sftp_error("stat", path, e))?
            .size;
        if let Some(size) = reported.filter(|size| *size > limit_bytes) {
            return Err(too_large(Some(size)));
        }
        let mut bytes = Vec::new();
        (&mut file)
            .take(limit_bytes.saturating_add(1))
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| io_error("read", path, e))?;
        if super::transfer::byte_count(&bytes) > limit_bytes {
            return Err(too_large(None));
        }
        Ok(bytes)
    }

    pub async fn exists(&self, path: &str) -> Result<bool, TransportError> {
        self.sftp
            .try_exists(path)
            .await
            .map_err(|e| sftp_error("stat", path, e))
    }

    pub async fn remove(&self, path: &str) -> Result<(), TransportError> {
        self.sftp
            .remove_file(path)
            .await
            .map_err(|e| sftp_error("remove", path, e))
    }

    /// Renames `from` to `to`. SFTP's rename fails when `to` exists; callers that mean
    /// to replace it remove it first.
    pub async fn rename(&self, from: &str, to: &str) -> Result<(), TransportError> {
        self.sftp
            .rename(from, to)
            .await
            .map_err(|e| sftp_error("rename", &format!("{from} -> {to}"), e))
    }

    /// The plain file names in directory `path` (see [`plain_file_name`]),
    /// sorted. Any other name the server lists (`../x`, `a/b`, a control
    /// character) is left out with a warning naming it: it is never opened or
    /// removed. An OpenSSH server cannot list such names; another server can.
    pub async fn list_dir(&self, path: &str) -> Result<Vec<String>, TransportError> {
        let entries = self
            .sftp
            .read_dir(path)
            .await
            .map_err(|e| sftp_error("list", path, e))?;
        let (names, refused) = plain_names(entries.map(|entry| entry.file_name()));
        for (name, why) in refused {
            tracing::warn!(
                directory = %path,
                name = ?name,
                "the server lists a name that is not a plain file name ({why}); left alone"
            );
        }
        Ok(names)
    }

    /// Ends the SFTP session and the SSH connection. Errors are ignored: the work is
    /// done, and the server cleans up after a dropped connection anyway.
    pub async fn close(self) {
        let _ = self.sftp.close().await;
        let _ = self
            .handle
            .disconnect(Disconnect::ByApplication, "", "en")
            .await;
    }
}

/// Connects and checks the server's host key against the pin. The client asks
/// for the pinned key's algorithm only (a server offers one host key, the first
/// of the client's list that it has), so pinning the RSA key of a server that
/// also has an ed25519 key works; a pin by fingerprint does not say which
/// algorithm, so each is asked for in turn until the server shows the pinned key
/// ([`PinnedHostKey::host_key_algorithms`]).
async fn handshake(config: &SftpConfig) -> Result<Handle<PinnedKeyCheck>, TransportError> {
    let mut offered = Vec::new();
    for algorithms in config.host_key.host_key_algorithms() {
        match try_handshake(config, algorithms).await? {
            Attempt::Pinned(handle) => return Ok(handle),
            Attempt::Offered(key) => offered.push(key),
            Attempt::NoSuchKey => {}
        }
    }
    let mut offered = offered.join(" and ");
    if offered.is_empty() {
        // The server has no key of the pinned type: name the key it does show,
        // for the operator to compare with the one the platform announced.
        let any_key = Preferred::default().key.into_owned();
        offered = match try_handshake(config, any_key).await? {
            Attempt::Pinned(handle) => return Ok(handle),
            Attempt::Offered(key) => key,
            Attempt::NoSuchKey => "no host key this client knows".to_owned(),
        };
        if let Some(algorithm) = config.host_key.algorithm() {
            offered.push_str(&format!(" and no {algorithm} key"));
        }
    }
    Err(handshake_error(
        config,
        HandshakeError::HostKeyMismatch { offered },
    ))
}

/// How one handshake that asked for some host-key algorithms ended.
enum Attempt {
    /// The server showed the pinned key: the session, ready to log in.
    Pinned(Handle<PinnedKeyCheck>),
    /// The server showed another key: its fingerprint and type.
    Offered(String),
    /// The server has no host key of the algorithms asked for.
    NoSuchKey,
}

async fn try_handshake(
    config: &SftpConfig,
    algorithms: Vec<russh::keys::Algorithm>,
) -> Result<Attempt, TransportError> {
    let ssh_config = Arc::new(client::Config {
        keepalive_interval: Some(KEEPALIVE_INTERVAL),
        keepalive_max: KEEPALIVE_MAX,
        preferred: Preferred {
            key: Cow::Owned(algorithms),
            ..Preferred::default()
        },
        ..client::Config::default()
    });
    let check = PinnedKeyCheck {
        expected: config.host_key.clone(),
    };
    let address = (config.host.as_str(), config.port);
    match client::connect(ssh_config, address, check).await {
        Ok(handle) => Ok(Attempt::Pinned(handle)),
        Err(HandshakeError::HostKeyMismatch { offered }) => Ok(Attempt::Offered(offered)),
        Err(HandshakeError::Ssh(russh::Error::NoCommonAlgo {
            kind: russh::AlgorithmKind::Key,
            ..
        })) => Ok(Attempt::NoSuchKey),
        Err(error) => Err(handshake_error(config, error)),
    }
}

/// Logs in with the client key. An RSA key signs through ring with the strongest of
/// rsa-sha2-512 and rsa-sha2-256 the server announces in `server-sig-algs`; a server
/// that announces nothing gets rsa-sha2-512 (OpenSSH has accepted it since 7.2), and
/// one that offers only SHA-1 `ssh-rsa` is refused.
async fn authenticate(
    handle: &mut Handle<PinnedKeyCheck>,
    config: &SftpConfig,
    key: ClientKey,
) -> Result<russh::client::AuthResult, TransportError> {
    let address = config.address();
    match key {
        ClientKey::Russh(key) => {
            let key = PrivateKeyWithHashAlg::new(Arc::new(key), None);
            handle
                .authenticate_publickey(config.user.as_str(), key)
                .await
                .map_err(|e| ssh_error(&address, e))
        }
        ClientKey::Rsa(mut signer) => {
            let announced = handle
                .best_supported_rsa_hash()
                .await
                .map_err(|e| ssh_error(&address, e))?;
            let order = match announced {
                Some(Some(HashAlg::Sha256)) => [HashAlg::Sha256, HashAlg::Sha512],
                None | Some(Some(_)) => [HashAlg::Sha512, HashAlg::Sha256],
                Some(None) => {
                    return Err(TransportError::PrivateKey {
                        path: config.private_key.clone(),
                        message: super::keys::SignError::Sha1.to_string(),
                    })
                }
            };
            // OpenSSH announces every algorithm it knows in server-sig-algs, not the
            // narrower PubkeyAcceptedAlgorithms, so a refusal of the first SHA-2
            // variant is followed by one try of the other.
            let mut result = None;
            for hash in order {
                tracing::debug!(%address, ?hash, "logging in with an RSA key signed by ring");
                let public = signer.public_key().clone();
                let auth = handle
                    .authenticate_publickey_with(
                        config.user.as_str(),
                        public,
                        Some(hash),
                        &mut signer,
                    )
                    .await
                    .map_err(|e| sign_error(config, &address, e))?;
                let success = auth.success();
                result = Some(auth);
                if success {
                    break;
                }
            }
            Ok(result.expect("two hash algorithms were tried"))
        }
    }
}

fn sign_error(config: &SftpConfig, address: &str, error: super::keys::SignError) -> TransportError {
    match error {
        super::keys::SignError::Send => TransportError::Ssh {
            address: address.to_owned(),
            message: error.to_string(),
            connection_lost: true,
        },
        other => TransportError::PrivateKey {
            path: config.private_key.clone(),
            message: other.to_string(),
        },
    }
}

/// Opens a session channel and starts the SFTP subsystem on it.
async fn start_sftp(
    handle: &Handle<PinnedKeyCheck>,
    config: &SftpConfig,
    address: &str,
) -> Result<SftpSession, TransportError> {
    let channel = handle
        .channel_open_session()
        .await
        .map_err(|e| ssh_error(address, e))?;
    channel
        .request_subsystem(true, "sftp")
        .await
        .map_err(|e| ssh_error(address, e))?;
    let sftp_config = russh_sftp::client::Config {
        request_timeout_secs: config.connect_timeout_secs,
        ..russh_sftp::client::Config::default()
    };
    SftpSession::new_with_config(channel.into_stream(), sftp_config)
        .await
        .map_err(|e| sftp_error("start", "sftp subsystem", e))
}

fn load_private_key(path: &Path) -> Result<ClientKey, TransportError> {
    ClientKey::load(path).map_err(|e: KeyError| TransportError::PrivateKey {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

fn handshake_error(config: &SftpConfig, error: HandshakeError) -> TransportError {
    match error {
        HandshakeError::HostKeyMismatch { offered } => TransportError::HostKeyMismatch {
            address: config.address(),
            offered,
            expected: match config.host_key.algorithm() {
                Some(algorithm) => format!("{} ({algorithm})", config.host_key),
                None => config.host_key.to_string(),
            },
        },
        HandshakeError::Ssh(russh::Error::IO(source)) => TransportError::Connect {
            address: config.address(),
            source,
        },
        HandshakeError::Ssh(error) => ssh_error(&config.address(), error),
    }
}

fn ssh_error(address: &str, error: russh::Error) -> TransportError {
    let connection_lost = matches!(
        error,
        russh::Error::Disconnect
            | russh::Error::HUP
            | russh::Error::ConnectionTimeout
            | russh::Error::KeepaliveTimeout
            | russh::Error::InactivityTimeout
            | russh::Error::SendError
            | russh::Error::IO(_)
            | russh::Error::Elapsed(_)
    );
    TransportError::Ssh {
        address: address.to_owned(),
        message: error.to_string(),
        connection_lost,
    }
}

/// A status from the server (no such file, permission denied) is final; anything
/// else means the session broke down under us.
fn sftp_error(operation: &'static str, path: &str, error: SftpError) -> TransportError {
    match error {
        SftpError::Status(status) => TransportError::Remote {
            operation,
            path: path.to_owned(),
            message: format!("{}: {}", status.status_code, status.error_message),
        },
        other => TransportError::ConnectionLost {
            operation,
            path: path.to_owned(),
            message: other.to_string(),
        },
    }
}

/// Writes report failures as `io::Error`, server refusals included; a refusal to
/// create the file has already surfaced at open, so what is left is a broken session.
fn io_error(operation: &'static str, path: &str, error: std::io::Error) -> TransportError {
    TransportError::ConnectionLost {
        operation,
        path: path.to_owned(),
        message: error.to_string(),
    }
}

/// Why `name`, as a server listed it, is not a plain file name in its directory,
/// or `None` when it is: not empty, not `.` or `..`, no `/` or `\\`, no NUL or
/// other control character, at most 255 bytes.
pub fn plain_file_name(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("it is empty")
    } else if name == "." || name == ".." {
        Some("it names a directory, not a file in it")
    } else if name.contains(['/', '\\']) {
        Some("it holds a path separator")
    } else if name.chars().any(char::is_control) {
        Some("it holds a control character")
    } else if name.len() > 255 {
        Some("it is longer than 255 bytes")
    } else {
        None
    }
}

/// The plain file names of a listing, sorted, and the others with the reason
/// each was refused (`.` and `..` are left out silently: every listing has them).
fn plain_names(listed: impl Iterator<Item = String>) -> (Vec<String>, Vec<(String, &'static str)>) {
    let mut names = Vec::new();
    let mut refused = Vec::new();
    for name in listed {
        match plain_file_name(&name) {
            None => names.push(name),
            Some(_) if name == "." || name == ".." => {}
            Some(why) => refused.push((name, why)),
        }
    }
    names.sort();
    (names, refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_file_names_pass() {
        for plain in [
            "SF2520_0751_20260201_000001.txt.sftpreceipt",
            ".SF2520_0751_20260201_000001.txt.sftpreceipt.partial",
            "kvittering æøå.xml",
            "..hidden",
        ] {
            assert_eq!(plain_file_name(plain), None, "{plain:?}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "SF2520_0751_20260201_000001.txt./../../etc/passwd",
            "a/b",
            "/abs",
            "a\\b",
            "nul\0byte",
            "esc\u{1b}[2J",
            "line\nbreak",
            "c1\u{9b}",
        ] {
            assert!(plain_file_name(bad).is_some(), "{bad:?} passed");
        }
        assert!(plain_file_name(&"x".repeat(256)).is_some());
    }

    /// Regression: names in the server's `IN/` listing holding `/..` were opened
    /// and removed on the server.
    #[test]
    fn a_listing_keeps_the_plain_names_and_reports_the_others() {
        let listed = [
            "b.sftpreceipt",
            ".",
            "SF2520_0751_20260201_000001.txt./../x",
            "..",
            "a.sftpreceipt",
            "x\u{1b}]0;pwned\u{7}",
        ]
        .map(str::to_owned);
        let (names, refused) = plain_names(listed.into_iter());
        assert_eq!(names, ["a.sftpreceipt", "b.sftpreceipt"]);
        let refused: Vec<&str> = refused.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(
            refused,
            [
                "SF2520_0751_20260201_000001.txt./../x",
                "x\u{1b}]0;pwned\u{7}"
            ]
        );
    }
}
