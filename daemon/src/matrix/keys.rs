//! Our server's signing key: load or generate, sign JSON and events, publish the key, rotate it.
//!
//! The key file uses Synapse's format (`ed25519 <version> <unpadded base64 seed>`), so an operator
//! can move a key between implementations. Keys we signed with before a rotation are kept, public
//! half only, in [`OLD_KEYS_FILE`] beside it (`ed25519:<version> <base64 public key> <expired_ts>`
//! per line): published in our key response's `old_verify_keys` so that peers can still check
//! what we signed with them, and used to check our own events that come back to us.

use std::{
    collections::BTreeMap,
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

/// The file, beside the signing key, of the keys it replaced.
pub const OLD_KEYS_FILE: &str = "old_verify_keys";

/// A key we signed with until `expired_ts` (ms).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OldKey {
    /// `ed25519:<version>`
    pub key_id: String,
    /// Unpadded base64.
    pub public: String,
    pub expired_ts: u64,
}

/// The server's signing key, and the keys it replaced.
pub struct KeyRing {
    server_name: OwnedServerName,
    version: String,
    pair: Ed25519KeyPair,
    public: [u8; 32],
    old: Vec<OldKey>,
}

/// What [`rotate`] did.
#[derive(Debug)]
pub struct Rotation {
    pub old_key_id: String,
    pub new_key_id: String,
    pub expired_ts: u64,
    /// How many old keys are published now.
    pub old_keys: usize,
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
            old: Vec::new(),
        })
    }

    /// Reads the key file, or creates it (mode 0600) with a fresh key when it does not exist, and
    /// the old keys beside it.
    pub fn load_or_generate(server_name: OwnedServerName, path: &Path) -> Result<Self, KeyError> {
        let file_err = |message: String| KeyError::File { path: path.to_owned(), message };
        let old = read_old_keys(&old_keys_path(path))?;
        let (version, seed) = match fs::read_to_string(path) {
            Ok(text) => parse_key_file(&text).map_err(file_err)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // A new key never takes the ID of one we signed with before.
                let (version, seed) = new_key(&old_versions(&old))?;
                write_private_file(path, key_line(&version, &seed).as_bytes())
                    .map_err(|e| file_err(e.to_string()))?;
                (version, seed)
            }
            Err(e) => return Err(file_err(e.to_string())),
        };
        let mut ring = Self::from_seed(server_name, &version, &seed)?;
        let current = ring.key_id();
        // A rotation stopped between its two writes lists the current key as old too.
        ring.old = old.into_iter().filter(|k| k.key_id != current).collect();
        Ok(ring)
    }

    /// The same key with `old` as the keys it replaced (what a simulated server rotating its key
    /// publishes).
    pub fn with_old_keys(mut self, old: Vec<OldKey>) -> Self {
        self.old = old;
        self
    }

    /// The keys we signed with before, oldest first.
    pub fn old_keys(&self) -> &[OldKey] {
        &self.old
    }

    /// Our keys (ID → unpadded base64) that were valid for a signature made at `at_ms`: the
    /// current one, and each old one that had not expired then (all of them when `at_ms` is 0, as
    /// for room versions that do not enforce key validity).
    pub fn verify_keys_at(&self, at_ms: i64) -> BTreeMap<String, String> {
        let mut keys = BTreeMap::from([(self.key_id(), self.public_key_base64())]);
        for old in &self.old {
            if i64::try_from(old.expired_ts).unwrap_or(i64::MAX) >= at_ms {
                keys.insert(old.key_id.clone(), old.public.clone());
            }
        }
        keys
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
        let old: serde_json::Map<String, serde_json::Value> = self
            .old
            .iter()
            .map(|k| {
                let entry = serde_json::json!({ "key": k.public, "expired_ts": k.expired_ts });
                (k.key_id.clone(), entry)
            })
            .collect();
        let value = serde_json::json!({
            "server_name": self.server_name.as_str(),
            "verify_keys": { self.key_id(): { "key": self.public_key_base64() } },
            "old_verify_keys": old,
            "valid_until_ts": valid_until,
        });
        let mut object: CanonicalJsonObject = serde_json::from_value(value).unwrap_or_default();
        // Signing a freshly built object cannot fail: it has no `signatures` of a wrong type.
        let _ = self.sign_json(&mut object);
        object
    }
}

/// Replaces the signing key at `path` with a new one (a new key ID) and adds the replaced key to
/// the old keys beside it, expired at `now_ms`. knockd must not be running: it reads both files at
/// start. The old keys are written first, so a crash between the two writes leaves the current
/// key in use and also listed as old, which loading ignores; rotating again then finishes.
pub fn rotate(path: &Path, now_ms: u64) -> Result<Rotation, KeyError> {
    let file_err = |p: &Path, message: String| KeyError::File { path: p.to_owned(), message };
    // Renaming over a symlink would replace the link, leaving its target with the old key.
    if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(file_err(
            path,
            "is a symbolic link, which rotating would replace (its target keeping the old key): \
             point data_dir at the directory that holds the key itself"
                .to_owned(),
        ));
    }
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(file_err(
                path,
                "no signing key to rotate (knockd creates one when it first starts)".to_owned(),
            ));
        }
        Err(e) => return Err(file_err(path, e.to_string())),
    };
    let (version, seed) = parse_key_file(&text).map_err(|e| file_err(path, e))?;
    let old_id = format!("ed25519:{version}");
    let old_path = old_keys_path(path);
    let mut old = read_old_keys(&old_path)?;
    old.retain(|k| k.key_id != old_id);
    let public = SigningKey::from_bytes(&seed).verifying_key().to_bytes();
    old.push(OldKey {
        key_id: old_id.clone(),
        public: Base64::<Standard, _>::new(public).encode(),
        expired_ts: now_ms,
    });
    let (new_version, new_seed) = new_key(&old_versions(&old))?;
    let mut listing = String::from(
        "# Keys this server signed with before, published as old_verify_keys: \
         ed25519:<version> <public key> <expired_ts>\n",
    );
    for k in &old {
        listing.push_str(&format!("{} {} {}\n", k.key_id, k.public, k.expired_ts));
    }
    replace_file(&old_path, listing.as_bytes()).map_err(|e| file_err(&old_path, e.to_string()))?;
    replace_file(path, key_line(&new_version, &new_seed).as_bytes())
        .map_err(|e| file_err(path, e.to_string()))?;
    Ok(Rotation {
        old_key_id: old_id,
        new_key_id: format!("ed25519:{new_version}"),
        expired_ts: now_ms,
        old_keys: old.len(),
    })
}

/// The old keys' file of the signing key at `key_path`.
pub fn old_keys_path(key_path: &Path) -> PathBuf {
    key_path.with_file_name(OLD_KEYS_FILE)
}

fn old_versions(old: &[OldKey]) -> Vec<&str> {
    old.iter().filter_map(|k| k.key_id.strip_prefix("ed25519:")).collect()
}

fn parse_key_file(text: &str) -> Result<(String, [u8; 32]), String> {
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
    Ok((version.to_owned(), seed))
}

fn key_line(version: &str, seed: &[u8; 32]) -> String {
    format!("ed25519 {version} {}\n", Base64::<Standard, _>::new(seed).encode())
}

/// A fresh key and its version, `a_` and the start of its public key, longer when that start is
/// one of `taken`.
fn new_key(taken: &[&str]) -> Result<(String, [u8; 32]), KeyError> {
    let der = Ed25519KeyPair::generate();
    let signing = SigningKey::from_pkcs8_der(&der).map_err(|e| KeyError::Key(e.to_string()))?;
    let public = Base64::<Standard, _>::new(signing.verifying_key().to_bytes()).encode();
    let version = (4..=public.len())
        .map(|n| format!("a_{}", &public[..n]).replace(['+', '/'], "_"))
        .find(|v| !taken.contains(&v.as_str()))
        .ok_or_else(|| KeyError::Key("no free key version".to_owned()))?;
    Ok((version, signing.to_bytes()))
}

fn read_old_keys(path: &Path) -> Result<Vec<OldKey>, KeyError> {
    let file_err = |message: String| KeyError::File { path: path.to_owned(), message };
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(file_err(e.to_string())),
    };
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: &str| file_err(format!("line {}: {why}", n + 1));
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [key_id, public, expired] = parts[..] else {
            return Err(bad("expected `ed25519:<version> <base64 public key> <expired_ts>`"));
        };
        if !key_id.starts_with("ed25519:") || key_id.len() == "ed25519:".len() {
            return Err(bad("the key ID must be ed25519:<version>"));
        }
        match decode_base64_lenient(public) {
            Ok(bytes) if bytes.len() == 32 => {}
            _ => return Err(bad("the public key is not 32 bytes of base64")),
        }
        let expired_ts = expired.parse().map_err(|_| bad("expired_ts is not a number"))?;
        keys.push(OldKey { key_id: key_id.to_owned(), public: public.to_owned(), expired_ts });
    }
    Ok(keys)
}

/// Writes `path` whole or not at all: a private temporary file beside it, synced, renamed over it.
fn replace_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("key");
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    write_private_file(&tmp, bytes)?;
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
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

    fn name() -> OwnedServerName {
        "example.org".try_into().unwrap()
    }

    #[test]
    fn rotation_publishes_the_replaced_key_as_old() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing.key");
        let first = KeyRing::load_or_generate(name(), &path).unwrap();
        let done = rotate(&path, 1_000).unwrap();
        assert_eq!(done.old_key_id, first.key_id());
        let second = KeyRing::load_or_generate(name(), &path).unwrap();
        assert_eq!(second.key_id(), done.new_key_id);
        assert_ne!(second.key_id(), first.key_id());
        assert_ne!(second.public_key(), first.public_key());
        let old =
            OldKey { key_id: first.key_id(), public: first.public_key_base64(), expired_ts: 1_000 };
        assert_eq!(second.old_keys(), std::slice::from_ref(&old));

        // The key response lists it as old, signed by the new key only.
        let response = second.server_keys_response(MilliSecondsSinceUnixEpoch::now());
        let json = serde_json::to_value(&response).unwrap();
        assert_eq!(json["old_verify_keys"][&old.key_id]["key"], old.public.as_str());
        assert_eq!(json["old_verify_keys"][&old.key_id]["expired_ts"], 1_000);
        assert!(json["verify_keys"].get(&old.key_id).is_none(), "{json}");
        let signatures = json["signatures"]["example.org"].as_object().unwrap();
        assert_eq!(signatures.keys().collect::<Vec<_>>(), [&second.key_id()]);

        // A second rotation keeps both old keys; the key file stays Synapse's one line.
        rotate(&path, 2_000).unwrap();
        let third = KeyRing::load_or_generate(name(), &path).unwrap();
        let ids: Vec<&str> = third.old_keys().iter().map(|k| k.key_id.as_str()).collect();
        assert_eq!(ids, [first.key_id(), second.key_id()]);
        assert_eq!(fs::read_to_string(&path).unwrap().lines().count(), 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }

    #[test]
    fn an_old_key_verifies_only_what_was_signed_before_it_expired() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing.key");
        let first = KeyRing::load_or_generate(name(), &path).unwrap();
        rotate(&path, 5_000).unwrap();
        let ring = KeyRing::load_or_generate(name(), &path).unwrap();
        let before = ring.verify_keys_at(4_999);
        assert_eq!(before.get(&first.key_id()), Some(&first.public_key_base64()));
        assert!(before.contains_key(&ring.key_id()));
        let after = ring.verify_keys_at(5_001);
        assert!(!after.contains_key(&first.key_id()), "expired at 5000: {after:?}");
        assert!(after.contains_key(&ring.key_id()));
        // Room versions that do not enforce key validity check with every key we had.
        assert!(ring.verify_keys_at(0).contains_key(&first.key_id()));
    }

    #[test]
    fn a_rotation_cut_short_loads_and_finishes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing.key");
        let first = KeyRing::load_or_generate(name(), &path).unwrap();
        // As if the old keys were written and the new key file never was.
        let listed = format!("{} {} 7\n", first.key_id(), first.public_key_base64());
        fs::write(old_keys_path(&path), listed).unwrap();
        let ring = KeyRing::load_or_generate(name(), &path).unwrap();
        assert_eq!(ring.key_id(), first.key_id());
        assert!(ring.old_keys().is_empty(), "the current key is not also old");
        rotate(&path, 9).unwrap();
        let ring = KeyRing::load_or_generate(name(), &path).unwrap();
        assert_eq!(ring.old_keys().len(), 1);
        assert_eq!(ring.old_keys()[0].expired_ts, 9);
    }

    #[test]
    fn bad_old_keys_and_a_missing_key_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing.key");
        let err = rotate(&path, 1).unwrap_err().to_string();
        assert!(err.contains("no signing key to rotate"), "{err}");
        KeyRing::load_or_generate(name(), &path).unwrap();
        for (text, why) in [
            ("ed25519:a_x notbase64! 5\n", "public key"),
            ("ed25519:a_x AAAA 5\n", "public key"),
            ("rsa:1 AAAA 5\n", "ed25519:<version>"),
            ("ed25519:a_x\n", "expected"),
        ] {
            fs::write(old_keys_path(&path), text).unwrap();
            let err = KeyRing::load_or_generate(name(), &path).unwrap_err().to_string();
            assert!(
                err.contains(OLD_KEYS_FILE) && err.contains("line 1") && err.contains(why),
                "{err}"
            );
        }
        let good = format!("# comment\n\ned25519:a_x {} 5\n", "A".repeat(43));
        fs::write(old_keys_path(&path), good).unwrap();
        let ring = KeyRing::load_or_generate(name(), &path).unwrap();
        assert_eq!(ring.old_keys()[0].expired_ts, 5);
    }

    #[cfg(unix)]
    #[test]
    fn a_symlinked_key_is_not_rotated() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.key");
        KeyRing::load_or_generate(name(), &real).unwrap();
        let link = dir.path().join("signing.key");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let before = fs::read_to_string(&real).unwrap();
        let err = rotate(&link, 1).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
        assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert_eq!(fs::read_to_string(&real).unwrap(), before);
        assert!(!old_keys_path(&link).exists(), "nothing half-written");
    }
}
