//! Step 2 of the checks on receipt: the signatures of every server that must sign the event,
//! with keys valid when it was sent, and its content hash (a mismatch keeps the redacted event).

use std::collections::BTreeMap;

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, ServerName,
    serde::{Base64, base64::Standard},
    signatures::{PublicKeyMap, Verified},
};

use super::RoomCtx;
use crate::matrix::{
    KeyRing, event,
    remote_keys::{KeyFetchError, RemoteKeys},
};

/// Why the signatures were not checked through.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    /// Missing, wrong, or no key to check them with: the event is refused.
    #[error("{0}")]
    Refused(String),
    /// Our key store (the database) did not answer: nothing is known either way; try again.
    #[error("{0}")]
    KeyStore(String),
}

impl From<String> for SignatureError {
    fn from(why: String) -> Self {
        Self::Refused(why)
    }
}

/// Verifies the event; on a hash mismatch the redacted event comes back, flagged `true`.
pub async fn verify_signatures(
    keys: &KeyRing,
    remote_keys: &RemoteKeys,
    room: &RoomCtx,
    pdu: CanonicalJsonObject,
) -> Result<(CanonicalJsonObject, bool), SignatureError> {
    let servers =
        ruma::signatures::required_server_signatures_to_verify_event(&pdu, &room.rules.signatures)
            .map_err(|e| e.to_string())?;
    let at = if room.rules.enforce_key_validity {
        event::int_field(&pdu, "origin_server_ts").unwrap_or(0)
    } else {
        0
    };
    let mut map = PublicKeyMap::new();
    for server in servers {
        map.insert(server.to_string(), keys_for(keys, remote_keys, &pdu, &server, at).await?);
    }
    match event::verify(&pdu, &map, &room.rules)? {
        Verified::All => Ok((pdu, false)),
        Verified::Signatures => Ok((event::redact(pdu, &room.rules)?, true)),
    }
}

async fn keys_for(
    keys: &KeyRing,
    remote_keys: &RemoteKeys,
    pdu: &CanonicalJsonObject,
    server: &ServerName,
    at: i64,
) -> Result<BTreeMap<String, Base64>, SignatureError> {
    if server == keys.server_name() {
        // Ours: the current key and those we had not yet rotated away when it was signed.
        return keys
            .verify_keys_at(at)
            .into_iter()
            .map(|(id, key)| {
                let key = Base64::<Standard>::parse(key).map_err(|e| e.to_string())?;
                Ok((id, key))
            })
            .collect();
    }
    let key_ids: Vec<String> = pdu
        .get("signatures")
        .and_then(CanonicalJsonValue::as_object)
        .and_then(|s| s.get(server.as_str()))
        .and_then(CanonicalJsonValue::as_object)
        .map(|keys| keys.keys().filter(|k| k.starts_with("ed25519:")).cloned().collect())
        .unwrap_or_default();
    if key_ids.is_empty() {
        return Err(format!("the event is not signed by {server}").into());
    }
    let mut last = String::new();
    for key_id in key_ids {
        match remote_keys.key(server, &key_id, at).await {
            Ok(key) => {
                let key = Base64::<Standard>::parse(&key).map_err(|e| e.to_string())?;
                return Ok(BTreeMap::from([(key_id, key)]));
            }
            Err(KeyFetchError::Store(why)) => return Err(SignatureError::KeyStore(why)),
            Err(e) => last = e.to_string(),
        }
    }
    Err(format!("cannot verify the signature of {server}: {last}").into())
}
