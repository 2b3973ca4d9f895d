//! TLS material for the federation listener.

use std::path::{Path, PathBuf};

use axum_server::tls_rustls::RustlsConfig;

use crate::{
    config::{Config, TlsMode},
    matrix::keys::write_private_file,
};

pub const SELF_SIGNED_CERT: &str = "federation.crt";
pub const SELF_SIGNED_KEY: &str = "federation.key";

/// Makes sure the certificate exists (generating the self-signed default) and returns its paths.
pub fn ensure_certificate(config: &Config) -> Result<Option<(PathBuf, PathBuf)>, String> {
    match &config.federation.tls {
        TlsMode::Off => Ok(None),
        TlsMode::Files { cert, key } => {
            for p in [cert, key] {
                std::fs::metadata(p).map_err(|e| format!("TLS file {}: {e}", p.display()))?;
            }
            Ok(Some((cert.clone(), key.clone())))
        }
        TlsMode::SelfSigned => {
            let cert = config.data_dir.join(SELF_SIGNED_CERT);
            let key = config.data_dir.join(SELF_SIGNED_KEY);
            if !cert.exists() || !key.exists() {
                generate(config.server_name.host(), &cert, &key)?;
            }
            Ok(Some((cert, key)))
        }
    }
}

fn generate(host: &str, cert_path: &Path, key_path: &Path) -> Result<(), String> {
    let mut names = vec![host.trim_start_matches('[').trim_end_matches(']').to_owned()];
    if names[0] != "localhost" {
        names.push("localhost".to_owned());
    }
    let certified = rcgen::generate_simple_self_signed(names)
        .map_err(|e| format!("self-signed certificate: {e}"))?;
    let _ = std::fs::remove_file(cert_path);
    let _ = std::fs::remove_file(key_path);
    write_private_file(key_path, certified.signing_key.serialize_pem().as_bytes())
        .map_err(|e| format!("writing {}: {e}", key_path.display()))?;
    std::fs::write(cert_path, certified.cert.pem())
        .map_err(|e| format!("writing {}: {e}", cert_path.display()))
}

pub async fn rustls_config(cert: &Path, key: &Path) -> Result<RustlsConfig, String> {
    RustlsConfig::from_pem_file(cert, key)
        .await
        .map_err(|e| format!("TLS certificate {} / key {}: {e}", cert.display(), key.display()))
}

/// On every SIGHUP, reads the certificate and key again: new connections get them, open ones keep
/// theirs. A file that does not load leaves the certificate in use as it was (and says why).
pub async fn reload_on_sighup(config: RustlsConfig, cert: PathBuf, key: PathBuf) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("SIGHUP cannot be caught: the certificate is not reloaded on SIGHUP");
            return;
        };
        while hangups.recv().await.is_some() {
            match config.reload_from_pem_file(&cert, &key).await {
                Ok(()) => tracing::info!(cert = %cert.display(), "TLS certificate reloaded"),
                Err(e) => tracing::error!(
                    cert = %cert.display(),
                    key = %key.display(),
                    error = %e,
                    "TLS certificate not reloaded; the previous one stays in use"
                ),
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (config, cert, key);
}
