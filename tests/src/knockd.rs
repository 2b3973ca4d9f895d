//! knockd started in-process on 127.0.0.1 with ephemeral ports.

use std::{
    net::{SocketAddr, TcpListener},
    path::PathBuf,
    time::Duration,
};

use knockd::{
    config::{Config, Overrides},
    server::Listeners,
    service::AppState,
};
use knockd_shared::AdminClient;
use tokio::sync::oneshot;

use crate::{TestBackend, TestDb};

/// A running knockd. Stops when dropped.
pub struct TestKnockd {
    pub backend: TestBackend,
    pub admin: AdminClient,
    pub admin_url: String,
    pub federation_url: String,
    pub server_name: String,
    pub data_dir: PathBuf,
    pub app: AppState,
    /// `http://…/metrics` when started with `KNOCKD_METRICS_LISTEN`.
    pub metrics_url: Option<String>,
    federation_addr: SocketAddr,
    admin_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    extra_env: Vec<(String, String)>,
    data: Option<tempfile::TempDir>,
    db: Option<TestDb>,
}

impl TestKnockd {
    /// Starts knockd on a fresh database of the given backend.
    pub async fn start(backend: TestBackend) -> Self {
        Self::start_with(TestDb::new(backend), &[]).await
    }

    /// Starts knockd with extra environment-style settings (`KNOCKD_*` names).
    pub async fn start_with(db: TestDb, extra_env: &[(&str, &str)]) -> Self {
        let data = tempfile::tempdir().expect("temp dir");
        Self::start_in(db, data, extra_env).await
    }

    /// Stops knockd and starts it again on the same data dir and database (new ports).
    pub async fn restart(self) -> Self {
        self.restart_with(|_| {}).await
    }

    /// [`Self::restart`], running `between` on the data dir while knockd is stopped (as an
    /// operator's offline command would).
    pub async fn restart_with(mut self, between: impl FnOnce(&std::path::Path)) -> Self {
        self.shutdown().await;
        between(&self.data_dir);
        let (db, data) = (self.db.take().expect("db"), self.data.take().expect("data dir"));
        let env = self.extra_env.clone();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let addrs = (self.federation_addr, self.admin_addr);
        Self::start_at(db, data, &env, Some(addrs)).await
    }

    /// A second knockd on this one's database under the same server name and signing key (copied
    /// into a data dir of its own, which gets its own instance id), as an operator runs two
    /// instances behind one name. Other requests than its own outbound ones reach the first.
    /// The database goes with `self`'s `TestDb`: a test that stops `self` first starts it on
    /// `TestDb::alias` of a database it keeps.
    pub async fn start_peer(&self, extra_env: &[(&str, &str)]) -> Self {
        let db = self.db.as_ref().expect("db").alias();
        let data = tempfile::tempdir().expect("temp dir");
        let key = knockd::server::SIGNING_KEY_FILE;
        std::fs::copy(self.data_dir.join(key), data.path().join(key)).expect("copy signing key");
        let mut env = extra_env.to_vec();
        env.push(("KNOCKD_SERVER_NAME", self.server_name.as_str()));
        Self::start_in(db, data, &env).await
    }

    async fn start_in(db: TestDb, data: tempfile::TempDir, extra_env: &[(&str, &str)]) -> Self {
        Self::start_at(db, data, extra_env, None).await
    }

    /// Starts on the given addresses (a restart keeps its ports and so its server name).
    async fn start_at(
        db: TestDb,
        data: tempfile::TempDir,
        extra_env: &[(&str, &str)],
        addrs: Option<(SocketAddr, SocketAddr)>,
    ) -> Self {
        crate::install_crypto();
        let saved_env: Vec<(String, String)> =
            extra_env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let (fed_at, adm_at) = addrs.unwrap_or_else(|| {
            let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
            (any, any)
        });
        let fed = bind_retrying(fed_at);
        let adm = bind_retrying(adm_at);
        fed.set_nonblocking(true).expect("nonblocking");
        adm.set_nonblocking(true).expect("nonblocking");
        let fed_addr = fed.local_addr().expect("addr");
        let adm_addr = adm.local_addr().expect("addr");
        let mut env: Vec<(String, String)> = vec![
            ("KNOCKD_SERVER_NAME".into(), fed_addr.to_string()),
            ("KNOCKD_DATABASE_URL".into(), db.url.clone()),
            ("KNOCKD_DATA_DIR".into(), data.path().display().to_string()),
            ("KNOCKD_FEDERATION_LISTEN".into(), fed_addr.to_string()),
            ("KNOCKD_ADMIN_LISTEN".into(), adm_addr.to_string()),
            ("KNOCKD_FEDERATION_VERIFY_CERTIFICATES".into(), "false".into()),
            // Every simulated server is on this machine, which outbound federation refuses by
            // default.
            ("KNOCKD_FEDERATION_IP_RANGE_ALLOWLIST".into(), "127.0.0.1,::1".into()),
            // Tests send bursts of knocks from one server to one room; the tests of the limits
            // set their own.
            ("KNOCKD_KNOCK_RATE_PER_ORIGIN".into(), "0".into()),
            ("KNOCKD_KNOCK_RATE_PER_ROOM".into(), "0".into()),
        ];
        env.extend(extra_env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let lookup =
            move |name: &str| env.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let config = Config::load(None, &lookup, &Overrides::default()).expect("config");
        let server_name = config.server_name.to_string();
        let app = knockd::prepare(&config).await.expect("knockd prepare");
        let (stop, stopped) = oneshot::channel::<()>();
        // Metrics when the test asks for them (`KNOCKD_METRICS_LISTEN`, port 0 for any).
        let metrics = config.metrics.listen.map(|addr| {
            let l = TcpListener::bind(addr).expect("metrics listener");
            l.set_nonblocking(true).expect("nonblocking");
            l
        });
        let metrics_url =
            metrics.as_ref().map(|l| format!("http://{}/metrics", l.local_addr().expect("addr")));
        let listeners = Listeners { federation: fed, admin: adm, metrics };
        let serving = app.clone();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(e) = knockd::serve(serving, listeners, shutdown).await {
                panic!("knockd stopped: {e}");
            }
        });
        let admin_url = format!("http://{adm_addr}");
        let token = std::fs::read_to_string(data.path().join(knockd_shared::ADMIN_TOKEN_FILE))
            .expect("admin.token written on first start");
        let admin = AdminClient::new(admin_url.clone(), token.trim());
        let this = Self {
            backend: db.backend,
            admin,
            admin_url: admin_url.clone(),
            federation_url: format!("https://{fed_addr}"),
            server_name,
            data_dir: data.path().to_owned(),
            app,
            metrics_url,
            federation_addr: fed_addr,
            admin_addr: adm_addr,
            stop: Some(stop),
            task: Some(task),
            extra_env: saved_env,
            data: Some(data),
            db: Some(db),
        };
        this.wait_healthy().await;
        this
    }

    async fn wait_healthy(&self) {
        let http = reqwest::Client::new();
        for _ in 0..200 {
            if let Ok(r) = http.get(format!("{}/healthz", self.admin_url)).send().await
                && r.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("knockd did not become healthy");
    }

    /// An HTTPS client for the federation listener (self-signed certificate accepted).
    pub fn federation_http(&self) -> reqwest::Client {
        reqwest::Client::builder().tls_danger_accept_invalid_certs(true).build().expect("client")
    }

    /// Stops knockd and waits for it.
    pub async fn stop(mut self) {
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(15), task).await;
        }
    }
}

impl Drop for TestKnockd {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl TestKnockd {
    /// Seeds a state event built and signed by knockd (for memberships and settings a test needs
    /// before the admin API can make them). Fails like knockd's own auth checks would.
    pub async fn seed_state(
        &self,
        room_id: &str,
        sender: &str,
        event_type: &str,
        state_key: &str,
        content: serde_json::Value,
    ) -> Result<String, String> {
        use knockd::{
            matrix::{EventTemplate, now_ms},
            room::{
                accept::{Placing, store_accepted},
                effects::Source,
                local,
                state_before::Mode,
            },
            store::StoreError,
        };
        let sender = ruma::OwnedUserId::try_from(sender).map_err(|e| e.to_string())?;
        let template = EventTemplate::state(event_type, state_key, &sender, content);
        let origin = self.server_name.clone();
        self.app
            .rooms
            .write(room_id, move |txn| -> Result<String, StoreError> {
                let (conn, room, keys) = txn.parts()?;
                let (pdu, before) =
                    local::build(conn, room, keys, &template, now_ms(), Mode::Store)?;
                let id = pdu.event_id.to_string();
                // As if it had come in a transaction: stored with its effects, not sent on.
                let source = Source::Transaction {
                    origin: &origin,
                    content_redacted: false,
                    knock_state: &[],
                };
                let placing = Placing { outlier: false, merge_before: false };
                store_accepted(txn, pdu, &before, placing, source)?;
                Ok(id)
            })
            .await
            .map_err(|e| e.to_string())
    }

    /// The room's forward extremities count and current-state size, to show nothing was written.
    pub async fn room_footprint(&self, room_id: &str) -> (i64, usize) {
        let detail = self.admin.room(room_id).await.expect("room");
        (detail.summary.forward_extremities, detail.state.len())
    }

    /// `@admin:<server>`
    pub fn admin_user(&self) -> String {
        format!("@admin:{}", self.server_name)
    }

    /// An admin client with a new token of a local user (created if needed), as
    /// `knockd admin token create --user` makes one.
    pub async fn client_for(&self, user: &str) -> AdminClient {
        AdminClient::new(self.admin_url.clone(), self.token_for(user).await)
    }

    /// A new admin token of a local user (created if needed).
    pub async fn token_for(&self, user: &str) -> String {
        let token = knockd::server::new_token().expect("token");
        let (user, stored) = (user.to_owned(), token.clone());
        self.app
            .db
            .write(move |conn| -> Result<(), knockd::store::StoreError> {
                let now = knockd::matrix::now_ms();
                knockd::store::users::ensure_user(conn, &user, now)?;
                knockd::store::users::add_token(conn, &stored, &user, Some("test"), now)?;
                Ok(())
            })
            .await
            .expect("token stored");
        token
    }
}

/// Binds, retrying briefly while a just-stopped server still holds the port.
fn bind_retrying(addr: SocketAddr) -> TcpListener {
    for _ in 0..100 {
        if let Ok(l) = TcpListener::bind(addr) {
            return l;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"))
}

impl TestKnockd {
    /// An unsigned event as a remote member would build it now: prev_events = knockd's forward
    /// extremities, auth_events chosen by ruma's rules from current state (what make_* gives).
    pub async fn template(
        &self,
        room_id: &str,
        sender: &str,
        event_type: &str,
        state_key: Option<&str>,
        content: serde_json::Value,
    ) -> serde_json::Value {
        use knockd::{
            matrix::{EventTemplate, Placement, auth, event, now_ms},
            store::StoreError,
        };
        let room = self.app.rooms.snapshot(room_id).await.expect("room").expect("room hosted");
        let template = EventTemplate {
            event_type: event_type.to_owned(),
            state_key: state_key.map(str::to_owned),
            sender: ruma::OwnedUserId::try_from(sender).expect("sender"),
            content,
        };
        (|| -> Result<serde_json::Value, StoreError> {
            let wanted = auth::auth_types(&template, &room.ctx.rules.authorization)
                .map_err(StoreError::Rejected)?;
            let auth_events = wanted
                .iter()
                .filter_map(|(t, k)| room.current.state.get(&(t.to_string(), k.clone())))
                .cloned()
                .collect();
            let mut prev_events = room.extremities_by_depth();
            prev_events.truncate(10);
            let placement =
                Placement { room_id: Some(room.ctx.room_id.clone()), prev_events, auth_events };
            let ts = ruma::MilliSecondsSinceUnixEpoch(
                ruma::UInt::try_from(now_ms() as u64).expect("ts"),
            );
            let pdu =
                event::unsigned_pdu(&template, &placement, ts).map_err(StoreError::Rejected)?;
            Ok(serde_json::to_value(pdu).expect("json"))
        })()
        .expect("template")
    }

    /// The stored status of an event (`accepted`, `rejected`, `soft_failed`), if stored.
    pub async fn event_status(&self, event_id: &str) -> Option<String> {
        let id = event_id.to_owned();
        self.app
            .db
            .read(move |conn| knockd::store::events::get(conn, &id))
            .await
            .map_err(|e: knockd::store::StoreError| e)
            .expect("event")
            .map(|r| r.status)
    }
}
