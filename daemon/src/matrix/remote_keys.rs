//! Other servers' signing keys: fetched from the server itself (or configured notaries), checked
//! against its self-signature, cached in memory and in the database, refetched when a key ID is
//! unknown or no longer valid. Concurrent requests for one server share one fetch.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedServerName, ServerName,
    serde::{Base64, base64::Standard},
    signatures::PublicKeyMap,
};
use serde_json::Value;

use super::{client::FederationClient, now_ms};
use crate::{
    bounded::{BoundedMap, NAME_CACHE_CAPACITY},
    store::{
        Db, StoreError,
        server_keys::{self, KeyRow},
    },
};

/// How long we trust a key response at most, whatever its `valid_until_ts` says.
const MAX_CACHE_MS: i64 = 7 * 24 * 3600 * 1000;
/// Don't refetch one server's keys more often than this when a key ID stays unknown.
const MIN_REFETCH_MS: i64 = 2_000;
/// Key IDs per server whose last fetch is remembered (for [`MIN_REFETCH_MS`]).
const REFETCH_KEY_IDS: usize = 16;

/// When a server's keys were last fetched for each key ID that was missing.
type LastFetches = std::collections::HashMap<String, i64>;
const MAX_KEY_RESPONSE: usize = 64 * 1024;
/// A server signs with one key, two while rotating: a response with more current keys than this
/// is refused whole.
pub const MAX_VERIFY_KEYS: usize = 10;
/// Old keys kept from one response: the most recently expired ones (what recent events were
/// signed with); older ones in the same response are dropped, not stored.
pub const MAX_OLD_VERIFY_KEYS: usize = 10;

#[derive(Clone, Debug)]
struct CachedKey {
    key: String,
    /// Usable for signatures made up to this time.
    valid_until_ms: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyFetchError {
    #[error("no valid key {key_id} for {server}: {reason}")]
    Unavailable { server: String, key_id: String, reason: String },
    /// Our database did not answer: nothing is known about the key either way (a 5xx, not a
    /// refusal of the request).
    #[error("the key store is unavailable: {0}")]
    Store(String),
}

/// The remote key cache.
pub struct RemoteKeys {
    db: Db,
    client: Arc<FederationClient>,
    notaries: Vec<OwnedServerName>,
    /// Keys by (server, key ID), at most `NAME_CACHE_CAPACITY`; an evicted one is read again
    /// from the database.
    memory: Mutex<BoundedMap<(OwnedServerName, String), CachedKey>>,
    /// One fetch per server at a time, and the time of its last fetch. At most
    /// `NAME_CACHE_CAPACITY` locks nobody uses are kept: a lock someone holds or waits for (its
    /// `Arc` is shared) is never evicted, and clones are only made under this mutex, so two
    /// fetches of one server never run at once. Evicting an idle lock forgets only when that
    /// server was last fetched, which allows one early refetch.
    locks: tokio::sync::Mutex<BoundedMap<OwnedServerName, Arc<tokio::sync::Mutex<LastFetches>>>>,
}

impl std::fmt::Debug for RemoteKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteKeys").finish_non_exhaustive()
    }
}

impl RemoteKeys {
    pub fn new(db: Db, client: Arc<FederationClient>, notaries: Vec<OwnedServerName>) -> Self {
        Self {
            db,
            client,
            notaries,
            memory: Mutex::new(BoundedMap::new(NAME_CACHE_CAPACITY)),
            locks: tokio::sync::Mutex::new(BoundedMap::new(NAME_CACHE_CAPACITY)),
        }
    }

    fn cached(&self, server: &ServerName, key_id: &str, at_ms: i64) -> Option<String> {
        let mut memory = self.memory.lock().ok()?;
        memory
            .get(&(server.to_owned(), key_id.to_owned()))
            .filter(|k| k.valid_until_ms >= at_ms)
            .map(|k| k.key.clone())
    }

    fn remember(&self, rows: &[KeyRow]) {
        if let Ok(mut memory) = self.memory.lock() {
            for row in rows {
                let Ok(server) = OwnedServerName::try_from(row.server_name.as_str()) else {
                    continue;
                };
                let valid_until_ms = match row.expired_ms {
                    Some(expired) => expired,
                    None => row.valid_until_ms.min(row.fetched_ms + MAX_CACHE_MS),
                };
                memory.insert(
                    (server, row.key_id.clone()),
                    CachedKey { key: row.verify_key.clone(), valid_until_ms },
                );
            }
        }
    }

    /// The key `key_id` of `server`, valid for signatures made at `at_ms`.
    pub async fn key(
        &self,
        server: &ServerName,
        key_id: &str,
        at_ms: i64,
    ) -> Result<String, KeyFetchError> {
        if let Some(k) = self.cached(server, key_id, at_ms) {
            return Ok(k);
        }
        let unavailable = |reason: String| KeyFetchError::Unavailable {
            server: server.to_string(),
            key_id: key_id.to_owned(),
            reason,
        };
        // One fetch per server at a time; whoever waited re-checks what the fetch brought.
        let lock = {
            let mut locks = self.locks.lock().await;
            let unused = |l: &Arc<tokio::sync::Mutex<LastFetches>>| Arc::strong_count(l) == 1;
            locks.get_or_insert_with(server.to_owned(), Arc::default, unused).clone()
        };
        let mut last_fetch = lock.lock().await;
        if let Some(k) = self.cached(server, key_id, at_ms) {
            return Ok(k);
        }
        let name = server.to_string();
        let rows = self
            .db
            .read(move |conn| server_keys::for_server(conn, &name))
            .await
            .map_err(|e: StoreError| KeyFetchError::Store(e.to_string()))?;
        self.remember(&rows);
        if let Some(k) = self.cached(server, key_id, at_ms) {
            return Ok(k);
        }
        // Limited per key ID, not per server: a server that rotates twice in a row is asked
        // again for its newest key.
        let now = now_ms();
        if last_fetch.get(key_id).is_some_and(|at| now - at < MIN_REFETCH_MS) {
            return Err(unavailable("fetched recently and the key was not there".to_owned()));
        }
        if last_fetch.len() >= REFETCH_KEY_IDS
            && let Some(oldest) =
                last_fetch.iter().min_by_key(|(_, at)| **at).map(|(k, _)| k.clone())
        {
            last_fetch.remove(&oldest);
        }
        last_fetch.insert(key_id.to_owned(), now);
        let fetched = match self.fetch_direct(server).await {
            Ok(rows) => rows,
            Err(direct) => self
                .fetch_via_notaries(server)
                .await
                .map_err(|n| unavailable(format!("{direct}; {n}")))?,
        };
        let stored = fetched.clone();
        let kept = self
            .db
            .write(move |conn| -> Result<(), StoreError> {
                for row in &stored {
                    server_keys::upsert(conn, row)?;
                }
                Ok(())
            })
            .await;
        // The response was checked: a key not kept in the database is still good in memory.
        if let Err(e) = kept {
            tracing::warn!(server = %server, error = %e, "fetched keys not stored; kept in memory");
        }
        self.remember(&fetched);
        self.cached(server, key_id, at_ms)
            .ok_or_else(|| unavailable("not in the server's key response".to_owned()))
    }

    /// A key map for ruma's verification functions.
    pub async fn key_map(
        &self,
        server: &ServerName,
        key_id: &str,
        at_ms: i64,
    ) -> Result<PublicKeyMap, KeyFetchError> {
        let key = self.key(server, key_id, at_ms).await?;
        let parsed = Base64::<Standard>::parse(&key).map_err(|e| KeyFetchError::Unavailable {
            server: server.to_string(),
            key_id: key_id.to_owned(),
            reason: format!("stored key is not base64: {e}"),
        })?;
        let mut map = PublicKeyMap::new();
        map.insert(server.to_string(), BTreeMap::from([(key_id.to_owned(), parsed)]));
        Ok(map)
    }

    async fn fetch_direct(&self, server: &ServerName) -> Result<Vec<KeyRow>, String> {
        let body = self
            .client
            .get_json(server, "/_matrix/key/v2/server", false, MAX_KEY_RESPONSE)
            .await
            .map_err(|e| format!("fetching keys: {e}"))?;
        parse_key_response(server, &body, None)
    }

    async fn fetch_via_notaries(&self, server: &ServerName) -> Result<Vec<KeyRow>, String> {
        if self.notaries.is_empty() {
            return Err("no notary servers configured".to_owned());
        }
        let mut errors = Vec::new();
        for notary in &self.notaries {
            match self.fetch_from_notary(notary, server).await {
                Ok(rows) => return Ok(rows),
                Err(e) => errors.push(format!("{notary}: {e}")),
            }
        }
        Err(errors.join("; "))
    }

    async fn fetch_from_notary(
        &self,
        notary: &ServerName,
        server: &ServerName,
    ) -> Result<Vec<KeyRow>, String> {
        let notary_keys = self.fetch_direct(notary).await?;
        let path =
            format!("/_matrix/key/v2/query/{}", super::client::encode_segment(server.as_str()));
        let body = self
            .client
            .get_json(notary, &path, false, MAX_KEY_RESPONSE)
            .await
            .map_err(|e| e.to_string())?;
        let responses =
            body.get("server_keys").and_then(Value::as_array).ok_or("no server_keys")?;
        let notary_map = key_map_of(notary, &notary_keys);
        for response in responses {
            if response.get("server_name").and_then(Value::as_str) == Some(server.as_str()) {
                return parse_key_response(server, response, Some(&notary_map));
            }
        }
        Err("the notary does not know the server".to_owned())
    }
}

fn key_map_of(server: &ServerName, rows: &[KeyRow]) -> PublicKeyMap {
    let set = rows
        .iter()
        .filter(|r| r.expired_ms.is_none())
        .filter_map(|r| {
            Base64::<Standard>::parse(&r.verify_key).ok().map(|k| (r.key_id.clone(), k))
        })
        .collect();
    PublicKeyMap::from([(server.to_string(), set)])
}

/// Checks a `/_matrix/key/v2/server` response: right server, self-signed, and (via a notary)
/// also signed by the notary.
pub fn parse_key_response(
    server: &ServerName,
    body: &Value,
    notary: Option<&PublicKeyMap>,
) -> Result<Vec<KeyRow>, String> {
    if body.get("server_name").and_then(Value::as_str) != Some(server.as_str()) {
        return Err("key response names another server".to_owned());
    }
    let valid_until = body
        .get("valid_until_ts")
        .and_then(Value::as_i64)
        .ok_or("key response has no valid_until_ts")?;
    let verify_keys = body
        .get("verify_keys")
        .and_then(Value::as_object)
        .ok_or("key response has no verify_keys")?;
    if verify_keys.len() > MAX_VERIFY_KEYS {
        return Err(format!(
            "key response has {} verify_keys (at most {MAX_VERIFY_KEYS} are taken)",
            verify_keys.len()
        ));
    }
    let now = now_ms();
    let mut rows = Vec::new();
    let mut own = BTreeMap::new();
    for (key_id, v) in verify_keys {
        let key = v.get("key").and_then(Value::as_str).ok_or("verify key without `key`")?;
        let parsed =
            Base64::<Standard>::parse(key).map_err(|e| format!("verify key {key_id}: {e}"))?;
        own.insert(key_id.clone(), parsed);
        rows.push(KeyRow {
            server_name: server.to_string(),
            key_id: key_id.clone(),
            verify_key: key.to_owned(),
            valid_until_ms: valid_until,
            expired_ms: None,
            fetched_ms: now,
        });
    }
    if let Some(old) = body.get("old_verify_keys").and_then(Value::as_object) {
        let mut old: Vec<(i64, &String, &str)> = old
            .iter()
            .filter_map(|(key_id, v)| {
                let key = v.get("key").and_then(Value::as_str)?;
                let expired = v.get("expired_ts").and_then(Value::as_i64)?;
                Some((expired, key_id, key))
            })
            .collect();
        // Most recently expired first (ties by key ID, so the choice does not depend on order).
        old.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        old.truncate(MAX_OLD_VERIFY_KEYS);
        for (expired, key_id, key) in old {
            rows.push(KeyRow {
                server_name: server.to_string(),
                key_id: key_id.clone(),
                verify_key: key.to_owned(),
                valid_until_ms: expired,
                expired_ms: Some(expired),
                fetched_ms: now,
            });
        }
    }
    let object: CanonicalJsonObject = serde_json::from_value(body.clone())
        .map_err(|e| format!("key response is not canonical JSON: {e}"))?;
    // ruma checks the signers that are there: an answer with no signature of the server (or of
    // the notary it came through) would pass it untouched.
    let signers = object.get("signatures").and_then(CanonicalJsonValue::as_object);
    let required = std::iter::once(server.as_str())
        .chain(notary.into_iter().flat_map(|n| n.keys().map(String::as_str)));
    for signer in required {
        if !signers.is_some_and(|s| s.contains_key(signer)) {
            return Err(format!("key response is not signed by {signer}"));
        }
    }
    // Self-signed by the server, and (through a notary) signed by the notary too: ruma checks
    // every signer of the object, so both key sets go in one map.
    let mut map = PublicKeyMap::from([(server.to_string(), own)]);
    if let Some(notary) = notary {
        map.extend(notary.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    ruma::signatures::verify_json(&map, &object)
        .map_err(|e| format!("key response signatures: {e}"))?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use ruma::{MilliSecondsSinceUnixEpoch, OwnedServerName};
    use serde_json::Value;

    use super::*;
    use crate::matrix::KeyRing;

    fn ring(name: &str, seed: u8) -> KeyRing {
        KeyRing::from_seed(OwnedServerName::try_from(name).unwrap(), "k1", &[seed; 32]).unwrap()
    }

    fn response(keys: &KeyRing) -> Value {
        serde_json::to_value(keys.server_keys_response(MilliSecondsSinceUnixEpoch::now())).unwrap()
    }

    // Issue 15.3: a key response must carry the server's own signature.
    #[test]
    fn a_key_response_without_the_servers_signature_is_refused() {
        let server = ring("a.test", 1);
        let name = server.server_name().clone();
        assert_eq!(parse_key_response(&name, &response(&server), None).unwrap().len(), 1);
        let mut unsigned = response(&server);
        unsigned["signatures"] = serde_json::json!({});
        let err = parse_key_response(&name, &unsigned, None).unwrap_err();
        assert!(err.contains("not signed by a.test"), "{err}");
        let mut missing = response(&server);
        missing.as_object_mut().unwrap().remove("signatures");
        assert!(parse_key_response(&name, &missing, None).is_err());
    }

    fn signed(keys: &KeyRing, mut body: Value) -> Value {
        body.as_object_mut().unwrap().remove("signatures");
        let mut object: CanonicalJsonObject = serde_json::from_value(body).unwrap();
        keys.sign_json(&mut object).unwrap();
        serde_json::to_value(object).unwrap()
    }

    // A hostile key server cannot make us store thousands of keys: at most
    // MAX_OLD_VERIFY_KEYS old keys are kept (the most recently expired), and a response with
    // more than MAX_VERIFY_KEYS current keys is refused.
    #[test]
    fn a_key_response_stores_at_most_a_few_keys() {
        let server = ring("a.test", 1);
        let name = server.server_name().clone();
        let key = response(&server)["verify_keys"]["ed25519:k1"]["key"].clone();
        let mut body = response(&server);
        let old: serde_json::Map<String, Value> = (0..1_000)
            .map(|i| {
                let entry = serde_json::json!({ "key": key, "expired_ts": 1_000_000 + i });
                (format!("ed25519:old{i:04}"), entry)
            })
            .collect();
        body["old_verify_keys"] = Value::Object(old);
        let rows = parse_key_response(&name, &signed(&server, body), None).unwrap();
        assert_eq!(rows.len(), 1 + MAX_OLD_VERIFY_KEYS, "the current key and the newest old ones");
        let mut kept: Vec<&str> =
            rows.iter().filter(|r| r.expired_ms.is_some()).map(|r| r.key_id.as_str()).collect();
        kept.sort();
        let newest: Vec<String> = (990..1_000).map(|i| format!("ed25519:old{i:04}")).collect();
        assert_eq!(kept, newest.iter().map(String::as_str).collect::<Vec<_>>());

        let mut body = response(&server);
        for i in 0..1_000 {
            body["verify_keys"][format!("ed25519:extra{i}")] = serde_json::json!({ "key": key });
        }
        let err = parse_key_response(&name, &signed(&server, body), None).unwrap_err();
        assert!(err.contains("1001 verify_keys"), "{err}");
    }

    // Issue 15.3: through a notary, the notary's signature is required too.
    #[test]
    fn a_notary_answer_must_carry_the_notarys_signature() {
        let (server, notary) = (ring("a.test", 1), ring("notary.test", 2));
        let notary_map = key_map_of(
            notary.server_name(),
            &parse_key_response(notary.server_name(), &response(&notary), None).unwrap(),
        );
        let name = server.server_name().clone();
        let self_signed_only = response(&server);
        let err = parse_key_response(&name, &self_signed_only, Some(&notary_map)).unwrap_err();
        assert!(err.contains("not signed by notary.test"), "{err}");
        let mut object: CanonicalJsonObject = serde_json::from_value(response(&server)).unwrap();
        notary.sign_json(&mut object).unwrap();
        let cosigned = serde_json::to_value(object).unwrap();
        assert!(parse_key_response(&name, &cosigned, Some(&notary_map)).is_ok());
    }
}
