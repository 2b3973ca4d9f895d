//! The outbound federation client: discovery, TLS, X-Matrix signing, timeouts, size caps.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use hickory_resolver::{TokioResolver, proto::rr::RData};
use reqwest::{
    Method, StatusCode,
    dns::{Addrs, Name, Resolve, Resolving},
};
use ruma::{
    OwnedServerName, ServerName,
    api::federation::authentication::{XMatrix, XMatrixSigningInput},
};

use super::{
    address_policy::AddressPolicy,
    discovery::{self, Destination, HostPort},
    keys::KeyRing,
};
use crate::bounded::{BoundedMap, NAME_CACHE_CAPACITY};

/// Largest response we read by default.
pub const DEFAULT_MAX_RESPONSE: usize = 4 * 1024 * 1024;
const DESTINATION_TTL: Duration = Duration::from_secs(3600);
/// How long one name lookup may take.
const DNS_TIMEOUT: Duration = Duration::from_secs(10);

/// What went wrong talking to another server.
#[derive(Debug, thiserror::Error)]
pub enum FedError {
    #[error("{server}: {message}")]
    Network { server: String, message: String },
    #[error("{server} answered {status}: {errcode}: {error}")]
    Status { server: String, status: u16, errcode: String, error: String },
    #[error("{server}: response over {limit} bytes")]
    TooLarge { server: String, limit: usize },
    #[error("{server}: {message}")]
    BadResponse { server: String, message: String },
    #[error("{server}: its address is refused by federation.ip_range_blocklist")]
    Blocked { server: String },
}

impl FedError {
    /// Worth retrying later (network trouble, 429, 5xx).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Network { .. } => true,
            Self::Status { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }

    /// The answer blames the request body itself (400, 413): sending the same body again is
    /// unlikely to help.
    pub fn refuses_body(&self) -> bool {
        matches!(self, Self::Status { status: 400 | 413, .. })
    }
}

/// Maps discovered host names (SRV targets) to addresses; everything else resolves normally.
/// Bounded like the destinations it comes from; an override evicted between discovery and
/// connecting (it takes `NAME_CACHE_CAPACITY` other discoveries in between) only makes that one
/// request go to the host's own address, through the same address policy and TLS checks.
struct Overrides {
    hosts: Mutex<BoundedMap<String, String>>,
}

impl Default for Overrides {
    fn default() -> Self {
        Self { hosts: Mutex::new(BoundedMap::new(NAME_CACHE_CAPACITY)) }
    }
}

/// Names to addresses through hickory (async, with a deadline; never `getaddrinfo` on the
/// blocking pool the database uses), keeping only addresses the policy permits.
struct FederationResolver {
    overrides: Arc<Overrides>,
    dns: Option<TokioResolver>,
    policy: Arc<AddressPolicy>,
}

impl Resolve for FederationResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let target = self
            .overrides
            .hosts
            .lock()
            .ok()
            .and_then(|mut m| m.get(name.as_str()).cloned())
            .unwrap_or_else(|| name.as_str().to_owned());
        let (dns, policy) = (self.dns.clone(), self.policy.clone());
        Box::pin(async move {
            let failed = |why: String| -> Box<dyn std::error::Error + Send + Sync> {
                Box::new(std::io::Error::other(format!("{target}: {why}")))
            };
            let ips: Vec<std::net::IpAddr> = match target.parse() {
                Ok(ip) => vec![ip],
                Err(_) => {
                    let dns = dns.ok_or_else(|| failed("no DNS resolver configured".to_owned()))?;
                    let lookup = tokio::time::timeout(DNS_TIMEOUT, dns.lookup_ip(target.as_str()))
                        .await
                        .map_err(|_| failed("DNS lookup timed out".to_owned()))?
                        .map_err(|e| failed(format!("DNS lookup failed: {e}")))?;
                    lookup.iter().collect()
                }
            };
            let allowed: Vec<SocketAddr> = ips
                .into_iter()
                .filter(|ip| policy.permits(*ip))
                .map(|ip| SocketAddr::new(ip, 0))
                .collect();
            if allowed.is_empty() {
                return Err(failed(
                    "no address that federation.ip_range_blocklist permits".to_owned(),
                ));
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// Client for other homeservers.
pub struct FederationClient {
    http: reqwest::Client,
    /// The most any one request may take, discovery included.
    timeout: Duration,
    keys: Arc<KeyRing>,
    overrides: Arc<Overrides>,
    dns: Option<TokioResolver>,
    policy: Arc<AddressPolicy>,
    /// Discovery results by server name, at most `NAME_CACHE_CAPACITY` of them: every X-Matrix
    /// origin a stranger makes up leads here (through its key fetch).
    destinations: Mutex<BoundedMap<OwnedServerName, (Destination, Instant)>>,
}

impl std::fmt::Debug for FederationClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FederationClient").finish_non_exhaustive()
    }
}

impl FederationClient {
    /// `timeout` bounds every request from start to the last byte of the answer (discovery
    /// included); the outbox lease is sized from it. `policy` says which addresses it may reach.
    pub fn new(
        keys: Arc<KeyRing>,
        verify_certificates: bool,
        timeout: Duration,
        policy: AddressPolicy,
    ) -> Result<Self, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let overrides = Arc::new(Overrides::default());
        let policy = Arc::new(policy);
        let dns = hickory_resolver::Resolver::builder_tokio().and_then(|b| b.build()).ok();
        let resolver = FederationResolver {
            overrides: overrides.clone(),
            dns: dns.clone(),
            policy: policy.clone(),
        };
        let http = reqwest::Client::builder()
            .dns_resolver(Arc::new(resolver))
            .tls_danger_accept_invalid_certs(!verify_certificates)
            .connect_timeout(Duration::from_secs(10).min(timeout))
            .timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("knockd/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("federation client: {e}"))?;
        Ok(Self {
            http,
            timeout,
            keys,
            overrides,
            dns,
            policy,
            destinations: Mutex::new(BoundedMap::new(NAME_CACHE_CAPACITY)),
        })
    }

    /// Where requests to `server` go (cached for an hour).
    pub async fn destination(&self, server: &ServerName) -> Destination {
        let cached = self
            .destinations
            .lock()
            .ok()
            .and_then(|mut cache| cache.get(server).cloned())
            .filter(|(_, at)| at.elapsed() < DESTINATION_TTL);
        if let Some((d, _)) = cached {
            self.keep_override(&d);
            return d;
        }
        let d = self.discover(server.as_str()).await;
        self.keep_override(&d);
        if let Ok(mut cache) = self.destinations.lock() {
            cache.insert(server.to_owned(), (d.clone(), Instant::now()));
        }
        d
    }

    /// (Re)records the destination's connect override, so the request about to use it finds it.
    fn keep_override(&self, d: &Destination) {
        if let Some(target) = &d.connect_host
            && let Ok(mut o) = self.overrides.hosts.lock()
        {
            o.insert(d.tls_host.clone(), target.clone());
        }
    }

    async fn discover(&self, name: &str) -> Destination {
        if let Some(d) = discovery::direct(name) {
            return d;
        }
        let host = HostPort::parse(name).map(|h| h.host).unwrap_or_else(|| name.to_owned());
        if let Some(delegated) = self.well_known(&host).await {
            if let Some(d) = discovery::direct(&delegated) {
                return d;
            }
            return discovery::after_srv(&delegated, self.srv(&delegated).await);
        }
        discovery::after_srv(&host, self.srv(&host).await)
    }

    async fn well_known(&self, host: &str) -> Option<String> {
        let url = format!("https://{host}/.well-known/matrix/server");
        let response = self.http.get(url).timeout(Duration::from_secs(10)).send().await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        let body = read_capped(response, 64 * 1024).await.ok()?;
        discovery::parse_well_known(&body)
    }

    async fn srv(&self, host: &str) -> Option<(String, u16)> {
        let dns = self.dns.as_ref()?;
        for prefix in ["_matrix-fed._tcp", "_matrix._tcp"] {
            if let Ok(lookup) = dns.srv_lookup(format!("{prefix}.{host}.")).await {
                let mut records: Vec<(u16, u16, String, u16)> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::SRV(srv) => Some((
                            srv.priority,
                            u16::MAX - srv.weight,
                            srv.target.to_string(),
                            srv.port,
                        )),
                        _ => None,
                    })
                    .collect();
                records.sort();
                if let Some((_, _, target, port)) = records.into_iter().next() {
                    return Some((target, port));
                }
            }
        }
        None
    }

    /// Sends a request; signs it with X-Matrix unless `signed` is false. Returns the body of a
    /// 2xx answer; other answers become [`FedError::Status`]. Gives up after the client's timeout
    /// with a [`FedError::Network`].
    pub async fn request(
        &self,
        method: Method,
        server: &ServerName,
        path_and_query: &str,
        body: Option<Vec<u8>>,
        signed: bool,
        max_bytes: usize,
    ) -> Result<Bytes, FedError> {
        let attempt = self.request_once(method, server, path_and_query, body, signed, max_bytes);
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(FedError::Network {
                server: server.to_string(),
                message: format!("no answer within {} ms", self.timeout.as_millis()),
            }),
        }
    }

    async fn request_once(
        &self,
        method: Method,
        server: &ServerName,
        path_and_query: &str,
        body: Option<Vec<u8>>,
        signed: bool,
        max_bytes: usize,
    ) -> Result<Bytes, FedError> {
        let dest = self.destination(server).await;
        // An IP literal is connected to as it is, without the resolver's filter.
        if let Ok(ip) = dest.tls_host.parse::<std::net::IpAddr>()
            && !self.policy.permits(ip)
        {
            return Err(FedError::Blocked { server: server.to_string() });
        }
        let url = format!("{}{path_and_query}", dest.base_url());
        let mut builder = self
            .http
            .request(method.clone(), &url)
            .header(reqwest::header::HOST, &dest.host_header);
        if signed {
            let header =
                self.sign(&method, server, path_and_query, body.as_deref().unwrap_or_default())?;
            builder = builder.header(reqwest::header::AUTHORIZATION, header);
        }
        if let Some(body) = body {
            builder = builder.header(reqwest::header::CONTENT_TYPE, "application/json").body(body);
        }
        let response = builder
            .send()
            .await
            .map_err(|e| FedError::Network { server: server.to_string(), message: describe(&e) })?;
        let status = response.status();
        let bytes = read_capped(response, max_bytes).await.map_err(|e| match e {
            ReadError::TooLarge => {
                FedError::TooLarge { server: server.to_string(), limit: max_bytes }
            }
            ReadError::Network(message) => {
                FedError::Network { server: server.to_string(), message }
            }
        })?;
        if status.is_success() {
            return Ok(bytes);
        }
        Err(status_error(server, status, &bytes))
    }

    /// GET and parse JSON.
    pub async fn get_json(
        &self,
        server: &ServerName,
        path: &str,
        signed: bool,
        max_bytes: usize,
    ) -> Result<serde_json::Value, FedError> {
        let bytes = self.request(Method::GET, server, path, None, signed, max_bytes).await?;
        serde_json::from_slice(&bytes).map_err(|e| FedError::BadResponse {
            server: server.to_string(),
            message: format!("invalid JSON: {e}"),
        })
    }

    fn sign(
        &self,
        method: &Method,
        server: &ServerName,
        path_and_query: &str,
        body: &[u8],
    ) -> Result<String, FedError> {
        let request = http::Request::builder()
            .method(method.as_str())
            .uri(path_and_query)
            .body(body.to_vec())
            .map_err(|e| FedError::BadResponse {
                server: server.to_string(),
                message: format!("request: {e}"),
            })?;
        let input = XMatrixSigningInput::new(
            self.keys.server_name().clone(),
            server.to_owned(),
            self.keys.pair(),
        );
        XMatrix::sign_http_request(&request, input).map(|x| x.to_string()).map_err(|e| {
            FedError::BadResponse { server: server.to_string(), message: format!("signing: {e}") }
        })
    }
}

fn describe(e: &reqwest::Error) -> String {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message
}

fn status_error(server: &ServerName, status: StatusCode, body: &[u8]) -> FedError {
    let value: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    FedError::Status {
        server: server.to_string(),
        status: status.as_u16(),
        errcode: value.get("errcode").and_then(|v| v.as_str()).unwrap_or("M_UNKNOWN").to_owned(),
        error: value
            .get("error")
            .and_then(|v| v.as_str())
            .map(|s| s.chars().take(500).collect())
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned()),
    }
}

enum ReadError {
    TooLarge,
    Network(String),
}

async fn read_capped(mut response: reqwest::Response, max: usize) -> Result<Bytes, ReadError> {
    if response.content_length().is_some_and(|l| l as usize > max) {
        return Err(ReadError::TooLarge);
    }
    let mut out = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| ReadError::Network(describe(&e)))? {
        if out.len() + chunk.len() > max {
            return Err(ReadError::TooLarge);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(out))
}

/// Percent-encodes one path segment the way Synapse does (everything but unreserved characters).
pub use knockd_shared::client::encode as encode_segment;
