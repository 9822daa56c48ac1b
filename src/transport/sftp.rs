//! SftpClient: one SSH connection to Serviceplatformen with a pinned host key, and the
//! handful of SFTP operations delivery needs.
//!
//! The server must present exactly the host key in `[sftp] host_key`; any other key
//! ends the handshake before we authenticate or send a byte of data. Paths are
//! relative to the login directory (where `OUT/` and `IN/` live).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use russh::client::{self, Handle};
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::Disconnect;
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::client::SftpSession;
use russh_sftp::protocol::{FileAttributes, OpenFlags};
use tokio::io::AsyncWriteExt;

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
                offered: offered.fingerprint(HashAlg::Sha256).to_string(),
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
        let ssh_config = Arc::new(client::Config {
            keepalive_interval: Some(KEEPALIVE_INTERVAL),
            keepalive_max: KEEPALIVE_MAX,
            ..client::Config::default()
        });
        let check = PinnedKeyCheck {
            expected: config.host_key.clone(),
        };
        let mut handle = client::connect(ssh_config, (config.host.as_str(), config.port), check)
            .await
            .map_err(|e| handshake_error(config, e))?;
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

    pub async fn read(&self, path: &str) -> Result<Vec<u8>, TransportError> {
        self.sftp
            .read(path)
            .await
            .map_err(|e| sftp_error("read", path, e))
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

    /// The names in directory `path`, without `.` and `..`, sorted.
    pub async fn list_dir(&self, path: &str) -> Result<Vec<String>, TransportError> {
        let entries = self
            .sftp
            .read_dir(path)
            .await
            .map_err(|e| sftp_error("list", path, e))?;
        let mut names: Vec<String> = entries.map(|entry| entry.file_name()).collect();
        names.sort();
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
            expected: config.host_key.to_string(),
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
