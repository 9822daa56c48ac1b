//! Client keys: loading the `[sftp] private_key`, and signing with an RSA key through
//! ring's constant-time `RsaKeyPair`, never through the `rsa` crate (RUSTSEC-2023-0071).
//!
//! ed25519 and ECDSA keys are loaded and signed by russh as before. An RSA key, in
//! OpenSSH format (`ssh-keygen -t rsa`), PEM PKCS#1 (`-m PEM`) or PEM PKCS#8
//! (`-m PKCS8`), becomes a [`RingRsaSigner`], which russh's
//! `authenticate_publickey_with` calls through its [`Signer`] trait. See
//! docs/decisions/0006-rsa-keys-signed-by-ring.md.

use std::path::Path;

use crypto_bigint::{BoxedUint, NonZero, Odd};
use ring::rand::SystemRandom;
use ring::rsa::{KeyPairComponents, PublicKeyComponents};
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256, RSA_PKCS1_SHA512};
use russh::keys::agent::AgentIdentity;
use russh::keys::ssh_key::private::{KeypairData, RsaKeypair};
use russh::keys::ssh_key::public::RsaPublicKey;
use russh::keys::ssh_key::{Mpint, PublicKey};
use russh::keys::{Algorithm, HashAlg, PrivateKey};
use russh::Signer;

/// A client key ready to log in with.
pub enum ClientKey {
    /// ed25519 or ECDSA: russh signs.
    Russh(PrivateKey),
    /// RSA: ring signs.
    Rsa(RingRsaSigner),
}

/// Why a private key file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read it: {0}")]
    Read(String),
    #[error("it is passphrase-protected; the batch job runs unattended, so give it a key without one (`ssh-keygen -p -N ''`)")]
    Encrypted,
    #[error("it is not an OpenSSH or PEM private key ({0}); generate one with `ssh-keygen -t rsa -b 4096 -N ''` or `ssh-keygen -t ed25519 -N ''`")]
    Unreadable(String),
    #[error("it is a {0} key; supported are RSA (2048 to 8192 bits, 3072 or more recommended), ssh-ed25519 and ECDSA (nistp256/384/521)")]
    Unsupported(String),
    #[error("its RSA key is refused by ring: {0}")]
    RsaRejected(String),
}

impl ClientKey {
    /// Reads and checks the key file at `path`.
    pub fn load(path: &Path) -> Result<ClientKey, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|e| KeyError::Read(e.to_string()))?;
        ClientKey::parse(&text)
    }

    /// Parses key file text: OpenSSH, or PEM (`RSA PRIVATE KEY`, `PRIVATE KEY`, `EC PRIVATE KEY`).
    pub fn parse(text: &str) -> Result<ClientKey, KeyError> {
        let trimmed = text.trim_start();
        if trimmed.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----") {
            let key = PrivateKey::from_openssh(trimmed)
                .map_err(|e| KeyError::Unreadable(e.to_string()))?;
            if key.is_encrypted() {
                return Err(KeyError::Encrypted);
            }
            return match key.key_data() {
                KeypairData::Rsa(rsa) => Ok(ClientKey::Rsa(RingRsaSigner::from_openssh(rsa)?)),
                _ => ClientKey::russh(key),
            };
        }
        if trimmed.starts_with("-----BEGIN RSA PRIVATE KEY-----") {
            if trimmed.contains("Proc-Type: 4,ENCRYPTED") {
                return Err(KeyError::Encrypted);
            }
            let der = pem_body(trimmed, "RSA PRIVATE KEY")?;
            let pair =
                RsaKeyPair::from_der(&der).map_err(|e| KeyError::RsaRejected(e.to_string()))?;
            return Ok(ClientKey::Rsa(RingRsaSigner::new(pair)?));
        }
        if trimmed.starts_with("-----BEGIN PRIVATE KEY-----") {
            let der = pem_body(trimmed, "PRIVATE KEY")?;
            match RsaKeyPair::from_pkcs8(&der) {
                Ok(pair) => return Ok(ClientKey::Rsa(RingRsaSigner::new(pair)?)),
                // An RSA key ring refuses (too short, say) must not fall through to
                // russh's decoder, which would hand it to the `rsa` crate.
                Err(e) if contains(&der, RSA_ENCRYPTION_OID) => {
                    return Err(KeyError::RsaRejected(e.to_string()))
                }
                Err(_) => {}
            }
        }
        if trimmed.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
            return Err(KeyError::Encrypted);
        }
        // ed25519 or ECDSA in PKCS#8 or SEC1 PEM: russh's decoder, which never
        // reaches the `rsa` crate for these key types.
        let key = russh::keys::decode_secret_key(text, None)
            .map_err(|e| KeyError::Unreadable(e.to_string()))?;
        ClientKey::russh(key)
    }

    fn russh(key: PrivateKey) -> Result<ClientKey, KeyError> {
        match key.algorithm() {
            Algorithm::Ed25519 | Algorithm::Ecdsa { .. } => Ok(ClientKey::Russh(key)),
            other => Err(KeyError::Unsupported(other.to_string())),
        }
    }

    /// The key type as SSH names it, for messages: `ssh-rsa (4096 bits)`, `ssh-ed25519`.
    pub fn describe(&self) -> String {
        match self {
            ClientKey::Russh(key) => key.algorithm().to_string(),
            ClientKey::Rsa(signer) => format!("ssh-rsa ({} bits)", signer.bits()),
        }
    }

    /// The public half, as offered to the server.
    pub fn public_key(&self) -> PublicKey {
        match self {
            ClientKey::Russh(key) => key.public_key().clone(),
            ClientKey::Rsa(signer) => signer.public.clone(),
        }
    }
}

/// The DER of the rsaEncryption OID (1.2.840.113549.1.1.1) as PKCS#8 carries it.
const RSA_ENCRYPTION_OID: &[u8] = &[
    0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01,
];

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// The base64 body of a PEM block with the given label, decoded.
fn pem_body(text: &str, label: &str) -> Result<Vec<u8>, KeyError> {
    let end = format!("-----END {label}-----");
    let stop = text
        .find(&end)
        .ok_or_else(|| KeyError::Unreadable(format!("no `{end}` line")))?;
    let block = &text[..stop + end.len()];
    let (found, der) = pem_rfc7468::decode_vec(block.as_bytes())
        .map_err(|e| KeyError::Unreadable(format!("PEM: {e}")))?;
    if found != label {
        return Err(KeyError::Unreadable(format!(
            "PEM label {found:?}, expected {label:?}"
        )));
    }
    Ok(der)
}

/// An RSA private key held by ring, with its SSH public key.
pub struct RingRsaSigner {
    pair: RsaKeyPair,
    public: PublicKey,
    rng: SystemRandom,
}

impl RingRsaSigner {
    fn new(pair: RsaKeyPair) -> Result<RingRsaSigner, KeyError> {
        let components: PublicKeyComponents<Vec<u8>> = pair.public().into();
        let rsa = RsaPublicKey::new(
            Mpint::from_positive_bytes(&components.e),
            Mpint::from_positive_bytes(&components.n),
        )
        .map_err(|e| KeyError::RsaRejected(e.to_string()))?;
        let public = PublicKey::new(rsa.into(), "");
        Ok(RingRsaSigner {
            pair,
            public,
            rng: SystemRandom::new(),
        })
    }

    /// An OpenSSH key stores n, e, d, iqmp, p and q; ring also wants the CRT
    /// exponents d mod (p-1) and d mod (q-1), derived here with crypto-bigint's
    /// constant-time remainder. ring requires p > q; if the file has them the other
    /// way round they are swapped and q⁻¹ mod p computed anew (constant time too).
    fn from_openssh(key: &RsaKeypair) -> Result<RingRsaSigner, KeyError> {
        let public = key.public();
        let private = key.private();
        let bits = |m: &Mpint| u32::try_from(m.as_positive_bytes().map_or(0, <[u8]>::len) * 8);
        let precision = bits(public.n())
            .map_err(|_| KeyError::RsaRejected("modulus too large".into()))?
            .max(64);
        let number = |m: &Mpint, what: &str| -> Result<BoxedUint, KeyError> {
            let bytes = m
                .as_positive_bytes()
                .ok_or_else(|| KeyError::RsaRejected(format!("{what} is not positive")))?;
            BoxedUint::from_be_slice(bytes, precision)
                .map_err(|e| KeyError::RsaRejected(format!("{what}: {e:?}")))
        };
        let d = number(private.d(), "d")?;
        let mut p = number(private.p(), "p")?;
        let mut q = number(private.q(), "q")?;
        let mut q_inv = number(private.iqmp(), "iqmp")?;
        if p.cmp_vartime(&q).is_lt() {
            std::mem::swap(&mut p, &mut q);
            let odd_p: Option<Odd<BoxedUint>> = Odd::new(p.clone()).into();
            let odd_p = odd_p.ok_or_else(|| KeyError::RsaRejected("p is even".into()))?;
            let inverse: Option<BoxedUint> = q.invert_odd_mod(&odd_p).into();
            q_inv =
                inverse.ok_or_else(|| KeyError::RsaRejected("q has no inverse mod p".into()))?;
        }
        let exponent = |prime: &BoxedUint, what: &str| -> Result<Vec<u8>, KeyError> {
            let minus_one = prime.wrapping_sub(BoxedUint::one_with_precision(precision));
            let modulus: Option<NonZero<BoxedUint>> = NonZero::new(minus_one).into();
            let modulus =
                modulus.ok_or_else(|| KeyError::RsaRejected(format!("{what} - 1 is zero")))?;
            Ok(trimmed(&d.rem(&modulus).to_be_bytes()))
        };
        let d_p = exponent(&p, "p")?;
        let d_q = exponent(&q, "q")?;
        let components = KeyPairComponents {
            public_key: PublicKeyComponents {
                n: positive(public.n())?,
                e: positive(public.e())?,
            },
            d: trimmed(&d.to_be_bytes()),
            p: trimmed(&p.to_be_bytes()),
            q: trimmed(&q.to_be_bytes()),
            dP: d_p,
            dQ: d_q,
            qInv: trimmed(&q_inv.to_be_bytes()),
        };
        let pair = RsaKeyPair::from_components(&components)
            .map_err(|e| KeyError::RsaRejected(e.to_string()))?;
        RingRsaSigner::new(pair)
    }

    /// The modulus length in bits.
    pub fn bits(&self) -> usize {
        self.pair.public().modulus_len() * 8
    }

    /// The SSH public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// An RSASSA-PKCS1-v1_5 signature over `data` with SHA-256 or SHA-512; SSH's
    /// legacy SHA-1 `ssh-rsa` is refused.
    pub fn sign(&self, hash: HashAlg, data: &[u8]) -> Result<Vec<u8>, SignError> {
        let padding = match hash {
            HashAlg::Sha256 => &RSA_PKCS1_SHA256,
            HashAlg::Sha512 => &RSA_PKCS1_SHA512,
            _ => return Err(SignError::Sha1),
        };
        let mut signature = vec![0; self.pair.public().modulus_len()];
        self.pair
            .sign(padding, &self.rng, data, &mut signature)
            .map_err(|_| SignError::Ring)?;
        Ok(signature)
    }
}

fn positive(m: &Mpint) -> Result<Vec<u8>, KeyError> {
    m.as_positive_bytes()
        .map(<[u8]>::to_vec)
        .ok_or_else(|| KeyError::RsaRejected("a public component is not positive".into()))
}

/// Big-endian bytes without leading zeros, as ring's components want them.
fn trimmed(bytes: &[u8]) -> Vec<u8> {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    bytes[start..].to_vec()
}

/// Why ring could not sign.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("the server offers only ssh-rsa (SHA-1) signatures for RSA keys, which this client refuses; enable rsa-sha2-256 or rsa-sha2-512 on the server")]
    Sha1,
    #[error("ring could not sign with the RSA key")]
    Ring,
    #[error("the SSH session ended while signing")]
    Send,
}

impl From<russh::SendError> for SignError {
    fn from(_: russh::SendError) -> Self {
        SignError::Send
    }
}

/// russh hands us the whole to-be-signed buffer (session id and userauth request)
/// and expects it back with the signature blob appended: `u32 length`, `string
/// algorithm`, `string signature`, as russh's own agent client returns it.
impl Signer for RingRsaSigner {
    type Error = SignError;

    #[allow(clippy::manual_async_fn)]
    fn auth_sign(
        &mut self,
        _key: &AgentIdentity,
        hash_alg: Option<HashAlg>,
        to_sign: Vec<u8>,
    ) -> impl std::future::Future<Output = Result<Vec<u8>, Self::Error>> + Send {
        async move {
            let hash = hash_alg.ok_or(SignError::Sha1)?;
            let signature = self.sign(hash, &to_sign)?;
            let name = Algorithm::Rsa { hash: Some(hash) }.to_string();
            Ok(append_signature(to_sign, &name, &signature))
        }
    }
}

fn append_signature(mut data: Vec<u8>, algorithm: &str, signature: &[u8]) -> Vec<u8> {
    let blob_len = 4 + algorithm.len() + 4 + signature.len();
    for (length, bytes) in [
        (blob_len, None),
        (algorithm.len(), Some(algorithm.as_bytes())),
        (signature.len(), Some(signature)),
    ] {
        // SSH lengths are u32; an RSA signature of at most 8192 bits and an
        // algorithm name are far below that.
        let length = u32::try_from(length).expect("SSH string length fits u32");
        data.extend_from_slice(&length.to_be_bytes());
        if let Some(bytes) = bytes {
            data.extend_from_slice(bytes);
        }
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_blob_is_length_algorithm_signature() {
        let out = append_signature(vec![9], "rsa-sha2-256", &[1, 2, 3]);
        let mut expected = vec![9, 0, 0, 0, 23, 0, 0, 0, 12];
        expected.extend_from_slice(b"rsa-sha2-256");
        expected.extend_from_slice(&[0, 0, 0, 3, 1, 2, 3]);
        assert_eq!(out, expected);
    }

    /// An OpenSSH RSA key with p and q in either order gives ring the same key:
    /// PKCS#1 v1.5 signatures are deterministic, so both must sign alike, and the
    /// signature verifies under the public key.
    #[test]
    fn openssh_rsa_keys_sign_alike_whichever_prime_comes_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id_rsa");
        let status = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "rsa", "-b", "3072", "-N", "", "-f"])
            .arg(&path)
            .status()
            .expect("ssh-keygen runs (scripts/install-test-deps.sh)");
        assert!(status.success());
        let key = PrivateKey::from_openssh(std::fs::read_to_string(&path).unwrap()).unwrap();
        let KeypairData::Rsa(rsa) = key.key_data() else {
            panic!("not RSA")
        };
        let private = rsa.private();
        let swapped = RsaKeypair::new(
            rsa.public().clone(),
            russh::keys::ssh_key::private::RsaPrivateKey::new(
                private.d().clone(),
                private.iqmp().clone(),
                private.q().clone(),
                private.p().clone(),
            )
            .unwrap(),
        )
        .unwrap();
        let data = b"session id and userauth request";
        let original = RingRsaSigner::from_openssh(rsa).unwrap();
        let reordered = RingRsaSigner::from_openssh(&swapped).unwrap();
        for hash in [HashAlg::Sha256, HashAlg::Sha512] {
            let signature = original.sign(hash, data).unwrap();
            assert_eq!(signature, reordered.sign(hash, data).unwrap());
            let n = rsa.public().n().as_positive_bytes().unwrap();
            let e = rsa.public().e().as_positive_bytes().unwrap();
            let algorithm = match hash {
                HashAlg::Sha256 => &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                _ => &ring::signature::RSA_PKCS1_2048_8192_SHA512,
            };
            ring::signature::RsaPublicKeyComponents { n, e }
                .verify(algorithm, data, &signature)
                .unwrap();
        }
    }

    #[test]
    fn garbage_and_encrypted_pem_are_refused_by_name() {
        assert!(matches!(
            ClientKey::parse("nonsense"),
            Err(KeyError::Unreadable(_))
        ));
        let encrypted = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        assert_eq!(ClientKey::parse(encrypted).err(), Some(KeyError::Encrypted));
    }
}
