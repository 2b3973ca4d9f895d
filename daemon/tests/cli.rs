//! The real `knockd` binary: config commands and start-up failures give one-line errors, a
//! non-zero exit, and leave nothing half-created.

use std::{
    net::TcpListener,
    path::Path,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

fn knockd(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_knockd"));
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("KNOCKD_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null());
    cmd
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut child =
        knockd(args, env).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("knockd {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn free_port() -> String {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string()
}

/// The last stderr line (tracing may print before the error).
fn error_line(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    stderr.lines().rfind(|l| !l.trim().is_empty()).unwrap_or_default().to_owned()
}

#[test]
fn config_example_passes_config_check() {
    let out = run(&["config", "example"], &[]);
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("knockd.toml");
    std::fs::write(&path, &out.stdout).unwrap();
    let out = run(&["--config", path.to_str().unwrap(), "config", "check"], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration ok"));
    // config check neither binds nor creates anything.
    assert!(!dir.path().join("knockd-data").exists());
}

#[test]
fn malformed_config_is_one_line_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    std::fs::write(&path, "version = 1\n[federation]\nlisten = 8448\n").unwrap();
    let out = run(&["--config", path.to_str().unwrap(), "config", "check"], &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("broken.toml"), "{stderr}");
}

fn start_env<'a>(data: &'a str, fed: &'a str, adm: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("KNOCKD_DATA_DIR", data),
        ("KNOCKD_FEDERATION_LISTEN", fed),
        ("KNOCKD_ADMIN_LISTEN", adm),
        ("KNOCKD_LOG", "warn"),
    ]
}

#[test]
fn unreachable_database_fails_before_creating_anything() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (fed, adm) = (free_port(), free_port());
    let mut env = start_env(data.to_str().unwrap(), &fed, &adm);
    env.push(("KNOCKD_DATABASE_URL", "postgres://knockd:secret@127.0.0.1:1/knockd"));
    let out = run(&[], &env);
    assert!(!out.status.success());
    let line = error_line(&out);
    assert!(line.contains("PostgreSQL") && line.contains("127.0.0.1:1"), "{line}");
    assert!(!line.contains("secret"), "password leaked: {line}");
    assert!(!data.exists(), "data dir must not be created");
}

#[test]
fn port_in_use_fails_before_creating_anything() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let fed = taken.local_addr().unwrap().to_string();
    let adm = free_port();
    let out = run(&[], &start_env(data.to_str().unwrap(), &fed, &adm));
    assert!(!out.status.success());
    let line = error_line(&out);
    assert!(line.contains("cannot listen on") && line.contains(&fed), "{line}");
    assert!(!data.exists());
}

#[test]
fn unwritable_data_dir_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let data = file.join("data");
    let (fed, adm) = (free_port(), free_port());
    let out = run(&[], &start_env(data.to_str().unwrap(), &fed, &adm));
    assert!(!out.status.success());
    let line = error_line(&out);
    assert!(line.contains("data dir") && line.contains("a-file"), "{line}");
}

#[test]
fn database_from_a_newer_knockd_is_refused() {
    use diesel::{Connection, RunQueryDsl, SqliteConnection};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let db = data.join("knockd.db");
    let url = format!("sqlite://{}", db.display());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let migrated = runtime
        .block_on(knockd::store::Db::connect(&knockd::store::DatabaseUrl::parse(&url).unwrap()))
        .unwrap();
    drop(migrated);
    drop(runtime);
    let mut conn = SqliteConnection::establish(db.to_str().unwrap()).unwrap();
    diesel::sql_query("PRAGMA busy_timeout = 10000").execute(&mut conn).unwrap();
    diesel::sql_query(
        "INSERT INTO __diesel_schema_migrations (version, run_on) VALUES ('29991231000000', CURRENT_TIMESTAMP)",
    )
    .execute(&mut conn)
    .unwrap();
    drop(conn);
    let (fed, adm) = (free_port(), free_port());
    let out = run(&[], &start_env(data.to_str().unwrap(), &fed, &adm));
    assert!(!out.status.success());
    let line = error_line(&out);
    assert!(line.contains("newer knockd"), "{line}");
}

#[test]
fn first_start_creates_key_and_token_and_sigterm_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (fed, adm) = (free_port(), free_port());
    let mut child = knockd(&[], &start_env(data.to_str().unwrap(), &fed, &adm))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_healthy(&adm);
    for file in ["signing.key", "admin.token", "knockd.db"] {
        assert!(data.join(file).exists(), "{file}");
    }
    #[cfg(unix)]
    for file in ["signing.key", "admin.token", "federation.key"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join(file)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{file}");
    }
    let status = stop_gracefully(&mut child);
    assert!(status.success(), "exit status {status}");
    assert!(Path::new(&data).exists());
}

/// Waits (30 s at most) until knockd's admin listener at `adm` answers `/healthz`.
fn wait_healthy(adm: &str) {
    let start = Instant::now();
    while !healthy(adm) {
        assert!(start.elapsed() < Duration::from_secs(30), "knockd did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGTERM, then waits (20 s at most) for the exit.
fn stop_gracefully(child: &mut std::process::Child) -> std::process::ExitStatus {
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "no graceful shutdown");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn healthy(addr: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else { return false };
    let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.1 200")
}

#[test]
fn admin_tokens_can_be_created_listed_and_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_s = data.to_str().unwrap();
    let env = [("KNOCKD_DATA_DIR", data_s), ("KNOCKD_SERVER_NAME", "example.org")];
    std::fs::create_dir(&data).unwrap();
    let out =
        run(&["admin", "token", "create", "--user", "@mod:example.org", "--label", "ops"], &env);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(token.starts_with("kd_") && token.len() > 40, "{token}");
    let out = run(&["admin", "token", "list"], &env);
    let listing = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(listing.contains("@mod:example.org") && listing.contains("ops"), "{listing}");
    assert!(!listing.contains(&token), "tokens are never shown again");
    let id = listing
        .lines()
        .find(|l| l.contains("@mod"))
        .unwrap()
        .split('\t')
        .next()
        .unwrap()
        .to_owned();
    let out = run(&["admin", "token", "revoke", &id], &env);
    assert!(out.status.success());
    let out = run(&["admin", "token", "revoke", &id], &env);
    assert!(!out.status.success(), "revoking twice fails");
    let out = run(&["admin", "token", "create", "--user", "@mod:other.example"], &env);
    assert!(!out.status.success());
    assert!(error_line(&out).contains("not a user of this server"));

    // A token with an expiry: the list says when.
    let args = ["admin", "token", "create", "--user", "@ops:example.org", "--expires-in", "1h"];
    let out = run(&args, &env);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listing =
        String::from_utf8_lossy(&run(&["admin", "token", "list"], &env).stdout).to_string();
    assert!(listing.lines().next().unwrap().ends_with("EXPIRES_MS"), "{listing}");
    let ops = listing.lines().find(|l| l.contains("@ops")).unwrap();
    let expires: i64 = ops.rsplit('\t').next().unwrap().parse().unwrap();
    let created: i64 = ops.split('\t').nth(3).unwrap().parse().unwrap();
    assert!((expires - created - 3_600_000).abs() < 60_000, "{ops}");
    let args = ["admin", "token", "create", "--user", "@ops:example.org", "--expires-in", "soon"];
    let out = run(&args, &env);
    assert!(!out.status.success());
    assert!(error_line(&out).contains("--expires-in"), "{out:?}");
}

// `knockd key show|rotate`: no key yet is a clear error; rotating refuses while something listens
// on knockd's addresses (unless --force); a rotation prints the new key ID, and `show` lists the
// replaced key with its expiry.
#[test]
fn key_rotate_and_show() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let (fed, adm) = (free_port(), free_port());
    let env = [
        ("KNOCKD_DATA_DIR", data),
        ("KNOCKD_FEDERATION_LISTEN", fed.as_str()),
        ("KNOCKD_ADMIN_LISTEN", adm.as_str()),
    ];
    for args in [["key", "show"], ["key", "rotate"]] {
        let out = run(&args, &env);
        assert!(!out.status.success());
        assert!(error_line(&out).contains("knockd creates one when it first starts"), "{out:?}");
    }
    std::fs::create_dir_all(data).unwrap();
    let key = "ed25519 a_old nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A\n";
    std::fs::write(Path::new(data).join("signing.key"), key).unwrap();

    let busy = TcpListener::bind(adm.as_str()).unwrap();
    let out = run(&["key", "rotate"], &env);
    assert!(!out.status.success());
    assert!(error_line(&out).contains("stop knockd"), "{out:?}");
    assert_eq!(std::fs::read_to_string(Path::new(data).join("signing.key")).unwrap(), key);
    let out = run(&["key", "rotate", "--force"], &env);
    assert!(out.status.success(), "--force rotates anyway: {out:?}");
    drop(busy);

    let out = run(&["key", "rotate"], &env);
    assert!(out.status.success(), "{out:?}");
    let new_id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(new_id.starts_with("ed25519:a_") && new_id != "ed25519:a_old", "{new_id}");
    let out = run(&["key", "show"], &env);
    assert!(out.status.success(), "{out:?}");
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), 3, "{shown}");
    assert!(lines[0].starts_with(&format!("{new_id}\t")) && lines[0].ends_with("current"));
    assert!(lines[1].starts_with("ed25519:a_old\t") && lines[1].contains("expired_ts"), "{shown}");
    assert!(lines[2].contains("expired_ts") && !lines[2].contains("a_old"), "{shown}");
}

/// Starts knockd with `env` (plain HTTP federation), asks it for `/version`, stops it and
/// returns what it logged.
fn logs_of(env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (fed, adm) = (free_port(), free_port());
    let mut all = start_env(data.to_str().unwrap(), &fed, &adm);
    all.retain(|(k, _)| *k != "KNOCKD_LOG");
    all.extend_from_slice(&[("KNOCKD_LOG", "info"), ("KNOCKD_FEDERATION_TLS", "off")]);
    all.extend_from_slice(env);
    let log = dir.path().join("stderr.log");
    let mut child = knockd(&[], &all)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_healthy(&adm);
    {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&fed).unwrap();
        let request =
            "GET /_matrix/federation/v1/version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        s.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    stop_gracefully(&mut child);
    std::fs::read_to_string(&log).unwrap()
}

// log_format = "json": every line is one JSON object, the federation request's access line among
// them with its fields at the top level. Text off a terminal has no colour codes.
#[test]
fn json_logs_and_no_colour_off_a_terminal() {
    let logs = logs_of(&[("KNOCKD_LOG_FORMAT", "json")]);
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() >= 2, "{logs}");
    assert!(lines.iter().all(|l| l["level"].is_string() && l["timestamp"].is_string()));
    let access = lines
        .iter()
        .find(|l| l["target"] == "knockd::access")
        .unwrap_or_else(|| panic!("no access line: {logs}"));
    assert_eq!(access["endpoint"], "/_matrix/federation/v1/version", "{access}");
    assert_eq!(access["status"], 200, "{access}");
    assert_eq!(access["method"], "GET", "{access}");
    assert!(access["latency_ms"].is_number(), "{access}");

    let text = logs_of(&[]);
    assert!(text.contains("knockd::access"), "{text}");
    assert!(!text.contains('\u{1b}'), "no colour codes when stderr is not a terminal: {text}");

    let out = run(&["config", "check"], &[("KNOCKD_LOG_FORMAT", "yaml")]);
    assert!(!out.status.success());
    assert!(error_line(&out).contains("log_format"), "{out:?}");
}

// systemd's protocol: READY=1 once serving, WATCHDOG=1 at half WATCHDOG_USEC, STOPPING=1 on
// SIGTERM, all to $NOTIFY_SOCKET. `knockd healthcheck` answers 0 while it runs, 1 before and after.
#[cfg(target_os = "linux")]
#[test]
fn systemd_notifications_and_healthcheck() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (fed, adm) = (free_port(), free_port());
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut env = start_env(data.to_str().unwrap(), &fed, &adm);
    let health_env = env.clone();
    let out = run(&["healthcheck"], &health_env);
    assert!(!out.status.success(), "not running yet");
    assert!(error_line(&out).contains("not ready"), "{out:?}");

    let socket_env = socket_path.to_str().unwrap().to_owned();
    env.push(("NOTIFY_SOCKET", &socket_env));
    env.push(("WATCHDOG_USEC", "200000"));
    let mut child = knockd(&[], &env).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let received = |wanted: &str| {
        let mut buf = [0u8; 512];
        loop {
            let n = socket.recv(&mut buf).expect("a notification within 30 s");
            let message = String::from_utf8_lossy(&buf[..n]).into_owned();
            if message.lines().any(|l| l == wanted) {
                return;
            }
        }
    };
    received("READY=1");
    assert!(healthy(&adm), "READY=1 means it serves");
    received("WATCHDOG=1");
    received("WATCHDOG=1");
    let out = run(&["healthcheck"], &health_env);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("ready"), "{out:?}");

    stop_gracefully(&mut child);
    received("STOPPING=1");
    assert!(!run(&["healthcheck"], &health_env).status.success());
}

/// contrib/, from this crate's directory.
fn contrib(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib").join(path)
}

// contrib/knockd.toml is what `knockd config example` prints (regenerate it with
// `knockd config example > contrib/knockd.toml`).
#[test]
fn the_example_config_in_contrib_is_current() {
    let out = run(&["config", "example"], &[]);
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    let kept = std::fs::read_to_string(contrib("knockd.toml")).unwrap();
    assert!(
        kept == printed,
        "contrib/knockd.toml is stale: knockd config example > contrib/knockd.toml"
    );
}

// The systemd unit passes `systemd-analyze verify` with no warning, run on the built binary
// (skipped, saying so, where systemd-analyze is missing).
#[test]
fn the_systemd_unit_verifies() {
    let unit = std::fs::read_to_string(contrib("systemd/knockd.service")).unwrap();
    assert!(unit.contains("Type=notify") && unit.contains("WatchdogSec="), "{unit}");
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("knockd.service");
    std::fs::write(&copy, unit.replace("/usr/bin/knockd", env!("CARGO_BIN_EXE_knockd"))).unwrap();
    let out = match Command::new("systemd-analyze").arg("verify").arg(&copy).output() {
        Ok(out) => out,
        Err(e) => {
            eprintln!("skipped: systemd-analyze is not available ({e})");
            return;
        }
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
}

/// TLS to knockd that accepts any certificate and records the one it was shown.
mod tls_probe {
    use std::{
        io::{BufRead, BufReader, Read, Write},
        net::TcpStream,
        sync::{Arc, Mutex},
    };

    use rustls::{
        ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned,
        client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        pki_types::{CertificateDer, ServerName, UnixTime},
    };

    #[derive(Debug, Default)]
    struct Recorder(Mutex<Option<Vec<u8>>>);

    impl ServerCertVerifier for Recorder {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            *self.0.lock().unwrap() = Some(end_entity.to_vec());
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            rustls::crypto::ring::default_provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }

    /// A kept-alive TLS connection, and the certificate its handshake showed.
    pub struct Probe {
        stream: BufReader<StreamOwned<ClientConnection, TcpStream>>,
        pub cert: Vec<u8>,
    }

    impl Probe {
        pub fn connect(addr: &str) -> Self {
            let recorder = Arc::new(Recorder::default());
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .dangerous()
                .with_custom_certificate_verifier(recorder.clone())
                .with_no_client_auth();
            let name = ServerName::try_from("localhost").unwrap();
            let conn = ClientConnection::new(Arc::new(config), name).unwrap();
            let mut stream = StreamOwned::new(conn, TcpStream::connect(addr).unwrap());
            while stream.conn.is_handshaking() {
                stream.conn.complete_io(&mut stream.sock).unwrap();
            }
            let cert = recorder.0.lock().unwrap().clone().expect("a certificate");
            Self { stream: BufReader::new(stream), cert }
        }

        /// `GET /version` on this connection: its status.
        pub fn version(&mut self) -> u16 {
            let request = "GET /_matrix/federation/v1/version HTTP/1.1\r\nHost: localhost\r\n\r\n";
            self.stream.get_mut().write_all(request.as_bytes()).unwrap();
            let mut status = String::new();
            self.stream.read_line(&mut status).unwrap();
            let mut length = 0;
            loop {
                let mut line = String::new();
                self.stream.read_line(&mut line).unwrap();
                if line.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = line.split_once(':')
                    && k.eq_ignore_ascii_case("content-length")
                {
                    length = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; length];
            self.stream.read_exact(&mut body).unwrap();
            status.split_whitespace().nth(1).unwrap_or_default().parse().unwrap_or(0)
        }
    }
}

// SIGHUP reloads the certificate and key: new connections get the new certificate, a connection
// opened before keeps working, and files that do not load leave the certificate in use.
#[cfg(unix)]
#[test]
fn sighup_reloads_the_certificate_without_dropping_connections() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (fed, adm) = (free_port(), free_port());
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let write_cert = || {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        std::fs::write(&cert, made.cert.pem()).unwrap();
        std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
        made.cert.der().to_vec()
    };
    let first = write_cert();
    let config = dir.path().join("knockd.toml");
    let toml = format!(
        "version = 1\n[federation]\ntls = \"files\"\ncert = {:?}\nkey = {:?}\n",
        cert.to_str().unwrap(),
        key.to_str().unwrap()
    );
    std::fs::write(&config, toml).unwrap();
    let mut child = knockd(
        &["--config", config.to_str().unwrap()],
        &start_env(data.to_str().unwrap(), &fed, &adm),
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    wait_healthy(&adm);
    let mut open = tls_probe::Probe::connect(&fed);
    assert_eq!(open.cert, first);
    assert_eq!(open.version(), 200);

    let hangup = |pid: u32| {
        assert!(Command::new("kill").args(["-HUP", &pid.to_string()]).status().unwrap().success());
    };
    let second = write_cert();
    hangup(child.id());
    let start = Instant::now();
    while tls_probe::Probe::connect(&fed).cert != second {
        assert!(start.elapsed() < Duration::from_secs(10), "the new certificate never came");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(open.version(), 200, "the connection opened before the reload still works");

    std::fs::write(&cert, "not a certificate").unwrap();
    hangup(child.id());
    std::thread::sleep(Duration::from_millis(500));
    assert!(child.try_wait().unwrap().is_none(), "a bad file does not stop knockd");
    assert_eq!(tls_probe::Probe::connect(&fed).cert, second, "the last good certificate stays");
    assert_eq!(open.version(), 200);

    stop_gracefully(&mut child);
}

// `knockd config check --json`: the resolved settings (every setting from KNOCKD_<SECTION>__<KEY>
// too, durations with units), or {"ok": false, "error"} and exit 1: a bad value, a TLS file that
// is missing or not PEM.
#[test]
fn config_check_json() {
    let ok = run(
        &["config", "check", "--json"],
        &[
            ("KNOCKD_ADMIN__LISTEN", "127.0.0.1:9101"),
            ("KNOCKD_OUTBOX__MAX_BACKOFF_MS", "2h"),
            ("KNOCKD_DATABASE_URL", "postgres://knockd:secret@127.0.0.1/knockd"),
        ],
    );
    assert!(ok.status.success(), "{ok:?}");
    let answer: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(answer["ok"], true);
    assert_eq!(answer["admin"]["listen"], "127.0.0.1:9101");
    assert_eq!(answer["outbox"]["max_backoff_ms"], 7_200_000);
    assert!(!answer.to_string().contains("secret"), "no password: {answer}");

    let bad = run(&["config", "check", "--json"], &[("KNOCKD_OUTBOX__POLL_MS", "soon")]);
    assert!(!bad.status.success());
    let answer: serde_json::Value = serde_json::from_slice(&bad.stdout).unwrap();
    assert_eq!(answer["ok"], false);
    assert!(answer["error"].as_str().unwrap().contains("soon"), "{answer}");

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("knockd.toml");
    let cert = dir.path().join("cert.pem");
    std::fs::write(&cert, "not pem").unwrap();
    std::fs::write(
        &config,
        format!(
            "version = 1\n[federation]\ntls = \"files\"\ncert = {:?}\nkey = {:?}\n",
            cert.to_str().unwrap(),
            dir.path().join("missing.pem").to_str().unwrap()
        ),
    )
    .unwrap();
    let out = run(&["--config", config.to_str().unwrap(), "config", "check"], &[]);
    assert!(!out.status.success());
    assert!(
        error_line(&out).contains("federation.cert") && error_line(&out).contains("PEM"),
        "{out:?}"
    );
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\n").unwrap();
    let out = run(&["--config", config.to_str().unwrap(), "config", "check"], &[]);
    assert!(error_line(&out).contains("federation.key"), "{out:?}");
}

// `knockd completions SHELL` and `knockd man` need no configuration.
#[test]
fn completions_and_man_page() {
    let out = run(&["completions", "bash"], &[("KNOCKD_LOG", "not a filter!")]);
    assert!(out.status.success(), "{out:?}");
    let script = String::from_utf8_lossy(&out.stdout);
    assert!(script.contains("knockd") && script.contains("healthcheck"), "{script}");
    let out = run(&["man"], &[]);
    assert!(out.status.success(), "{out:?}");
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(
        page.contains(".TH knockd") && page.contains("rotate") || page.contains("key"),
        "{page}"
    );
    assert!(!run(&["completions", "cmd.exe"], &[]).status.success());
}
