//! Start-up and the two listeners.

use std::{future::Future, net::TcpListener, path::Path, time::Duration};

use crate::{
    admin,
    config::Config,
    federation,
    matrix::{KeyRing, keys::write_private_file, now_ms},
    service::AppState,
    store::{Backend, Db, StoreError, users},
    tls,
};

/// Name of the signing key file in the data dir.
pub const SIGNING_KEY_FILE: &str = "signing.key";

/// Name of the file in the data dir that holds this knockd's random instance id.
pub const INSTANCE_ID_FILE: &str = "instance.id";

/// A start-up failure, said in one line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(pub String);

/// The bound listeners. Bind them first so "port in use" fails before anything is created.
pub struct Listeners {
    pub federation: TcpListener,
    pub admin: TcpListener,
    /// When `metrics.listen` is set.
    pub metrics: Option<TcpListener>,
}

impl Listeners {
    pub fn bind(config: &Config) -> Result<Self, StartError> {
        let bind = |what: &str, addr| {
            let l = TcpListener::bind(addr)
                .map_err(|e| StartError(format!("cannot listen on {addr} ({what}): {e}")))?;
            l.set_nonblocking(true).map_err(|e| StartError(format!("{what} listener: {e}")))?;
            Ok::<_, StartError>(l)
        };
        Ok(Self {
            federation: bind("federation", config.federation.listen)?,
            admin: bind("admin API", config.admin.listen)?,
            metrics: config.metrics.listen.map(|addr| bind("metrics", addr)).transpose()?,
        })
    }
}

/// Creates the data dir, loads or makes the key, opens and migrates the database and makes sure
/// the local admin user and its token file exist. If it fails, what it created is removed.
pub async fn prepare(config: &Config) -> Result<AppState, StartError> {
    let dir = &config.data_dir;
    let created_dir = !dir.exists();
    let result = prepare_inner(config).await;
    if result.is_err() && created_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    result
}

async fn prepare_inner(config: &Config) -> Result<AppState, StartError> {
    // PostgreSQL first: an unreachable database should fail before anything is written.
    let mut db = None;
    if config.database_url.backend() == Backend::Postgres {
        db = Some(Db::connect(&config.database_url).await.map_err(|e| StartError(e.to_string()))?);
    }
    let dir = &config.data_dir;
    std::fs::create_dir_all(dir)
        .map_err(|e| StartError(format!("cannot create data dir {}: {e}", dir.display())))?;
    check_writable(dir)?;
    let keys = KeyRing::load_or_generate(config.server_name.clone(), &dir.join(SIGNING_KEY_FILE))
        .map_err(|e| StartError(e.to_string()))?;
    let db = match db {
        Some(db) => db,
        None => Db::connect(&config.database_url).await.map_err(|e| StartError(e.to_string()))?,
    };
    let instance_id = load_or_make_instance_id(dir)?;
    ensure_admin(&db, config).await?;
    tls::ensure_certificate(config).map_err(StartError)?;
    AppState::new(config.clone(), db, keys, instance_id).map_err(StartError)
}

fn check_writable(dir: &Path) -> Result<(), StartError> {
    let probe = dir.join(".knockd-write-test");
    std::fs::write(&probe, b"")
        .map_err(|e| StartError(format!("data dir {} is not writable: {e}", dir.display())))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// The local admin user `@admin:<server_name>` and the token in `<data_dir>/admin.token`.
async fn ensure_admin(db: &Db, config: &Config) -> Result<(), StartError> {
    let user = config.admin_user();
    let path = config.data_dir.join(knockd_shared::ADMIN_TOKEN_FILE);
    let token = match std::fs::read_to_string(&path) {
        Ok(t) => t.trim().to_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let token = new_token().map_err(StartError)?;
            write_private_file(&path, format!("{token}\n").as_bytes())
                .map_err(|e| StartError(format!("cannot write {}: {e}", path.display())))?;
            token
        }
        Err(e) => return Err(StartError(format!("cannot read {}: {e}", path.display()))),
    };
    if token.is_empty() {
        return Err(StartError(format!(
            "{} is empty; delete it to get a new token",
            path.display()
        )));
    }
    let probe = token.clone();
    let live = db
        .read(move |conn| users::token_live(conn, &probe))
        .await
        .map_err(|e| StartError(format!("reading the admin tokens: {e}")))?;
    let token = match live {
        Some(true) => return ensure_user(db, user).await,
        None => token,
        // Revoked (`knockd admin token revoke`): it stays revoked, and admin.token gets a new
        // one, so that the file always holds a working token of the local admin.
        Some(false) => {
            let token = new_token().map_err(StartError)?;
            let fresh = path.with_extension("token.new");
            let _ = std::fs::remove_file(&fresh);
            write_private_file(&fresh, format!("{token}\n").as_bytes())
                .and_then(|()| std::fs::rename(&fresh, &path))
                .map_err(|e| StartError(format!("cannot write {}: {e}", path.display())))?;
            tracing::info!(path = %path.display(), "the admin token was revoked; wrote a new one");
            token
        }
    };
    db.write(move |conn| {
        let now = now_ms();
        users::ensure_user(conn, &user, now)?;
        users::add_token(conn, &token, &user, Some("admin.token"), now)?;
        Ok::<_, StoreError>(())
    })
    .await
    .map_err(|e| StartError(format!("storing the admin token: {e}")))
}

async fn ensure_user(db: &Db, user: String) -> Result<(), StartError> {
    db.write(move |conn| users::ensure_user(conn, &user, now_ms()))
        .await
        .map_err(|e: StoreError| StartError(format!("storing the admin user: {e}")))
}

/// This knockd's instance id: random, made on first start and kept in `<data_dir>/instance.id`.
/// Outbound leases are held under it, so a restarted instance takes its destinations back at once
/// while other instances sharing the database (each with its own data dir) wait for the lease to
/// expire. Copying a data dir to start a second instance must leave this file behind.
fn load_or_make_instance_id(dir: &Path) -> Result<String, StartError> {
    let path = dir.join(INSTANCE_ID_FILE);
    let id = match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().to_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 16];
            getrandom::fill(&mut bytes).map_err(|e| StartError(format!("random id: {e}")))?;
            let id = hex::encode(bytes);
            write_private_file(&path, format!("{id}\n").as_bytes())
                .map_err(|e| StartError(format!("cannot write {}: {e}", path.display())))?;
            id
        }
        Err(e) => return Err(StartError(format!("cannot read {}: {e}", path.display()))),
    };
    if id.is_empty() || id.len() > 128 || !id.chars().all(|c| c.is_ascii_graphic()) {
        return Err(StartError(format!(
            "{} does not hold an instance id; delete it to get a new one",
            path.display()
        )));
    }
    Ok(id)
}

/// A fresh random bearer token.
pub fn new_token() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("random token: {e}"))?;
    Ok(format!("kd_{}", hex::encode(bytes)))
}

/// Serves both listeners until `shutdown` resolves, then drains for up to 10 seconds.
pub async fn serve(
    app: AppState,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = app.config.clone();
    let fed_handle = axum_server::Handle::new();
    let admin_handle = axum_server::Handle::new();
    let metrics_handle = axum_server::Handle::new();
    let fed_router = federation::router(app.clone());
    let admin_router = admin::router(app.clone());
    let metrics_router = crate::metrics_endpoint::router(app.clone());

    let stoppers = (fed_handle.clone(), admin_handle.clone(), metrics_handle.clone());
    let federation = async move {
        let limits = config.federation.limits;
        let header_timeout = Duration::from_millis(limits.header_timeout_ms);
        let connections = federation::connections::ConnectionLimits::new(
            limits.max_connections,
            limits.max_connections_per_address,
        );
        let mut server = axum_server::from_tcp(listeners.federation)
            .map_err(|e| StartError(format!("federation listener: {e}")))?
            // A connection that never sends a request, or sends its headers slowly, is closed.
            .first_request_timeout(header_timeout);
        server.http_builder().http1().header_read_timeout(header_timeout);
        let service = fed_router.into_make_service();
        match tls::ensure_certificate(&config).map_err(StartError)? {
            Some((cert, key)) => {
                let tls_config = tls::rustls_config(&cert, &key).await.map_err(StartError)?;
                tokio::spawn(tls::reload_on_sighup(tls_config.clone(), cert, key));
                let tls = axum_server::tls_rustls::RustlsAcceptor::new(tls_config)
                    .handshake_timeout(header_timeout);
                let acceptor = federation::connections::Limited::new(tls, connections);
                server.acceptor(acceptor).handle(fed_handle).serve(service).await
            }
            None => {
                let plain = axum_server::accept::DefaultAcceptor::new();
                let acceptor = federation::connections::Limited::new(plain, connections);
                server.acceptor(acceptor).handle(fed_handle).serve(service).await
            }
        }
        .map_err(|e| StartError(format!("federation listener: {e}")))
    };
    let admin = async move {
        axum_server::from_tcp(listeners.admin)
            .map_err(|e| StartError(format!("admin listener: {e}")))?
            .handle(admin_handle)
            .serve(admin_router.into_make_service())
            .await
            .map_err(|e| StartError(format!("admin listener: {e}")))
    };
    let metrics = async move {
        let Some(listener) = listeners.metrics else { return Ok(()) };
        axum_server::from_tcp(listener)
            .map_err(|e| StartError(format!("metrics listener: {e}")))?
            .handle(metrics_handle)
            .serve(metrics_router.into_make_service())
            .await
            .map_err(|e| StartError(format!("metrics listener: {e}")))
    };
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down");
        stoppers.0.graceful_shutdown(Some(Duration::from_secs(10)));
        stoppers.1.graceful_shutdown(Some(Duration::from_secs(10)));
        stoppers.2.graceful_shutdown(Some(Duration::from_secs(10)));
    });
    let sender = crate::sender::run(app.clone(), app.instance_id.to_string());
    let housekeeping = housekeeping(app.clone());
    // The sender and housekeeping run as long as the listeners do, and stop with them.
    tokio::select! {
        result = async { tokio::try_join!(federation, admin, metrics) } => { result?; }
        () = sender => {}
        () = housekeeping => {}
    }
    Ok(())
}

/// How long an inbound transaction's answer is kept for the origin's retries.
pub const INBOUND_TXN_TTL_MS: i64 = 24 * 3_600_000;

/// Periodic local chores, once at start and every minute: expire stale knocks (knockers' servers
/// rarely rescind), forget inbound transaction answers older than a day, delete parked outbox
/// items older than `outbox.purge_parked_after_ms`.
async fn housekeeping(app: AppState) {
    loop {
        app.metrics.upkeep();
        let cutoff = now_ms() - INBOUND_TXN_TTL_MS;
        match app.db.write(move |conn| crate::store::txns::forget_before(conn, cutoff)).await {
            Ok(n) if n > 0 => tracing::info!(forgotten = n, "forgot old inbound transactions"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "forgetting old inbound transactions failed"),
        }
        if app.config.outbox.purge_parked_after_ms > 0 {
            let cutoff = now_ms() - app.config.outbox.purge_parked_after_ms;
            let purged = app
                .db
                .write(move |conn| crate::store::outbox::purge_parked_before(conn, cutoff))
                .await;
            match purged {
                Ok(n) if n > 0 => tracing::info!(purged = n, "purged old parked outbox items"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "purging parked outbox items failed"),
            }
        }
        if app.config.knock_expire_after_ms > 0 {
            let cutoff = now_ms() - app.config.knock_expire_after_ms;
            let expired = app
                .db
                .write(move |conn| crate::store::knocks::expire_before(conn, cutoff, now_ms()))
                .await;
            match expired {
                Ok(n) if n > 0 => tracing::info!(expired = n, "expired stale knocks"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "expiring knocks failed"),
            }
        }
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_id_is_random_private_and_kept() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let id = load_or_make_instance_id(a.path()).unwrap();
        assert_eq!(id.len(), 32);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(a.path().join(INSTANCE_ID_FILE)).unwrap().permissions();
            assert_eq!(mode.mode() & 0o777, 0o600);
        }
        assert_eq!(load_or_make_instance_id(a.path()).unwrap(), id, "kept across starts");
        assert_ne!(load_or_make_instance_id(b.path()).unwrap(), id, "another data dir, another id");
        std::fs::write(a.path().join(INSTANCE_ID_FILE), "\n").unwrap();
        let err = load_or_make_instance_id(a.path()).unwrap_err().to_string();
        assert!(err.contains(INSTANCE_ID_FILE), "{err}");
    }
}
