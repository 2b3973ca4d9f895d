//! Configuration: defaults → TOML file → `KNOCKD_*` environment → command-line flags.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use ruma::OwnedServerName;
use serde::Deserialize;

use crate::{
    matrix::address_policy::{AddressPolicy, DEFAULT_BLOCKLIST},
    service::ratelimit::Rate,
    store::DatabaseUrl,
};

/// The config file format version this build reads.
pub const CONFIG_VERSION: u32 = 1;

/// Log filter when none is configured: ruma's per-event auth logs stay quiet.
pub const DEFAULT_LOG: &str = "info,ruma_state_res=warn";

/// The commented example printed by `knockd config example`. A test keeps it valid.
pub const EXAMPLE: &str = r#"# knockd configuration. Every key is optional except `version`.
# Precedence: built-in defaults < this file < KNOCKD_* environment variables < command-line flags.
# Every setting can also come from KNOCKD_<SECTION>__<KEY> (KNOCKD_OUTBOX__POLL_MS); the flat names
# given below win over those. Settings in milliseconds (*_ms) also take durations: "30s", "1h".
version = 1

# The Matrix server name of this knockd (users are @name:<server_name>). Env: KNOCKD_SERVER_NAME
server_name = "localhost:8448"

# Where knockd keeps its signing key, admin token, self-signed certificate and SQLite database.
# Env: KNOCKD_DATA_DIR
data_dir = "./knockd-data"

# postgres://user:password@host/db for production, or sqlite://PATH.
# Default: sqlite://<data_dir>/knockd.db. Env: KNOCKD_DATABASE_URL
# database_url = "postgres://knockd@127.0.0.1/knockd"

# Log filter (tracing EnvFilter syntax). Env: KNOCKD_LOG (RUST_LOG also works)
log = "info,ruma_state_res=warn"
# Log lines as text (coloured only on a terminal, never with NO_COLOR set) or "json" (one object
# per line, for log collectors). Env: KNOCKD_LOG_FORMAT
log_format = "text"

[federation]
# The public listener for other homeservers. Env: KNOCKD_FEDERATION_LISTEN
listen = "127.0.0.1:8448"
# "self-signed" (generated into data_dir; only for loopback and tests: real homeservers verify
# certificates), "files" (set cert and key below), or "off" (plain HTTP behind a reverse proxy
# that must not normalise request URIs). Env: KNOCKD_FEDERATION_TLS
tls = "self-signed"
# cert = "/etc/knockd/fullchain.pem"
# key = "/etc/knockd/privkey.pem"
# Verify other servers' certificates. Env: KNOCKD_FEDERATION_VERIFY_CERTIFICATES
verify_certificates = true
# Notary servers asked for a server's keys when the server itself cannot be reached.
# Env: KNOCKD_FEDERATION_TRUSTED_KEY_SERVERS (comma-separated)
trusted_key_servers = []
# The most one outbound request may take, discovery included (milliseconds).
# Env: KNOCKD_FEDERATION_REQUEST_TIMEOUT_MS
request_timeout_ms = 60000
# The listener's limits. A connection must send its request headers (and finish its TLS
# handshake) within header_timeout_ms, and its body within body_timeout_ms; at most
# max_connections are open at once, at most max_connections_per_address from one address.
# Env: KNOCKD_FEDERATION_HEADER_TIMEOUT_MS, KNOCKD_FEDERATION_BODY_TIMEOUT_MS,
# KNOCKD_FEDERATION_MAX_CONNECTIONS, KNOCKD_FEDERATION_MAX_CONNECTIONS_PER_ADDRESS
header_timeout_ms = 10000
body_timeout_ms = 30000
max_connections = 1024
max_connections_per_address = 64
# Addresses outbound federation (requests, key fetches, discovery) never connects to. Default:
# loopback, private, link-local, documentation and other special ranges (as Synapse's
# federation_ip_range_blocklist). Env: KNOCKD_FEDERATION_IP_RANGE_BLOCKLIST (comma-separated)
# ip_range_blocklist = ["127.0.0.0/8", "10.0.0.0/8", "..."]
# Exceptions to the block list, e.g. ["127.0.0.1"] for servers on this machine (tests, a demo).
# Env: KNOCKD_FEDERATION_IP_RANGE_ALLOWLIST (comma-separated)
ip_range_allowlist = []

[outbox]
# Back-off between failed deliveries to one server, doubling from min to max (milliseconds);
# each wait gets up to a quarter more at random, so servers that failed together retry apart.
min_backoff_ms = 2000
max_backoff_ms = 3600000
# Items failing for longer than this are parked, with the reason shown in the admin API.
park_after_ms = 86400000
# A transaction whose body the server refuses (400, 413) this many times is parked; everything
# else (401, 404, 5xx, timeouts…) is retried until park_after_ms.
park_after_refusals = 10
# How long one knockd holds a server's outbound lease without renewing it. At least twice
# federation.request_timeout_ms (the default), so a request always ends before its lease does.
# lease_ms = 120000
# How often the sender looks for due items when nothing woke it. Env: KNOCKD_OUTBOX_POLL_MS
poll_ms = 1000
# Parked items older than this are deleted (checked every minute); 0 keeps them forever.
# Env: KNOCKD_OUTBOX_PURGE_PARKED_AFTER_MS
purge_parked_after_ms = 604800000

[rooms]
# Concurrent events fork a room (many knocks from one template); past this many forward
# extremities knockd sends a dummy event (org.matrix.dummy_event, as Synapse does) joining up to
# 20 of them. 0 never sends one. Env: KNOCKD_ROOMS_DUMMY_EVENT_THRESHOLD
dummy_event_threshold = 20

[knock]
# Pending knocks older than this expire locally (no event is sent); 0 keeps them forever.
expire_after_ms = 2592000000
# Rate limits on membership requests (make_knock, send_knock, knock events arriving over /send,
# send_join, send_leave; one knock is a make_knock plus a send_knock): tokens per second
# sustained, and the burst a
# bucket holds. Over the limit, the knocking server is answered 429 M_LIMIT_EXCEEDED with
# retry_after_ms. Kept in memory, per knockd process. A rate of 0 turns a limit off.
# Env: KNOCKD_KNOCK_RATE_PER_ORIGIN, KNOCKD_KNOCK_BURST_PER_ORIGIN, KNOCKD_KNOCK_RATE_PER_ROOM,
# KNOCKD_KNOCK_BURST_PER_ROOM
rate_per_origin = 10.0
burst_per_origin = 50
rate_per_room = 50.0
burst_per_room = 200
# The most pending knocks one room holds; send_knock beyond it is answered 429 M_LIMIT_EXCEEDED
# until a moderator decides some. 0 = no cap. Env: KNOCKD_KNOCK_MAX_PENDING_PER_ROOM
max_pending_per_room = 10000
# State events (full PDUs) returned to knockers in `knock_room_state`.
room_state = ["m.room.create", "m.room.join_rules", "m.room.name", "m.room.avatar", "m.room.topic", "m.room.canonical_alias", "m.room.encryption"]

[admin]
# The admin API listener (bearer tokens). Env: KNOCKD_ADMIN_LISTEN
listen = "127.0.0.1:8449"
# The admin API refuses non-loopback addresses unless this is true.
allow_remote = false

[metrics]
# Prometheus metrics (`GET /metrics`, text format) on a listener of their own. Off unless set,
# e.g. "127.0.0.1:9448". Env: KNOCKD_METRICS_LISTEN
# listen = "127.0.0.1:9448"
# The metrics listener refuses non-loopback addresses unless this is true.
allow_remote = false
"#;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    version: Option<u32>,
    server_name: Option<String>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    log: Option<String>,
    log_format: Option<String>,
    #[serde(default)]
    federation: FileFederation,
    #[serde(default)]
    admin: FileAdmin,
    #[serde(default)]
    metrics: FileAdmin,
    #[serde(default)]
    knock: FileKnock,
    #[serde(default)]
    outbox: FileOutbox,
    #[serde(default)]
    rooms: FileRooms,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRooms {
    dummy_event_threshold: Option<i64>,
}

/// Past this many forward extremities a dummy event joins some (0: never).
pub const DEFAULT_DUMMY_EVENT_THRESHOLD: usize = 20;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileOutbox {
    #[serde(default, deserialize_with = "millis")]
    min_backoff_ms: Option<i64>,
    #[serde(default, deserialize_with = "millis")]
    max_backoff_ms: Option<i64>,
    #[serde(default, deserialize_with = "millis")]
    park_after_ms: Option<i64>,
    park_after_refusals: Option<i64>,
    #[serde(default, deserialize_with = "millis")]
    lease_ms: Option<i64>,
    #[serde(default, deserialize_with = "millis")]
    poll_ms: Option<i64>,
    #[serde(default, deserialize_with = "millis")]
    purge_parked_after_ms: Option<i64>,
}

/// The outbound queue's timing.
#[derive(Clone, Debug)]
pub struct OutboxConfig {
    pub min_backoff_ms: i64,
    pub max_backoff_ms: i64,
    pub park_after_ms: i64,
    /// Refusals of one transaction's body (400, 413) after which its items are parked.
    pub park_after_refusals: i64,
    /// How long a destination lease lasts without renewal (another process may take it after).
    /// At least twice the federation request timeout.
    pub lease_ms: i64,
    /// How often the sender looks for due work when nothing woke it.
    pub poll_ms: u64,
    /// Parked items older than this are deleted; 0 = kept forever.
    pub purge_parked_after_ms: i64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileKnock {
    room_state: Option<Vec<String>>,
    #[serde(default, deserialize_with = "millis")]
    expire_after_ms: Option<i64>,
    rate_per_origin: Option<f64>,
    burst_per_origin: Option<i64>,
    rate_per_room: Option<f64>,
    burst_per_room: Option<i64>,
    max_pending_per_room: Option<i64>,
}

/// Limits on knocks (see `service::ratelimit`).
#[derive(Clone, Debug, PartialEq)]
pub struct KnockLimitsConfig {
    pub per_origin: Rate,
    pub per_room: Rate,
    /// The most pending knocks in one room; 0 = no cap.
    pub max_pending_per_room: i64,
}

/// Default knock limits: far above what a real room sees (a knock is two requests), low enough
/// that one server cannot make knockd do unbounded work.
pub const DEFAULT_RATE_PER_ORIGIN: Rate = Rate { per_second: 10.0, burst: 50 };
pub const DEFAULT_RATE_PER_ROOM: Rate = Rate { per_second: 50.0, burst: 200 };
pub const DEFAULT_MAX_PENDING_PER_ROOM: i64 = 10_000;
/// The largest rate, burst or cap accepted (anything above is a typo, or "off" said wrongly).
const MAX_LIMIT: f64 = 1_000_000.0;

/// The state types a knocker is shown by default (spec 1.16: full PDUs, create always).
pub const DEFAULT_KNOCK_ROOM_STATE: [&str; 7] = [
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.topic",
    "m.room.canonical_alias",
    "m.room.encryption",
];

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFederation {
    listen: Option<String>,
    tls: Option<String>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    verify_certificates: Option<bool>,
    trusted_key_servers: Option<Vec<String>>,
    ip_range_blocklist: Option<Vec<String>>,
    ip_range_allowlist: Option<Vec<String>>,
    #[serde(default, deserialize_with = "millis")]
    request_timeout_ms: Option<i64>,
    #[serde(default, deserialize_with = "millis")]
    header_timeout_ms: Option<i64>,
    #[serde(default, deserialize_with = "millis")]
    body_timeout_ms: Option<i64>,
    max_connections: Option<i64>,
    max_connections_per_address: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAdmin {
    listen: Option<String>,
    allow_remote: Option<bool>,
}

/// Values given on the command line; they win over everything else.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub server_name: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub federation_listen: Option<String>,
    pub admin_listen: Option<String>,
}

/// How the federation listener speaks TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// A certificate generated into the data dir on first start.
    SelfSigned,
    /// Operator-provided PEM files.
    Files { cert: PathBuf, key: PathBuf },
    /// Plain HTTP, behind a TLS-terminating proxy.
    Off,
}

#[derive(Clone, Debug)]
pub struct FederationConfig {
    pub listen: SocketAddr,
    pub tls: TlsMode,
    pub verify_certificates: bool,
    pub trusted_key_servers: Vec<OwnedServerName>,
    /// Where outbound federation may connect.
    pub address_policy: AddressPolicy,
    /// The most one outbound request may take, discovery included.
    pub request_timeout_ms: u64,
    /// The listener's limits.
    pub limits: ListenerLimits,
}

/// What the public listener allows one connection and all of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenerLimits {
    /// To finish the TLS handshake, and to send a request's headers.
    pub header_timeout_ms: u64,
    /// To send a request's body.
    pub body_timeout_ms: u64,
    pub max_connections: usize,
    pub max_connections_per_address: usize,
}

#[derive(Clone, Debug)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    pub allow_remote: bool,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable; coloured only on a terminal without `NO_COLOR`.
    Text,
    /// One JSON object per line.
    Json,
}

/// The metrics listener: off when `listen` is none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsConfig {
    pub listen: Option<SocketAddr>,
    pub allow_remote: bool,
}

/// The resolved configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub server_name: OwnedServerName,
    pub data_dir: PathBuf,
    pub database_url: DatabaseUrl,
    pub log: String,
    pub log_format: LogFormat,
    pub federation: FederationConfig,
    pub admin: AdminConfig,
    pub metrics: MetricsConfig,
    /// State types returned in `knock_room_state` (create is always included).
    pub knock_room_state: Vec<String>,
    /// Pending knocks older than this expire; 0 = never.
    pub knock_expire_after_ms: i64,
    pub knock_limits: KnockLimitsConfig,
    pub outbox: OutboxConfig,
    /// Past this many forward extremities a dummy event joins some (0: never).
    pub dummy_event_threshold: usize,
}

/// A configuration problem, said in one line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Loads from an optional file, an environment lookup and flags.
    pub fn load(
        file: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
        flags: &Overrides,
    ) -> Result<Self, ConfigError> {
        let mut table = match file {
            Some(path) => read_file(path)?,
            None => toml::Table::from_iter([("version".to_owned(), toml::Value::from(1))]),
        };
        overlay_section_env(&mut table, env)?;
        let parsed = FileConfig::deserialize(toml::Value::Table(table)).map_err(|e| {
            let origin =
                file.map_or_else(|| "the environment".to_owned(), |p| p.display().to_string());
            ConfigError(format!("{origin}: {}", e.message()))
        })?;
        let origin = file.map_or_else(|| "defaults".to_owned(), |p| p.display().to_string());
        match parsed.version {
            Some(CONFIG_VERSION) => {}
            Some(v) => {
                return Err(ConfigError(format!(
                    "{origin}: config version {v} is not supported (this knockd reads version {CONFIG_VERSION})"
                )));
            }
            None => {
                return Err(ConfigError(format!("{origin}: missing `version = {CONFIG_VERSION}`")));
            }
        }
        let pick = |flag: &Option<String>, var: &str, file: Option<String>| -> Option<String> {
            flag.clone().or_else(|| env(var).filter(|v| !v.is_empty())).or(file)
        };

        let server_name = pick(&flags.server_name, "KNOCKD_SERVER_NAME", parsed.server_name)
            .unwrap_or_else(|| "localhost:8448".to_owned());
        let server_name = OwnedServerName::try_from(server_name.as_str()).map_err(|e| {
            ConfigError(format!("server_name {server_name:?} is not a valid server name: {e}"))
        })?;

        let data_dir = flags
            .data_dir
            .clone()
            .or_else(|| env("KNOCKD_DATA_DIR").filter(|v| !v.is_empty()).map(PathBuf::from))
            .or(parsed.data_dir)
            .unwrap_or_else(|| PathBuf::from("./knockd-data"));

        let database_url =
            match pick(&flags.database_url, "KNOCKD_DATABASE_URL", parsed.database_url) {
                Some(url) => DatabaseUrl::parse(&url)
                    .map_err(|e| ConfigError(format!("database_url: {e}")))?,
                None => DatabaseUrl::sqlite(&data_dir.join("knockd.db")),
            };

        let log = env("KNOCKD_LOG").or(parsed.log).unwrap_or_else(|| DEFAULT_LOG.to_owned());
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log) {
            return Err(ConfigError(format!("log = {log:?} is not a log filter: {e}")));
        }
        let log_format = match pick(&None, "KNOCKD_LOG_FORMAT", parsed.log_format).as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError(format!(
                    "log_format = {other:?}: must be \"text\" or \"json\""
                )));
            }
        };

        let fed_listen =
            pick(&flags.federation_listen, "KNOCKD_FEDERATION_LISTEN", parsed.federation.listen)
                .unwrap_or_else(|| "127.0.0.1:8448".to_owned());
        let fed_listen = parse_addr("federation.listen", &fed_listen)?;
        let tls_name = env("KNOCKD_FEDERATION_TLS")
            .or(parsed.federation.tls)
            .unwrap_or_else(|| "self-signed".to_owned());
        let tls = match tls_name.as_str() {
            "self-signed" => TlsMode::SelfSigned,
            "off" => TlsMode::Off,
            "files" => match (parsed.federation.cert, parsed.federation.key) {
                (Some(cert), Some(key)) => TlsMode::Files { cert, key },
                _ => {
                    return Err(ConfigError(
                        "federation.tls = \"files\" needs both federation.cert and federation.key"
                            .to_owned(),
                    ));
                }
            },
            other => {
                return Err(ConfigError(format!(
                    "federation.tls = {other:?}: expected \"self-signed\", \"files\" or \"off\""
                )));
            }
        };
        let verify_certificates = match env("KNOCKD_FEDERATION_VERIFY_CERTIFICATES") {
            Some(v) => parse_bool("KNOCKD_FEDERATION_VERIFY_CERTIFICATES", &v)?,
            None => parsed.federation.verify_certificates.unwrap_or(true),
        };

        let list = |var: &str, file: Option<Vec<String>>| -> Option<Vec<String>> {
            match env(var) {
                Some(list) => Some(
                    list.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect(),
                ),
                None => file,
            }
        };
        let trusted_names =
            list("KNOCKD_FEDERATION_TRUSTED_KEY_SERVERS", parsed.federation.trusted_key_servers)
                .unwrap_or_default();
        let blocklist =
            list("KNOCKD_FEDERATION_IP_RANGE_BLOCKLIST", parsed.federation.ip_range_blocklist)
                .unwrap_or_else(|| DEFAULT_BLOCKLIST.map(str::to_owned).to_vec());
        let allowlist =
            list("KNOCKD_FEDERATION_IP_RANGE_ALLOWLIST", parsed.federation.ip_range_allowlist)
                .unwrap_or_default();
        let address_policy = AddressPolicy::parse(&blocklist, &allowlist)
            .map_err(|e| ConfigError(format!("federation.ip_range_blocklist/allowlist: {e}")))?;
        let trusted_key_servers = trusted_names
            .into_iter()
            .map(|s| {
                OwnedServerName::try_from(s.as_str())
                    .map_err(|e| ConfigError(format!("federation.trusted_key_servers: {s:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut knock_room_state = parsed
            .knock
            .room_state
            .unwrap_or_else(|| DEFAULT_KNOCK_ROOM_STATE.iter().map(|s| s.to_string()).collect());
        if !knock_room_state.iter().any(|t| t == "m.room.create") {
            knock_room_state.insert(0, "m.room.create".to_owned());
        }

        let num = |var: &str, file: Option<i64>, default: i64| -> Result<i64, ConfigError> {
            match env(var) {
                Some(v) if var.ends_with("_MS") => parse_millis(&v).ok_or_else(|| {
                    ConfigError(format!(
                        "{var} = {v:?}: expected milliseconds, or a duration like 30s, 5m, 1h, 7d"
                    ))
                }),
                Some(v) => {
                    v.parse().map_err(|_| ConfigError(format!("{var} = {v:?}: expected a number")))
                }
                None => Ok(file.unwrap_or(default)),
            }
        };
        let request_timeout_ms = num(
            "KNOCKD_FEDERATION_REQUEST_TIMEOUT_MS",
            parsed.federation.request_timeout_ms,
            60_000,
        )?;
        if request_timeout_ms < 100 {
            return Err(ConfigError(format!(
                "federation.request_timeout_ms = {request_timeout_ms}: must be at least 100"
            )));
        }
        let positive = |key: &str, var: &str, file: Option<i64>, default: i64| {
            let v = num(var, file, default)?;
            if v < 1 {
                return Err(ConfigError(format!("federation.{key} = {v}: must be at least 1")));
            }
            Ok(v as u64)
        };
        let fed = (
            parsed.federation.header_timeout_ms,
            parsed.federation.body_timeout_ms,
            parsed.federation.max_connections,
            parsed.federation.max_connections_per_address,
        );
        let limits = ListenerLimits {
            header_timeout_ms: positive(
                "header_timeout_ms",
                "KNOCKD_FEDERATION_HEADER_TIMEOUT_MS",
                fed.0,
                10_000,
            )?,
            body_timeout_ms: positive(
                "body_timeout_ms",
                "KNOCKD_FEDERATION_BODY_TIMEOUT_MS",
                fed.1,
                30_000,
            )?,
            max_connections: positive(
                "max_connections",
                "KNOCKD_FEDERATION_MAX_CONNECTIONS",
                fed.2,
                1024,
            )? as usize,
            max_connections_per_address: positive(
                "max_connections_per_address",
                "KNOCKD_FEDERATION_MAX_CONNECTIONS_PER_ADDRESS",
                fed.3,
                64,
            )? as usize,
        };
        // A sender renews its lease right before each request; the request must end (answer or
        // timeout) well before the lease does, or another sender could start on the same server.
        let min_lease_ms = request_timeout_ms.saturating_mul(2);
        let lease_ms = num("KNOCKD_OUTBOX_LEASE_MS", parsed.outbox.lease_ms, min_lease_ms)?;
        if lease_ms < min_lease_ms {
            return Err(ConfigError(format!(
                "outbox.lease_ms = {lease_ms} is shorter than twice federation.request_timeout_ms \
                 ({request_timeout_ms}): a lease must outlast the request made under it"
            )));
        }
        let outbox = OutboxConfig {
            min_backoff_ms: num(
                "KNOCKD_OUTBOX_MIN_BACKOFF_MS",
                parsed.outbox.min_backoff_ms,
                2_000,
            )?
            .max(1),
            max_backoff_ms: num(
                "KNOCKD_OUTBOX_MAX_BACKOFF_MS",
                parsed.outbox.max_backoff_ms,
                3_600_000,
            )?
            .max(1),
            park_after_ms: num(
                "KNOCKD_OUTBOX_PARK_AFTER_MS",
                parsed.outbox.park_after_ms,
                86_400_000,
            )?,
            park_after_refusals: num(
                "KNOCKD_OUTBOX_PARK_AFTER_REFUSALS",
                parsed.outbox.park_after_refusals,
                10,
            )?
            .max(1),
            lease_ms,
            poll_ms: num("KNOCKD_OUTBOX_POLL_MS", parsed.outbox.poll_ms, 1_000)?.max(10) as u64,
            purge_parked_after_ms: num(
                "KNOCKD_OUTBOX_PURGE_PARKED_AFTER_MS",
                parsed.outbox.purge_parked_after_ms,
                7 * 24 * 3_600_000,
            )?,
        };
        if outbox.purge_parked_after_ms < 0 {
            return Err(ConfigError(format!(
                "outbox.purge_parked_after_ms = {}: must be 0 (keep parked items) or more",
                outbox.purge_parked_after_ms
            )));
        }
        let knock_expire_after_ms =
            num("KNOCKD_KNOCK_EXPIRE_AFTER_MS", parsed.knock.expire_after_ms, 30 * 24 * 3_600_000)?;
        let rate =
            |key: &str, file: Option<f64>, burst_key: &str, burst: Option<i64>, default: Rate| {
                let (var, burst_var) = (knock_var(key), knock_var(burst_key));
                let per_second = match env(&var) {
                    Some(v) => v
                        .parse::<f64>()
                        .map_err(|_| ConfigError(format!("{var} = {v:?}: expected a number")))?,
                    None => file.unwrap_or(default.per_second),
                };
                if !per_second.is_finite() || !(0.0..=MAX_LIMIT).contains(&per_second) {
                    return Err(ConfigError(format!(
                        "knock.{key} = {per_second}: must be between 0 (off) and {MAX_LIMIT}"
                    )));
                }
                let burst = num(&burst_var, burst, i64::from(default.burst))?;
                if per_second > 0.0 && !(1..=MAX_LIMIT as i64).contains(&burst) {
                    return Err(ConfigError(format!(
                        "knock.{burst_key} = {burst}: must be between 1 and {MAX_LIMIT}"
                    )));
                }
                if per_second == 0.0 {
                    return Ok(Rate::OFF);
                }
                Ok(Rate { per_second, burst: burst as u32 })
            };
        let k = (
            parsed.knock.rate_per_origin,
            parsed.knock.burst_per_origin,
            parsed.knock.rate_per_room,
            parsed.knock.burst_per_room,
            parsed.knock.max_pending_per_room,
        );
        let max_pending_per_room =
            num("KNOCKD_KNOCK_MAX_PENDING_PER_ROOM", k.4, DEFAULT_MAX_PENDING_PER_ROOM)?;
        if !(0..=MAX_LIMIT as i64).contains(&max_pending_per_room) {
            return Err(ConfigError(format!(
                "knock.max_pending_per_room = {max_pending_per_room}: must be between 0 (no cap) \
                 and {MAX_LIMIT}"
            )));
        }
        let knock_limits = KnockLimitsConfig {
            per_origin: rate(
                "rate_per_origin",
                k.0,
                "burst_per_origin",
                k.1,
                DEFAULT_RATE_PER_ORIGIN,
            )?,
            per_room: rate("rate_per_room", k.2, "burst_per_room", k.3, DEFAULT_RATE_PER_ROOM)?,
            max_pending_per_room,
        };

        let dummy_event_threshold = num(
            "KNOCKD_ROOMS_DUMMY_EVENT_THRESHOLD",
            parsed.rooms.dummy_event_threshold,
            DEFAULT_DUMMY_EVENT_THRESHOLD as i64,
        )?;
        if !(0..=MAX_LIMIT as i64).contains(&dummy_event_threshold) {
            return Err(ConfigError(format!(
                "rooms.dummy_event_threshold = {dummy_event_threshold}: must be between 0 (never) \
                 and {MAX_LIMIT}"
            )));
        }
        let dummy_event_threshold = dummy_event_threshold as usize;

        let admin_listen = pick(&flags.admin_listen, "KNOCKD_ADMIN_LISTEN", parsed.admin.listen)
            .unwrap_or_else(|| "127.0.0.1:8449".to_owned());
        let admin_listen = parse_addr("admin.listen", &admin_listen)?;
        let allow_remote = parsed.admin.allow_remote.unwrap_or(false);
        if !admin_listen.ip().is_loopback() && !allow_remote {
            return Err(ConfigError(format!(
                "admin.listen = {admin_listen} is not a loopback address; the admin API stays on loopback \
                 unless the config file sets admin.allow_remote = true"
            )));
        }

        let metrics_listen = match pick(&None, "KNOCKD_METRICS_LISTEN", parsed.metrics.listen) {
            Some(addr) => Some(parse_addr("metrics.listen", &addr)?),
            None => None,
        };
        let metrics_remote = parsed.metrics.allow_remote.unwrap_or(false);
        if let Some(addr) = metrics_listen.filter(|a| !a.ip().is_loopback() && !metrics_remote) {
            return Err(ConfigError(format!(
                "metrics.listen = {addr} is not a loopback address; metrics stay on loopback \
                 unless the config file sets metrics.allow_remote = true"
            )));
        }

        Ok(Self {
            server_name,
            data_dir,
            database_url,
            log,
            log_format,
            federation: FederationConfig {
                listen: fed_listen,
                tls,
                verify_certificates,
                trusted_key_servers,
                address_policy,
                request_timeout_ms: request_timeout_ms as u64,
                limits,
            },
            admin: AdminConfig { listen: admin_listen, allow_remote },
            metrics: MetricsConfig { listen: metrics_listen, allow_remote: metrics_remote },
            knock_room_state,
            knock_expire_after_ms,
            knock_limits,
            outbox,
            dummy_event_threshold,
        })
    }

    /// The local admin user created on first start.
    pub fn admin_user(&self) -> String {
        format!("@admin:{}", self.server_name)
    }

    /// True when the server name is a loopback address or `localhost`.
    pub fn server_name_is_local(&self) -> bool {
        let host = self.server_name.host();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }
}

/// `KNOCKD_KNOCK_<KEY>` for `knock.<key>`.
fn knock_var(key: &str) -> String {
    format!("KNOCKD_KNOCK_{}", key.to_ascii_uppercase())
}

/// Every setting of the example, as `KNOCKD_<SECTION>__<KEY>` (`KNOCKD_OUTBOX__POLL_MS`), put
/// over what the file says. A value is read as TOML when it is one (`42`, `true`, `["a", "b"]`),
/// as text otherwise. The flat names (`KNOCKD_OUTBOX_POLL_MS`) still work and win over these.
fn overlay_section_env(
    table: &mut toml::Table,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    for (section, key) in section_keys() {
        // Opening a listener beyond loopback stays a decision of the config file.
        if key == "allow_remote" {
            continue;
        }
        let var = format!("KNOCKD_{}__{}", section.to_uppercase(), key.to_uppercase());
        let Some(text) = env(&var).filter(|v| !v.is_empty()) else { continue };
        let value = toml::from_str::<toml::Table>(&format!("v = {text}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(text.clone()));
        let entry = table
            .entry(section.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match entry {
            toml::Value::Table(t) => {
                t.insert(key.to_owned(), value);
            }
            _ => return Err(ConfigError(format!("{var}: [{section}] is not a section"))),
        }
    }
    Ok(())
}

/// `(section, key)` of every setting in [`EXAMPLE`], commented out or not.
pub fn section_keys() -> Vec<(&'static str, &'static str)> {
    let mut section = "";
    let mut keys = Vec::new();
    for line in EXAMPLE.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name;
            continue;
        }
        let setting = line.strip_prefix("# ").unwrap_or(line);
        let Some((key, _)) = setting.split_once(" = ") else { continue };
        if !section.is_empty()
            && !key.is_empty()
            && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        {
            keys.push((section, key));
        }
    }
    keys
}

/// Milliseconds as a number, or a duration with units: `500ms`, `30s`, `5m`, `1h`, `7d`, `1h30m`.
pub fn parse_millis(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(ms) = text.parse::<i64>() {
        return Some(ms);
    }
    if text.is_empty() {
        return None;
    }
    let mut total: i64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let n: i64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let factor = match rest[..unit_len].trim() {
            "ms" => 1,
            "s" => 1_000,
            "m" | "min" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(factor)?)?;
        rest = &rest[unit_len..];
    }
    Some(total)
}

/// A `*_ms` setting in the file: milliseconds, or a duration with units as text ("30s").
fn millis<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(i64),
        Text(String),
    }
    match Option::<Raw>::deserialize(d)? {
        None => Ok(None),
        Some(Raw::Number(n)) => Ok(Some(n)),
        Some(Raw::Text(t)) => parse_millis(&t).map(Some).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{t:?} is not milliseconds or a duration like 30s, 5m, 1h, 7d"
            ))
        }),
    }
}

fn read_file(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError(format!("cannot read config file {}: {}", path.display(), describe_io(&e)))
    })?;
    // Checked as the settings first, for errors that name their line; then kept as a table for
    // the environment to go over.
    toml::from_str::<FileConfig>(&text).and_then(|_| toml::from_str::<toml::Table>(&text)).map_err(
        |e| {
            let message = e.message().to_owned();
            let at = e
                .span()
                .map(|span| {
                    let line = text[..span.start].matches('\n').count() + 1;
                    format!(" (line {line})")
                })
                .unwrap_or_default();
            ConfigError(format!("config file {}{at}: {message}", path.display()))
        },
    )
}

fn describe_io(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_owned(),
        std::io::ErrorKind::PermissionDenied => {
            "permission denied (check the file's owner and mode)".to_owned()
        }
        _ => e.to_string(),
    }
}

fn parse_addr(name: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| {
        ConfigError(format!("{name} = {value:?} is not an address like 127.0.0.1:8448"))
    })
}

fn parse_bool(name: &str, value: &str) -> Result<bool, ConfigError> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(ConfigError(format!("{name} = {value:?}: expected true or false"))),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn defaults() {
        let c = Config::load(None, &env_of(&[]), &Overrides::default()).unwrap();
        assert_eq!(c.server_name.as_str(), "localhost:8448");
        assert_eq!(c.federation.listen.to_string(), "127.0.0.1:8448");
        assert_eq!(c.admin.listen.to_string(), "127.0.0.1:8449");
        assert_eq!(c.federation.tls, TlsMode::SelfSigned);
        assert!(c.federation.verify_certificates);
        assert_eq!(c.database_url.sqlite_path(), Some("./knockd-data/knockd.db"));
        assert!(c.server_name_is_local());
        assert_eq!(c.federation.request_timeout_ms, 60_000);
        assert_eq!(c.outbox.lease_ms, 120_000);
        assert_eq!(c.outbox.park_after_refusals, 10);
    }

    #[test]
    fn every_setting_has_an_environment_name_and_durations_take_units() {
        let env = env_of(&[
            ("KNOCKD_OUTBOX__POLL_MS", "250"),
            ("KNOCKD_OUTBOX__MAX_BACKOFF_MS", "2h"),
            ("KNOCKD_FEDERATION__REQUEST_TIMEOUT_MS", "\"90s\""),
            ("KNOCKD_FEDERATION__TRUSTED_KEY_SERVERS", "[\"notary.example\"]"),
            ("KNOCKD_KNOCK__ROOM_STATE", "[\"m.room.name\"]"),
            ("KNOCKD_METRICS__LISTEN", "127.0.0.1:9448"),
            ("KNOCKD_ADMIN__LISTEN", "127.0.0.1:9000"),
            ("KNOCKD_ROOMS__DUMMY_EVENT_THRESHOLD", "7"),
            ("KNOCKD_KNOCK__EXPIRE_AFTER_MS", "1d"),
        ]);
        let c = Config::load(None, &env, &Overrides::default()).unwrap();
        assert_eq!(c.outbox.poll_ms, 250);
        assert_eq!(c.outbox.max_backoff_ms, 2 * 3_600_000);
        assert_eq!(c.federation.request_timeout_ms, 90_000);
        assert_eq!(c.federation.trusted_key_servers.len(), 1);
        assert!(c.knock_room_state.contains(&"m.room.name".to_owned()));
        assert_eq!(c.metrics.listen.map(|a| a.port()), Some(9448));
        assert_eq!(c.admin.listen.port(), 9000);
        assert_eq!(c.dummy_event_threshold, 7);
        assert_eq!(c.knock_expire_after_ms, 86_400_000);

        // The flat names still work, and win.
        let both = env_of(&[
            ("KNOCKD_ADMIN__LISTEN", "127.0.0.1:9000"),
            ("KNOCKD_ADMIN_LISTEN", "127.0.0.1:9001"),
        ]);
        let c = Config::load(None, &both, &Overrides::default()).unwrap();
        assert_eq!(c.admin.listen.port(), 9001);
        let flat = env_of(&[("KNOCKD_OUTBOX_POLL_MS", "1m")]);
        assert_eq!(
            Config::load(None, &flat, &Overrides::default()).unwrap().outbox.poll_ms,
            60_000
        );

        // Durations in the file too; a bad one names the setting.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("knockd.toml");
        std::fs::write(&file, "version = 1\n[outbox]\nmin_backoff_ms = \"1h30m\"\n").unwrap();
        let c = Config::load(Some(&file), &env_of(&[]), &Overrides::default()).unwrap();
        assert_eq!(c.outbox.min_backoff_ms, 90 * 60_000);
        std::fs::write(&file, "version = 1\n[outbox]\nmin_backoff_ms = \"soon\"\n").unwrap();
        let err = Config::load(Some(&file), &env_of(&[]), &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("soon") && err.to_string().contains("30s"), "{err}");
        let bad = env_of(&[("KNOCKD_OUTBOX_POLL_MS", "fast")]);
        let err = Config::load(None, &bad, &Overrides::default()).unwrap_err().to_string();
        assert!(err.contains("KNOCKD_OUTBOX_POLL_MS") && err.contains("duration"), "{err}");
        let bad = env_of(&[("KNOCKD_OUTBOX__POLL_MS", "fast")]);
        let err = Config::load(None, &bad, &Overrides::default()).unwrap_err().to_string();
        assert!(err.contains("fast"), "{err}");
    }

    #[test]
    fn every_example_setting_is_a_real_one() {
        // Uncommented, every setting of the example (commented ones too) is accepted.
        let all: String = EXAMPLE
            .lines()
            .map(|l| {
                let setting = l.strip_prefix("# ").filter(|s| !s.contains("...")).filter(|s| {
                    s.split_once(" = ").is_some_and(|(k, _)| {
                        !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                    })
                });
                format!("{}\n", setting.unwrap_or(l))
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("all.toml");
        std::fs::write(&file, &all).unwrap();
        Config::load(Some(&file), &env_of(&[]), &Overrides::default())
            .unwrap_or_else(|e| panic!("{e}\n{all}"));
        assert!(section_keys().len() >= 30, "{:?}", section_keys());
        assert!(section_keys().contains(&("outbox", "lease_ms")));
    }

    #[test]
    fn a_bad_log_filter_is_an_error() {
        let bad = env_of(&[("KNOCKD_LOG", "info,knockd=loud")]);
        let err = Config::load(None, &bad, &Overrides::default()).unwrap_err().to_string();
        assert!(err.contains("log filter"), "{err}");
    }

    #[test]
    fn millis_with_units() {
        for (text, ms) in [
            ("250", 250),
            ("500ms", 500),
            ("30s", 30_000),
            ("5m", 300_000),
            ("2h", 7_200_000),
            ("7d", 604_800_000),
            ("1h30m", 5_400_000),
        ] {
            assert_eq!(parse_millis(text), Some(ms), "{text}");
        }
        for text in ["", "s", "5x", "1.5h", "-", "99999999999999999999d"] {
            assert_eq!(parse_millis(text), None, "{text}");
        }
    }

    #[test]
    fn metrics_are_off_by_default_and_stay_on_loopback() {
        let c = Config::load(None, &env_of(&[]), &Overrides::default()).unwrap();
        assert_eq!(c.metrics.listen, None);
        let on = env_of(&[("KNOCKD_METRICS_LISTEN", "127.0.0.1:9448")]);
        let c = Config::load(None, &on, &Overrides::default()).unwrap();
        assert_eq!(c.metrics.listen.map(|a| a.to_string()).as_deref(), Some("127.0.0.1:9448"));
        let open = env_of(&[("KNOCKD_METRICS_LISTEN", "0.0.0.0:9448")]);
        let err = Config::load(None, &open, &Overrides::default()).unwrap_err().to_string();
        assert!(err.contains("metrics.listen = 0.0.0.0:9448") && err.contains("loopback"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("knockd.toml");
        std::fs::write(
            &file,
            "version = 1\n[metrics]\nlisten = \"0.0.0.0:9448\"\nallow_remote = true\n",
        )
        .unwrap();
        let c = Config::load(Some(&file), &env_of(&[]), &Overrides::default()).unwrap();
        assert_eq!(c.metrics.listen.map(|a| a.to_string()).as_deref(), Some("0.0.0.0:9448"));
        let bad = env_of(&[("KNOCKD_METRICS_LISTEN", "nine")]);
        let err = Config::load(None, &bad, &Overrides::default()).unwrap_err().to_string();
        assert!(err.contains("metrics.listen"), "{err}");
    }

    #[test]
    fn parked_items_are_purged_after_a_week_unless_configured() {
        let c = Config::load(None, &env_of(&[]), &Overrides::default()).unwrap();
        assert_eq!(c.outbox.purge_parked_after_ms, 7 * 24 * 3_600_000);
        let keep = env_of(&[("KNOCKD_OUTBOX_PURGE_PARKED_AFTER_MS", "0")]);
        let c = Config::load(None, &keep, &Overrides::default()).unwrap();
        assert_eq!(c.outbox.purge_parked_after_ms, 0);
        let negative = env_of(&[("KNOCKD_OUTBOX_PURGE_PARKED_AFTER_MS", "-1")]);
        let err = Config::load(None, &negative, &Overrides::default()).unwrap_err().to_string();
        assert!(err.contains("outbox.purge_parked_after_ms = -1"), "{err}");
    }

    #[test]
    fn the_outbox_lease_outlasts_a_request() {
        let short = env_of(&[("KNOCKD_FEDERATION_REQUEST_TIMEOUT_MS", "1500")]);
        let c = Config::load(None, &short, &Overrides::default()).unwrap();
        assert_eq!(c.outbox.lease_ms, 3_000, "derived from the timeout");
        let err = Config::load(
            None,
            &env_of(&[("KNOCKD_OUTBOX_LEASE_MS", "30000")]),
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("lease_ms") && err.contains("request_timeout_ms"), "{err}");
        let ok = env_of(&[
            ("KNOCKD_FEDERATION_REQUEST_TIMEOUT_MS", "10000"),
            ("KNOCKD_OUTBOX_LEASE_MS", "20000"),
        ]);
        assert_eq!(Config::load(None, &ok, &Overrides::default()).unwrap().outbox.lease_ms, 20_000);
    }

    #[test]
    fn example_parses_and_precedence_holds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("knockd.toml");
        std::fs::write(
            &path,
            EXAMPLE.replace("server_name = \"localhost:8448\"", "server_name = \"file.example\""),
        )
        .unwrap();
        let c = Config::load(Some(&path), &env_of(&[]), &Overrides::default()).unwrap();
        assert_eq!(c.server_name.as_str(), "file.example");
        let env = env_of(&[
            ("KNOCKD_SERVER_NAME", "env.example"),
            ("KNOCKD_FEDERATION_VERIFY_CERTIFICATES", "false"),
        ]);
        let c = Config::load(Some(&path), &env, &Overrides::default()).unwrap();
        assert_eq!(c.server_name.as_str(), "env.example");
        assert!(!c.federation.verify_certificates);
        let flags = Overrides { server_name: Some("flag.example".into()), ..Default::default() };
        let c = Config::load(Some(&path), &env, &flags).unwrap();
        assert_eq!(c.server_name.as_str(), "flag.example");
        assert!(!c.server_name_is_local());
    }

    #[test]
    fn knock_limits() {
        let c = Config::load(None, &env_of(&[]), &Overrides::default()).unwrap();
        assert_eq!(c.knock_limits.per_origin, DEFAULT_RATE_PER_ORIGIN);
        assert_eq!(c.knock_limits.per_room, DEFAULT_RATE_PER_ROOM);
        assert_eq!(c.knock_limits.max_pending_per_room, 10_000);
        let env = env_of(&[
            ("KNOCKD_KNOCK_RATE_PER_ORIGIN", "0.5"),
            ("KNOCKD_KNOCK_BURST_PER_ORIGIN", "3"),
            ("KNOCKD_KNOCK_RATE_PER_ROOM", "0"),
            ("KNOCKD_KNOCK_MAX_PENDING_PER_ROOM", "0"),
        ]);
        let c = Config::load(None, &env, &Overrides::default()).unwrap();
        assert_eq!(c.knock_limits.per_origin, Rate { per_second: 0.5, burst: 3 });
        assert!(c.knock_limits.per_room.is_off());
        assert_eq!(c.knock_limits.max_pending_per_room, 0);
        for (var, value, said) in [
            ("KNOCKD_KNOCK_RATE_PER_ORIGIN", "-1", "knock.rate_per_origin"),
            ("KNOCKD_KNOCK_RATE_PER_ROOM", "NaN", "knock.rate_per_room"),
            ("KNOCKD_KNOCK_RATE_PER_ROOM", "fast", "KNOCKD_KNOCK_RATE_PER_ROOM"),
            ("KNOCKD_KNOCK_BURST_PER_ORIGIN", "0", "knock.burst_per_origin"),
            ("KNOCKD_KNOCK_BURST_PER_ROOM", "99999999", "knock.burst_per_room"),
            ("KNOCKD_KNOCK_MAX_PENDING_PER_ROOM", "-5", "knock.max_pending_per_room"),
        ] {
            let err = Config::load(None, &env_of(&[(var, value)]), &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains(said), "{var}={value}: {err}");
        }
    }

    #[test]
    fn errors_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "version = 1\nsevrer_name = \"x\"\n").unwrap();
        let err =
            Config::load(Some(&path), &env_of(&[]), &Overrides::default()).unwrap_err().to_string();
        assert!(
            err.contains("bad.toml") && err.contains("sevrer_name") && err.contains("line 2"),
            "{err}"
        );

        std::fs::write(&path, "server_name = \"x\"\n").unwrap();
        let err =
            Config::load(Some(&path), &env_of(&[]), &Overrides::default()).unwrap_err().to_string();
        assert!(err.contains("version"), "{err}");

        let missing = dir.path().join("nope.toml");
        let err = Config::load(Some(&missing), &env_of(&[]), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope.toml") && err.contains("no such file"), "{err}");

        let err = Config::load(
            None,
            &env_of(&[("KNOCKD_ADMIN_LISTEN", "0.0.0.0:8449")]),
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("loopback"), "{err}");

        let err = Config::load(
            None,
            &env_of(&[("KNOCKD_DATABASE_URL", "mysql://u:pw@h/db")]),
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("database_url") && !err.contains("pw@"), "{err}");
    }
}
