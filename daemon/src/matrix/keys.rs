//! Our server's signing key: load or generate, sign JSON and events, publish the key.
//!
//! The key file uses Synapse's format (`ed25519 <version> <unpadded base64 seed>`), so an operator
//! can move a key between implementations.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use ed25519_dalek::{
    SigningKey,
    pkcs8::{DecodePrivateKey, EncodePrivateKey},
};
use ruma::{
    CanonicalJsonObject, MilliSecondsSinceUnixEpoch, OwnedServerName,
    serde::{Base64, base64::Standard},
    signatures::{Ed25519KeyPair, KeyPair},
};

/// How long peers may cache our key response.
pub const KEY_VALIDITY_MS: u64 = 7 * 24 * 60 * 60 * 1000;

/// The server's signing key.
pub struct KeyRing {
    server_name: OwnedServerName,
    version: String,
    pair: Ed25519KeyPair,
    public: [u8; 32],
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("server_name", &self.server_name)
            .field("key_id", &self.key_id())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("signing key file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("signing key: {0}")]
    Key(String),
}

impl KeyRing {
    /// Builds a key ring from a 32-byte ed25519 seed.
    pub fn from_seed(
        server_name: OwnedServerName,
        version: &str,
        seed: &[u8; 32],
    ) -> Result<Self, KeyError> {
        let signing = SigningKey::from_bytes(seed);
        let der = signing.to_pkcs8_der().map_err(|e| KeyError::Key(e.to_string()))?;
        let pair = Ed25519KeyPair::from_der(der.as_bytes(), version.to_owned())
            .map_err(|e| KeyError::Key(e.to_string()))?;
        Ok(Self {
            server_name,
            version: version.to_owned(),
            pair,
            public: signing.verifying_key().to_bytes(),
        })
    }

    /// Reads the key file, or creates it (mode 0600) with a fresh key when it does not exist.
    pub fn load_or_generate(server_name: OwnedServerName, path: &Path) -> Result<Self, KeyError> {
        let file_err = |message: String| KeyError::File { path: path.to_owned(), message };
        match fs::read_to_string(path) {
            Ok(text) => Self::parse_key_file(server_name, &text).map_err(file_err),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let der = Ed25519KeyPair::generate();
                let signing =
                    SigningKey::from_pkcs8_der(&der).map_err(|e| KeyError::Key(e.to_string()))?;
                let seed = signing.to_bytes();
                let version = format!(
                    "a_{}",
                    &Base64::<Standard, _>::new(signing.verifying_key().to_bytes()).encode()[..4]
                )
                .replace(['+', '/'], "_");
                let line =
                    format!("ed25519 {version} {}\n", Base64::<Standard, _>::new(seed).encode());
                write_private_file(path, line.as_bytes()).map_err(|e| file_err(e.to_string()))?;
                Self::from_seed(server_name, &version, &seed)
            }
            Err(e) => Err(file_err(e.to_string())),
        }
    }

    fn parse_key_file(server_name: OwnedServerName, text: &str) -> Result<Self, String> {
        let line = text.lines().find(|l| !l.trim().is_empty()).ok_or("the file is empty")?;
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [alg, version, seed] = parts[..] else {
            return Err("expected one line `ed25519 <version> <base64 seed>`".to_owned());
        };
        if alg != "ed25519" {
            return Err(format!("unsupported key algorithm {alg:?}"));
        }
        let seed = decode_base64_lenient(seed).map_err(|e| format!("seed: {e}"))?;
        let seed: [u8; 32] = seed.try_into().map_err(|_| "seed is not 32 bytes".to_owned())?;
        Self::from_seed(server_name, version, &seed).map_err(|e| e.to_string())
    }

    pub fn server_name(&self) -> &OwnedServerName {
        &self.server_name
    }

    /// `ed25519:<version>`
    pub fn key_id(&self) -> String {
        format!("ed25519:{}", self.version)
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.public
    }

    pub fn public_key_base64(&self) -> String {
        Base64::<Standard, _>::new(self.public).encode()
    }

    pub fn pair(&self) -> &Ed25519KeyPair {
        &self.pair
    }

    /// Signs arbitrary JSON (adds to `signatures`).
    pub fn sign_json(&self, object: &mut CanonicalJsonObject) -> Result<(), KeyError> {
        ruma::signatures::sign_json(self.server_name.as_str(), &self.pair, object)
            .map_err(|e| KeyError::Key(e.to_string()))
    }

    /// Signs raw bytes, unpadded base64 signature.
    pub fn sign_bytes(&self, bytes: &[u8]) -> String {
        Base64::<Standard, _>::new(self.pair.sign(bytes).as_bytes().to_vec()).encode()
    }

    /// The `/_matrix/key/v2/server` response, self-signed.
    pub fn server_keys_response(&self, now: MilliSecondsSinceUnixEpoch) -> CanonicalJsonObject {
        let valid_until = u64::from(now.get()) + KEY_VALIDITY_MS;
        let value = serde_json::json!({
            "server_name": self.server_name.as_str(),
            "verify_keys": { self.key_id(): { "key": self.public_key_base64() } },
            "old_verify_keys": {},
            "valid_until_ts": valid_until,
        });
        let mut object: CanonicalJsonObject = serde_json::from_value(value).unwrap_or_default();
        // Signing a freshly built object cannot fail: it has no `signatures` of a wrong type.
        let _ = self.sign_json(&mut object);
        object
    }
}

/// Decodes base64 with or without padding and with non-zero trailing bits (the spec's own test
/// seed has them).
pub fn decode_base64_lenient(s: &str) -> Result<Vec<u8>, String> {
    Base64::<Standard, Vec<u8>>::parse(s).map(Base64::into_inner).map_err(|e| e.to_string())
}

/// Writes a file readable only by its owner, refusing to follow an existing file.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_is_private_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing.key");
        let name: OwnedServerName = "example.org".try_into().unwrap();
        let a = KeyRing::load_or_generate(name.clone(), &path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let b = KeyRing::load_or_generate(name, &path).unwrap();
        assert_eq!(a.public_key(), b.public_key());
        assert_eq!(a.key_id(), b.key_id());
        assert!(a.key_id().starts_with("ed25519:a_"));
    }

    #[test]
    fn bad_key_file_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing.key");
        fs::write(&path, "rsa 1 abc\n").unwrap();
        let err = KeyRing::load_or_generate("example.org".try_into().unwrap(), &path).unwrap_err();
        assert!(err.to_string().contains("signing.key"), "{err}");
    }
}
