//! A simulated remote homeserver: its own ed25519 key served over HTTPS on loopback, requests
//! signed with X-Matrix, paths percent-encoded the way Synapse encodes them, `ver` repeated.

use std::{
    net::TcpListener,
    sync::{
        Arc, RwLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Json, Router, routing::get};
use knockd::matrix::{KeyRing, client::encode_segment, event};
use reqwest::{Method, StatusCode};
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, MilliSecondsSinceUnixEpoch, OwnedEventId,
    OwnedServerName, OwnedUserId, RoomVersionId,
    api::federation::authentication::{XMatrix, XMatrixSigningInput},
};
use serde_json::Value;
use tokio::sync::oneshot;

/// The key slots of servers a simulated notary vouches for.
type Vouched = Arc<std::sync::Mutex<Vec<Arc<RwLock<Arc<KeyRing>>>>>>;

/// Every room version a modern Synapse announces on make_knock.
pub const ALL_VERSIONS: [&str; 12] =
    ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"];

/// How the simulated server answers `/v2/invite` and `/send`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Accept and counter-sign invites, accept transactions.
    Accept,
    /// Refuse invites with this status and errcode (transactions still accepted).
    RefuseInvites(u16, String),
    /// Answer 503 to everything but the key server (a server that is down).
    Down,
    /// Counter-sign invites, then change the answer in this way (a hostile invitee server).
    TamperInvites(InviteTamper),
    /// Hold every `/send` this many milliseconds, then accept it (a stalled server).
    StallSends(u64),
    /// Answer every `/send` with this status and errcode (invites still accepted).
    RefuseSends(u16, String),
}

/// How a hostile server changes the invite it hands back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InviteTamper {
    /// Adds data under `unsigned`.
    Unsigned,
    /// Adds a signature of another server.
    ExtraSignature,
    /// Replaces the inviting server's own signature.
    InvitersSignature,
}

/// What the simulated server received.
#[derive(Clone, Debug, Default)]
pub struct Inbox {
    /// Invite events it counter-signed, with the request body.
    pub invites: Vec<Value>,
    /// `/v2/invite` requests received, whatever the answer (while down, say).
    pub invite_attempts: usize,
    /// Transactions: (txnId, body).
    pub transactions: Vec<(String, Value)>,
    /// Every signed `/send` as it arrived, answered or not: (txnId, body).
    pub send_attempts: Vec<(String, Value)>,
    /// `/send` requests being handled right now (a request its sender gave up on ends here too).
    pub sends_in_flight: usize,
    /// The most `/send` requests ever handled at once.
    pub max_sends_in_flight: usize,
    /// Requests whose X-Matrix signature did not verify.
    pub bad_signatures: usize,
}

impl Inbox {
    /// Every PDU received over `/send`.
    pub fn pdus(&self) -> Vec<Value> {
        self.transactions
            .iter()
            .flat_map(|(_, body)| body["pdus"].as_array().cloned().unwrap_or_default())
            .collect()
    }
}

#[derive(Clone)]
struct Shared {
    slot: Arc<RwLock<Arc<KeyRing>>>,
    mode: Arc<RwLock<Mode>>,
    inbox: Arc<std::sync::Mutex<Inbox>>,
    http: reqwest::Client,
    server_name: OwnedServerName,
    missing: Arc<std::sync::Mutex<Vec<CanonicalJsonObject>>>,
    served: Served,
    keys_down: Arc<std::sync::atomic::AtomicBool>,
    vouched: Vouched,
    /// Origins' verify keys by (origin, key ID), kept once fetched (as homeservers do).
    origin_keys: Arc<std::sync::Mutex<std::collections::HashMap<(String, String), String>>>,
}

/// What the simulated server answers to `/event/{id}` and `/state_ids?event_id=`.
#[derive(Clone, Default)]
struct Served {
    /// Requests for events received: `/get_missing_events`, `/event`, `/state_ids`.
    fetches: Arc<AtomicUsize>,
    /// When set, every `/get_missing_events` is answered with 20 new events made from this
    /// template (room version, event), each citing a prev event nobody has.
    endless: Arc<std::sync::Mutex<Option<(String, Value)>>>,
    events: Arc<std::sync::Mutex<std::collections::HashMap<String, CanonicalJsonObject>>>,
    state_ids: Arc<std::sync::Mutex<std::collections::HashMap<String, Value>>>,
}

/// A remote homeserver on 127.0.0.1.
pub struct SimServer {
    keys_down: Arc<std::sync::atomic::AtomicBool>,
    vouched: Vouched,
    mode: Arc<RwLock<Mode>>,
    missing: Arc<std::sync::Mutex<Vec<CanonicalJsonObject>>>,
    served: Served,
    inbox: Arc<std::sync::Mutex<Inbox>>,
    pub server_name: OwnedServerName,
    slot: Arc<RwLock<Arc<KeyRing>>>,
    /// How many times `/_matrix/key/v2/server` was asked for.
    pub key_requests: Arc<AtomicUsize>,
    http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    /// Where requests for a server name go instead of that name's address (one instance of
    /// several sharing a name).
    routes: Arc<std::sync::Mutex<std::collections::HashMap<String, String>>>,
    /// See [`SimServer::tolerate_unreachable`].
    tolerate_unreachable: Arc<std::sync::atomic::AtomicBool>,
}

/// The status a request answers with when knockd could not be reached at all (after
/// [`SimServer::tolerate_unreachable`]); no HTTP server sends it.
pub const UNREACHABLE: StatusCode = match StatusCode::from_u16(599) {
    Ok(s) => s,
    Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
};

impl SimServer {
    /// Sends requests for `server_name` to `addr` (another instance under that name).
    pub fn route(&self, server_name: &str, addr: &str) {
        self.routes.lock().expect("routes").insert(server_name.to_owned(), addr.to_owned());
    }

    /// Starts the key server on an ephemeral port.
    pub async fn start() -> Self {
        crate::install_crypto();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let server_name = OwnedServerName::try_from(addr.to_string()).expect("server name");
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).expect("random");
        let version = format!("sim{}", &crate::random_hex(2));
        let keys = Arc::new(KeyRing::from_seed(server_name.clone(), &version, &seed).expect("key"));
        let cert = rcgen::generate_simple_self_signed(vec![
            "127.0.0.1".to_owned(),
            "localhost".to_owned(),
        ])
        .expect("cert");
        let tls = axum_server::tls_rustls::RustlsConfig::from_pem(
            cert.cert.pem().into_bytes(),
            cert.signing_key.serialize_pem().into_bytes(),
        )
        .await
        .expect("tls config");
        let slot = Arc::new(RwLock::new(keys));
        let key_requests = Arc::new(AtomicUsize::new(0));
        let (served, counter) = (slot.clone(), key_requests.clone());
        let http = reqwest::Client::builder()
            .tls_danger_accept_invalid_certs(true)
            .build()
            .expect("client");
        let shared = Shared {
            slot: slot.clone(),
            mode: Arc::new(RwLock::new(Mode::Accept)),
            inbox: Arc::new(std::sync::Mutex::new(Inbox::default())),
            http: http.clone(),
            server_name: server_name.clone(),
            missing: Arc::new(std::sync::Mutex::new(Vec::new())),
            served: Served::default(),
            keys_down: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            vouched: Arc::new(std::sync::Mutex::new(Vec::new())),
            origin_keys: Arc::default(),
        };
        let missing = shared.missing.clone();
        let served_events = shared.served.clone();
        let (keys_down, vouched) = (shared.keys_down.clone(), shared.vouched.clone());
        let down = keys_down.clone();
        let (mode, inbox) = (shared.mode.clone(), shared.inbox.clone());
        let app = Router::new()
            .route(
                "/_matrix/key/v2/server",
                get(move || {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let keys = served.read().expect("key slot").clone();
                    let down = down.load(Ordering::SeqCst);
                    async move {
                        if down {
                            return reply(
                                503,
                                serde_json::json!({ "errcode": "M_UNKNOWN", "error": "keys down" }),
                            );
                        }
                        reply(
                            200,
                            serde_json::to_value(
                                keys.server_keys_response(MilliSecondsSinceUnixEpoch::now()),
                            )
                            .expect("json"),
                        )
                    }
                }),
            )
            .route("/_matrix/key/v2/query/{server}", get(on_notary_query))
            .route(
                "/_matrix/federation/v2/invite/{room_id}/{event_id}",
                axum::routing::put(on_invite),
            )
            .route("/_matrix/federation/v1/send/{txn_id}", axum::routing::put(on_send))
            .route(
                "/_matrix/federation/v1/get_missing_events/{room_id}",
                axum::routing::post(on_missing),
            )
            .route("/_matrix/federation/v1/event/{event_id}", get(on_event))
            .route("/_matrix/federation/v1/state_ids/{room_id}", get(on_state_ids))
            .with_state(shared);
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = axum_server::Handle::new();
        let shutdown = handle.clone();
        tokio::spawn(async move {
            let _ = stopped.await;
            shutdown.graceful_shutdown(Some(Duration::from_secs(1)));
        });
        let server = axum_server::from_tcp_rustls(listener, tls).expect("server").handle(handle);
        tokio::spawn(async move {
            let _ = server.serve(app.into_make_service()).await;
        });
        Self {
            mode,
            inbox,
            missing,
            served: served_events,
            keys_down,
            vouched,
            server_name,
            slot,
            key_requests,
            http,
            stop: Some(stop),
            routes: Arc::default(),
            tolerate_unreachable: Arc::default(),
        }
    }

    /// From now on a request that cannot reach knockd (refused, reset: knockd killed) answers
    /// [`UNREACHABLE`] with the error as `{"error"}`, rather than failing the test.
    pub fn tolerate_unreachable(&self) {
        self.tolerate_unreachable.store(true, Ordering::SeqCst);
    }

    /// The current signing key.
    pub fn keys(&self) -> Arc<KeyRing> {
        self.slot.read().expect("key slot").clone()
    }

    /// Replaces the signing key with a new one (new key ID); the old one is forgotten.
    pub fn rotate_key(&self) {
        *self.slot.write().expect("key slot") = Arc::new(self.new_key());
    }

    /// Replaces the signing key with a new one and publishes the replaced one in
    /// `old_verify_keys`, expired at `expired_ts`; returns the replaced one.
    pub fn rotate_key_expiring(&self, expired_ts: u64) -> Arc<KeyRing> {
        let replaced = self.keys();
        let mut old = replaced.old_keys().to_vec();
        old.push(knockd::matrix::keys::OldKey {
            key_id: replaced.key_id(),
            public: replaced.public_key_base64(),
            expired_ts,
        });
        *self.slot.write().expect("key slot") = Arc::new(self.new_key().with_old_keys(old));
        replaced
    }

    fn new_key(&self) -> KeyRing {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).expect("random");
        let version = format!("sim{}", crate::random_hex(3));
        KeyRing::from_seed(self.server_name.clone(), &version, &seed).expect("key")
    }

    /// Makes `/_matrix/key/v2/server` answer 503 (the server's keys cannot be fetched directly).
    pub fn set_keys_down(&self, down: bool) {
        self.keys_down.store(down, Ordering::SeqCst);
    }

    /// Acts as a notary for `other`: `/_matrix/key/v2/query/{other}` answers its keys, co-signed.
    pub fn vouch_for(&self, other: &SimServer) {
        self.vouched.lock().expect("vouched").push(other.slot.clone());
    }

    /// Answers every `/get_missing_events` with 20 new events made from `template`, each citing
    /// a new prev event that nobody has (a server that would keep a gap open forever).
    pub fn serve_endless_missing_events(&self, version: &str, template: Value) {
        *self.served.endless.lock().expect("endless") = Some((version.to_owned(), template));
    }

    /// How many `/get_missing_events`, `/event` and `/state_ids` requests it received.
    pub fn fetches(&self) -> usize {
        self.served.fetches.load(Ordering::SeqCst)
    }

    /// Events this server answers `/get_missing_events` with.
    pub fn serve_missing_events(&self, events: Vec<CanonicalJsonObject>) {
        *self.missing.lock().expect("missing") = events;
    }

    /// Events it answers `GET /event/{id}` with (by event ID).
    pub fn serve_events(&self, events: &[(OwnedEventId, CanonicalJsonObject)]) {
        let mut served = self.served.events.lock().expect("served");
        for (id, pdu) in events {
            served.insert(id.to_string(), pdu.clone());
        }
    }

    /// What it answers `GET /state_ids/{room}?event_id={at}` with.
    pub fn serve_state_ids(&self, at: &str, pdu_ids: &[String], auth_chain_ids: &[String]) {
        self.served.state_ids.lock().expect("served").insert(
            at.to_owned(),
            serde_json::json!({ "pdu_ids": pdu_ids, "auth_chain_ids": auth_chain_ids }),
        );
    }

    /// Changes how invites and transactions are answered.
    pub fn set_mode(&self, mode: Mode) {
        *self.mode.write().expect("mode") = mode;
    }

    /// Forgets what was received so far (requests in flight stay counted).
    pub fn clear_inbox(&self) {
        let mut inbox = self.inbox.lock().expect("inbox");
        let in_flight = inbox.sends_in_flight;
        *inbox = Inbox {
            sends_in_flight: in_flight,
            max_sends_in_flight: in_flight,
            ..Inbox::default()
        };
    }

    /// A copy of what was received so far.
    pub fn inbox(&self) -> Inbox {
        self.inbox.lock().expect("inbox").clone()
    }

    /// Waits until `check` holds for the inbox (polling), or panics after `secs` seconds.
    pub async fn wait_for(&self, secs: u64, what: &str, check: impl Fn(&Inbox) -> bool) -> Inbox {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let inbox = self.inbox();
            if check(&inbox) {
                return inbox;
            }
            if std::time::Instant::now() > deadline {
                panic!("timed out waiting for {what}: {inbox:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// How many key requests the server answered so far.
    pub fn key_fetches(&self) -> usize {
        self.key_requests.load(Ordering::SeqCst)
    }

    /// `@local:<this server>`
    pub fn user(&self, local: &str) -> OwnedUserId {
        OwnedUserId::try_from(format!("@{local}:{}", self.server_name)).expect("user id")
    }

    /// Sends a request signed with X-Matrix to `dest` (a server name like `127.0.0.1:8448`).
    pub async fn request(
        &self,
        method: Method,
        dest: &str,
        path_and_query: &str,
        body: Option<&[u8]>,
    ) -> (StatusCode, Value) {
        let authorization = self.x_matrix(&method, dest, path_and_query, body.unwrap_or_default());
        self.raw(method, dest, path_and_query, body, Some(authorization)).await
    }

    /// The X-Matrix header value for a request. A body that is not JSON cannot be signed; the
    /// header then covers no content (for tests of malformed bodies).
    pub fn x_matrix(
        &self,
        method: &Method,
        dest: &str,
        path_and_query: &str,
        body: &[u8],
    ) -> String {
        let canonical = serde_json::from_slice::<ruma::CanonicalJsonValue>(body).is_ok();
        if !canonical && let Ok(content) = serde_json::from_slice::<Value>(body) {
            // JSON with floats (EDUs): sign the sorted, compact serialisation, as servers do.
            let object = serde_json::json!({
                "method": method.as_str(), "uri": path_and_query, "origin": self.server_name.as_str(),
                "destination": dest, "content": content,
            });
            let keys = self.keys();
            let sig = keys.sign_bytes(&serde_json::to_vec(&object).expect("json"));
            return format!(
                "X-Matrix origin=\"{}\",destination=\"{dest}\",key=\"{}\",sig=\"{sig}\"",
                self.server_name,
                keys.key_id()
            );
        }
        let body = if canonical { body } else { b"" };
        let request = http::Request::builder()
            .method(method.as_str())
            .uri(path_and_query)
            .body(body.to_vec())
            .expect("request");
        let keys = self.keys();
        let input = XMatrixSigningInput::new(
            self.server_name.clone(),
            OwnedServerName::try_from(dest).expect("dest"),
            keys.pair(),
        );
        XMatrix::sign_http_request(&request, input).expect("sign").to_string()
    }

    /// Sends a request with the given Authorization header (or none).
    pub async fn raw(
        &self,
        method: Method,
        dest: &str,
        path_and_query: &str,
        body: Option<&[u8]>,
        authorization: Option<String>,
    ) -> (StatusCode, Value) {
        let host = self.routes.lock().expect("routes").get(dest).cloned();
        let host = host.as_deref().unwrap_or(dest);
        let mut r = self.http.request(method, format!("https://{host}{path_and_query}"));
        if let Some(a) = authorization {
            r = r.header("Authorization", a);
        }
        if let Some(b) = body {
            r = r.header("Content-Type", "application/json").body(b.to_vec());
        }
        let tolerate = self.tolerate_unreachable.load(Ordering::SeqCst);
        let unreachable = |e: reqwest::Error| {
            if !tolerate {
                panic!("request sent: {e:?}");
            }
            (UNREACHABLE, serde_json::json!({ "error": e.to_string() }))
        };
        let response = match r.send().await {
            Ok(response) => response,
            Err(e) => return unreachable(e),
        };
        let status = response.status();
        let bytes = match response.bytes().await {
            Ok(bytes) => bytes,
            Err(e) => return unreachable(e),
        };
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// `GET make_knock`, announcing the given room versions.
    pub async fn make_knock_with(
        &self,
        dest: &str,
        room_id: &str,
        user: &str,
        versions: &[&str],
    ) -> (StatusCode, Value) {
        let query: Vec<String> = versions.iter().map(|v| format!("ver={v}")).collect();
        let path = format!(
            "/_matrix/federation/v1/make_knock/{}/{}?{}",
            encode_segment(room_id),
            encode_segment(user),
            query.join("&")
        );
        self.request(Method::GET, dest, &path, None).await
    }

    pub async fn make_knock(&self, dest: &str, room_id: &str, user: &str) -> (StatusCode, Value) {
        self.make_knock_with(dest, room_id, user, &ALL_VERSIONS).await
    }

    /// Fills in a template the way a knocking server does, hashes and signs it.
    pub fn sign_template(
        &self,
        version: &str,
        template: &Value,
        reason: Option<&str>,
    ) -> (OwnedEventId, CanonicalJsonObject) {
        let mut event = template.clone();
        if let Some(reason) = reason {
            event["content"]["reason"] = reason.into();
        }
        self.sign_event(version, event)
    }

    /// Hashes and signs any event with this server's key.
    pub fn sign_event(&self, version: &str, event: Value) -> (OwnedEventId, CanonicalJsonObject) {
        self.sign_event_with(&self.keys(), version, event)
    }

    /// Hashes and signs any event with `keys` (one of this server's, say a replaced one).
    pub fn sign_event_with(
        &self,
        keys: &KeyRing,
        version: &str,
        event: Value,
    ) -> (OwnedEventId, CanonicalJsonObject) {
        let version = RoomVersionId::try_from(version).expect("version");
        let rules = event::rules(&version).expect("rules");
        let mut object: CanonicalJsonObject = serde_json::from_value(event).expect("canonical");
        object.remove("signatures");
        object.remove("hashes");
        ruma::signatures::hash_and_sign_event(
            self.server_name.as_str(),
            keys.pair(),
            &mut object,
            &rules.redaction,
        )
        .expect("sign");
        let id = event::event_id(&object, &rules).expect("event id");
        (id, object)
    }

    /// `PUT send_knock` with a PDU.
    pub async fn send_knock(
        &self,
        dest: &str,
        room_id: &str,
        event_id: &str,
        pdu: &CanonicalJsonObject,
    ) -> (StatusCode, Value) {
        let body = serde_json::to_vec(pdu).expect("json");
        let path = format!(
            "/_matrix/federation/v1/send_knock/{}/{}",
            encode_segment(room_id),
            encode_segment(event_id)
        );
        self.request(Method::PUT, dest, &path, Some(&body)).await
    }

    /// `GET make_{join,leave}` (join announces every version; leave takes none).
    pub async fn make_membership(
        &self,
        kind: &str,
        dest: &str,
        room_id: &str,
        user: &str,
    ) -> (StatusCode, Value) {
        let query = if kind == "leave" {
            String::new()
        } else {
            format!(
                "?{}",
                ALL_VERSIONS.iter().map(|v| format!("ver={v}")).collect::<Vec<_>>().join("&")
            )
        };
        let path = format!(
            "/_matrix/federation/v1/make_{kind}/{}/{}{query}",
            encode_segment(room_id),
            encode_segment(user)
        );
        self.request(Method::GET, dest, &path, None).await
    }

    /// `PUT send_{join,leave}` in API version 1 or 2.
    pub async fn send_membership(
        &self,
        kind: &str,
        api: u8,
        dest: &str,
        room_id: &str,
        event_id: &str,
        pdu: &CanonicalJsonObject,
    ) -> (StatusCode, Value) {
        let body = serde_json::to_vec(pdu).expect("json");
        let path = format!(
            "/_matrix/federation/v{api}/send_{kind}/{}/{}",
            encode_segment(room_id),
            encode_segment(event_id)
        );
        self.request(Method::PUT, dest, &path, Some(&body)).await
    }

    /// make_join/make_leave, sign, send (v2): the whole handshake; returns the send answer.
    pub async fn membership(
        &self,
        kind: &str,
        dest: &str,
        room_id: &str,
        local: &str,
    ) -> (StatusCode, Value) {
        let user = self.user(local);
        let (status, made) = self.make_membership(kind, dest, room_id, user.as_str()).await;
        if status != StatusCode::OK {
            return (status, made);
        }
        let version = made["room_version"].as_str().expect("room_version").to_owned();
        let (id, pdu) = self.sign_event(&version, made["event"].clone());
        self.send_membership(kind, 2, dest, room_id, id.as_str(), &pdu).await
    }

    /// `PUT /send/{txnId}` with PDUs (and EDUs).
    pub async fn send_txn(
        &self,
        dest: &str,
        txn_id: &str,
        pdus: &[CanonicalJsonObject],
        edus: &[Value],
    ) -> (StatusCode, Value) {
        let body = serde_json::json!({
            "origin": self.server_name.as_str(),
            "origin_server_ts": MilliSecondsSinceUnixEpoch::now(),
            "pdus": pdus,
            "edus": edus,
        });
        let body = serde_json::to_vec(&body).expect("json");
        let path = format!("/_matrix/federation/v1/send/{}", encode_segment(txn_id));
        self.request(Method::PUT, dest, &path, Some(&body)).await
    }

    /// `n` knocks by users `{prefix}0…`, all signed from one make_knock template (a wide fork),
    /// each sent and required to succeed: the template, and `(user, event ID)` of each knock.
    pub async fn stale_knocks(
        &self,
        dest: &str,
        room_id: &str,
        prefix: &str,
        n: usize,
    ) -> (Value, Vec<(String, String)>) {
        let first = self.user(&format!("{prefix}0"));
        let (status, made) = self.make_knock(dest, room_id, first.as_str()).await;
        assert_eq!(status, StatusCode::OK, "{made}");
        let version = made["room_version"].as_str().expect("room_version").to_owned();
        let template = made["event"].clone();
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let user = self.user(&format!("{prefix}{i}"));
            let mut event = template.clone();
            event["sender"] = user.as_str().into();
            event["state_key"] = user.as_str().into();
            let (id, pdu) = self.sign_template(&version, &event, Some(&format!("knock {i}")));
            let (status, body) = self.send_knock(dest, room_id, id.as_str(), &pdu).await;
            assert_eq!(status, StatusCode::OK, "{user}: {body}");
            out.push((user.to_string(), id.to_string()));
        }
        (template, out)
    }

    /// A knock with a display name and reason, as a client would send it.
    pub async fn knock_as(
        &self,
        dest: &str,
        room_id: &str,
        local: &str,
        displayname: Option<&str>,
        reason: Option<&str>,
    ) -> (StatusCode, Value) {
        let user = self.user(local);
        let (status, made) = self.make_knock(dest, room_id, user.as_str()).await;
        if status != StatusCode::OK {
            return (status, made);
        }
        let version = made["room_version"].as_str().unwrap_or_default().to_owned();
        let mut event = made["event"].clone();
        if let Some(name) = displayname {
            event["content"]["displayname"] = name.into();
        }
        let (id, pdu) = self.sign_template(&version, &event, reason);
        self.send_knock(dest, room_id, id.as_str(), &pdu).await
    }

    /// make_knock, sign, send_knock: the whole knock of one user.
    pub async fn knock(
        &self,
        dest: &str,
        room_id: &str,
        local: &str,
        reason: Option<&str>,
    ) -> (StatusCode, Value) {
        let user = self.user(local);
        let (status, made) = self.make_knock(dest, room_id, user.as_str()).await;
        if status != StatusCode::OK {
            return (status, made);
        }
        let version = made["room_version"].as_str().expect("room_version").to_owned();
        let (id, pdu) = self.sign_template(&version, &made["event"], reason);
        self.send_knock(dest, room_id, id.as_str(), &pdu).await
    }
}

/// Reads a field of a canonical object as a string.
pub fn field<'a>(pdu: &'a CanonicalJsonObject, name: &str) -> Option<&'a str> {
    pdu.get(name).and_then(CanonicalJsonValue::as_str)
}

impl Drop for SimServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

type Reply = (axum::http::StatusCode, Json<Value>);

fn reply(status: u16, body: Value) -> Reply {
    (axum::http::StatusCode::from_u16(status).expect("status"), Json(body))
}

/// Verifies the X-Matrix header of a request to the simulated server with the origin's key,
/// fetched from the origin's key server.
async fn verify_request(shared: &Shared, req: &http::Request<Vec<u8>>) -> Result<XMatrix, String> {
    let header = req.headers().get("authorization").ok_or("no Authorization")?;
    let x = XMatrix::try_from(header).map_err(|e| e.to_string())?;
    let id = (x.origin.to_string(), x.key.to_string());
    let cached = shared.origin_keys.lock().expect("origin keys").get(&id).cloned();
    let key = match cached {
        Some(key) => key,
        None => {
            let url = format!("https://{}/_matrix/key/v2/server", x.origin);
            let keys: Value = shared
                .http
                .get(url)
                .send()
                .await
                .map_err(|e| e.to_string())?
                .json()
                .await
                .map_err(|e| e.to_string())?;
            let key = keys["verify_keys"][x.key.as_str()]["key"]
                .as_str()
                .ok_or("origin has no such key")?
                .to_owned();
            shared.origin_keys.lock().expect("origin keys").insert(id, key.clone());
            key
        }
    };
    let key = ruma::serde::Base64::<ruma::serde::base64::Standard>::parse(&key)
        .map_err(|e| e.to_string())?;
    let map = std::collections::BTreeMap::from([(
        x.origin.to_string(),
        std::collections::BTreeMap::from([(x.key.to_string(), key)]),
    )]);
    x.verify_http_request(req, &shared.server_name, &map).map_err(|e| e.to_string())?;
    Ok(x)
}

async fn read_request(req: axum::extract::Request) -> http::Request<Vec<u8>> {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 16 * 1024 * 1024).await.unwrap_or_default().to_vec();
    http::Request::from_parts(parts, bytes)
}

/// The X-Matrix check of every endpoint but the key server; a bad signature is counted.
async fn authenticate(shared: &Shared, req: &http::Request<Vec<u8>>) -> Result<(), Reply> {
    verify_request(shared, req).await.map_err(|e| {
        shared.inbox.lock().expect("inbox").bad_signatures += 1;
        reply(401, serde_json::json!({ "errcode": "M_UNAUTHORIZED", "error": e }))
    })?;
    Ok(())
}

async fn on_invite(
    axum::extract::State(shared): axum::extract::State<Shared>,
    req: axum::extract::Request,
) -> Reply {
    let req = read_request(req).await;
    shared.inbox.lock().expect("inbox").invite_attempts += 1;
    let mode = shared.mode.read().expect("mode").clone();
    match mode {
        Mode::Down => {
            return reply(503, serde_json::json!({ "errcode": "M_UNKNOWN", "error": "down" }));
        }
        Mode::RefuseInvites(status, errcode) => {
            return reply(
                status,
                serde_json::json!({ "errcode": errcode, "error": "invites are blocked here" }),
            );
        }
        Mode::Accept | Mode::TamperInvites(_) | Mode::StallSends(_) | Mode::RefuseSends(..) => {}
    }
    if let Err(refused) = authenticate(&shared, &req).await {
        return refused;
    }
    let body: Value = serde_json::from_slice(req.body()).unwrap_or(Value::Null);
    let version = body["room_version"].as_str().unwrap_or_default().to_owned();
    let Ok(rules) = RoomVersionId::try_from(version.as_str())
        .map_err(|_| ())
        .and_then(|v| event::rules(&v).map_err(|_| ()))
    else {
        return reply(
            400,
            serde_json::json!({ "errcode": "M_INCOMPATIBLE_ROOM_VERSION", "error": "unknown version" }),
        );
    };
    let mut event: CanonicalJsonObject = match serde_json::from_value(body["event"].clone()) {
        Ok(e) => e,
        Err(e) => {
            return reply(
                400,
                serde_json::json!({ "errcode": "M_BAD_JSON", "error": e.to_string() }),
            );
        }
    };
    let keys = shared.slot.read().expect("key slot").clone();
    if let Err(e) = ruma::signatures::sign_event(
        shared.server_name.as_str(),
        keys.pair(),
        &mut event,
        &rules.redaction,
    ) {
        return reply(400, serde_json::json!({ "errcode": "M_BAD_JSON", "error": e.to_string() }));
    }
    shared.inbox.lock().expect("inbox").invites.push(body);
    let mut answer = serde_json::json!({ "event": event });
    if let Mode::TamperInvites(how) = mode {
        let sender = answer["event"]["sender"].as_str().unwrap_or_default().to_owned();
        let inviter = sender.split_once(':').map(|(_, s)| s.to_owned()).unwrap_or_default();
        let fake = "A".repeat(86);
        match how {
            InviteTamper::Unsigned => {
                answer["event"]["unsigned"] = serde_json::json!({ "planted": "by the invitee" });
            }
            InviteTamper::ExtraSignature => {
                answer["event"]["signatures"]["127.0.0.1:1"] =
                    serde_json::json!({ "ed25519:x": fake });
            }
            InviteTamper::InvitersSignature => {
                answer["event"]["signatures"][inviter] = serde_json::json!({ "ed25519:x": fake });
            }
        }
    }
    reply(200, answer)
}

/// Counts a `/send` in flight while it lives; dropped when answered or when its sender hangs up.
struct InFlight(Arc<std::sync::Mutex<Inbox>>);

impl InFlight {
    fn start(inbox: &Arc<std::sync::Mutex<Inbox>>) -> Self {
        let mut i = inbox.lock().expect("inbox");
        i.sends_in_flight += 1;
        i.max_sends_in_flight = i.max_sends_in_flight.max(i.sends_in_flight);
        Self(inbox.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.lock().expect("inbox").sends_in_flight -= 1;
    }
}

async fn on_send(
    axum::extract::State(shared): axum::extract::State<Shared>,
    axum::extract::Path(txn_id): axum::extract::Path<String>,
    req: axum::extract::Request,
) -> Reply {
    let _in_flight = InFlight::start(&shared.inbox);
    let req = read_request(req).await;
    let mode = shared.mode.read().expect("mode").clone();
    if mode == Mode::Down {
        return reply(503, serde_json::json!({ "errcode": "M_UNKNOWN", "error": "down" }));
    }
    if let Err(refused) = authenticate(&shared, &req).await {
        return refused;
    }
    let body: Value = serde_json::from_slice(req.body()).unwrap_or(Value::Null);
    shared.inbox.lock().expect("inbox").send_attempts.push((txn_id.clone(), body.clone()));
    match mode {
        Mode::StallSends(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
        Mode::RefuseSends(status, errcode) => {
            return reply(status, serde_json::json!({ "errcode": errcode, "error": "refused" }));
        }
        _ => {}
    }
    shared.inbox.lock().expect("inbox").transactions.push((txn_id, body));
    reply(200, serde_json::json!({ "pdus": {} }))
}

async fn on_missing(
    axum::extract::State(shared): axum::extract::State<Shared>,
    req: axum::extract::Request,
) -> Reply {
    let req = read_request(req).await;
    if let Err(refused) = authenticate(&shared, &req).await {
        return refused;
    }
    shared.served.fetches.fetch_add(1, Ordering::SeqCst);
    let endless = shared.served.endless.lock().expect("endless").clone();
    if let Some((version, template)) = endless {
        let keys = shared.slot.read().expect("key slot").clone();
        let rules = RoomVersionId::try_from(version.as_str())
            .ok()
            .and_then(|v| event::rules(&v).ok())
            .expect("room version");
        let events: Vec<CanonicalJsonObject> = (0..20)
            .map(|_| {
                let mut event = template.clone();
                let nobody_has = format!("${}", crate::random_hex(21).get(..42).unwrap_or("x"));
                event["prev_events"] = serde_json::json!([format!("{nobody_has}A")]);
                event["content"]["body"] = crate::random_hex(8).into();
                let mut object: CanonicalJsonObject =
                    serde_json::from_value(event).expect("canonical");
                ruma::signatures::hash_and_sign_event(
                    shared.server_name.as_str(),
                    keys.pair(),
                    &mut object,
                    &rules.redaction,
                )
                .expect("sign");
                object
            })
            .collect();
        return reply(200, serde_json::json!({ "events": events }));
    }
    let events = shared.missing.lock().expect("missing").clone();
    reply(200, serde_json::json!({ "events": events }))
}

async fn on_event(
    axum::extract::State(shared): axum::extract::State<Shared>,
    axum::extract::Path(id): axum::extract::Path<String>,
    req: axum::extract::Request,
) -> Reply {
    let req = read_request(req).await;
    if let Err(refused) = authenticate(&shared, &req).await {
        return refused;
    }
    shared.served.fetches.fetch_add(1, Ordering::SeqCst);
    match shared.served.events.lock().expect("served").get(&id) {
        Some(pdu) => reply(
            200,
            serde_json::json!({
                "origin": shared.server_name.as_str(),
                "origin_server_ts": MilliSecondsSinceUnixEpoch::now(),
                "pdus": [pdu],
            }),
        ),
        None => {
            reply(404, serde_json::json!({ "errcode": "M_NOT_FOUND", "error": "no such event" }))
        }
    }
}

async fn on_state_ids(
    axum::extract::State(shared): axum::extract::State<Shared>,
    axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, String>>,
    req: axum::extract::Request,
) -> Reply {
    let req = read_request(req).await;
    if let Err(refused) = authenticate(&shared, &req).await {
        return refused;
    }
    shared.served.fetches.fetch_add(1, Ordering::SeqCst);
    let at = query.get("event_id").cloned().unwrap_or_default();
    match shared.served.state_ids.lock().expect("served").get(&at) {
        Some(answer) => reply(200, answer.clone()),
        None => reply(404, serde_json::json!({ "errcode": "M_NOT_FOUND", "error": "no state" })),
    }
}

async fn on_notary_query(
    axum::extract::State(shared): axum::extract::State<Shared>,
    axum::extract::Path(server): axum::extract::Path<String>,
) -> Reply {
    let slots = shared.vouched.lock().expect("vouched").clone();
    let ours = shared.slot.read().expect("key slot").clone();
    for slot in slots {
        let theirs = slot.read().expect("key slot").clone();
        if theirs.server_name().as_str() == server {
            let mut object = theirs.server_keys_response(MilliSecondsSinceUnixEpoch::now());
            ours.sign_json(&mut object).expect("co-sign");
            return reply(200, serde_json::json!({ "server_keys": [object] }));
        }
    }
    reply(200, serde_json::json!({ "server_keys": [] }))
}
