//! Server discovery: from a server name to where to connect, per the spec's "Resolving server
//! names": IP literals and explicit ports are used directly, then `/.well-known/matrix/server`,
//! then SRV `_matrix-fed._tcp` and `_matrix._tcp`, then port 8448.

use std::net::IpAddr;

/// Where a request to a server goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    /// Host in the URL: the name the certificate must match (SNI), or an IP literal.
    pub tls_host: String,
    /// Port to connect to.
    pub port: u16,
    /// `Host` header value.
    pub host_header: String,
    /// When set, connect to this host (an SRV target) instead of resolving `tls_host`.
    pub connect_host: Option<String>,
}

impl Destination {
    /// The URL base, e.g. `https://example.org:8448`.
    pub fn base_url(&self) -> String {
        format!("https://{}:{}", url_host(&self.tls_host), self.port)
    }
}

fn url_host(host: &str) -> String {
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("[{v6}]"),
        _ => host.to_owned(),
    }
}

/// A server name split into host and optional port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPort {
    pub host: String,
    pub port: Option<u16>,
}

impl HostPort {
    pub fn parse(name: &str) -> Option<Self> {
        if let Some(rest) = name.strip_prefix('[') {
            let (ip, after) = rest.split_once(']')?;
            ip.parse::<std::net::Ipv6Addr>().ok()?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p.parse().ok()?),
                None if after.is_empty() => None,
                None => return None,
            };
            return Some(Self { host: ip.to_owned(), port });
        }
        match name.rsplit_once(':') {
            Some((host, port)) => {
                Some(Self { host: host.to_owned(), port: Some(port.parse().ok()?) })
            }
            None => Some(Self { host: name.to_owned(), port: None }),
        }
    }

    pub fn is_ip(&self) -> bool {
        self.host.parse::<IpAddr>().is_ok()
    }
}

/// Steps 1 and 2 of the spec: names that need no lookup beyond A/AAAA.
pub fn direct(name: &str) -> Option<Destination> {
    let hp = HostPort::parse(name)?;
    if hp.is_ip() {
        return Some(Destination {
            tls_host: hp.host.clone(),
            port: hp.port.unwrap_or(8448),
            host_header: name.to_owned(),
            connect_host: None,
        });
    }
    hp.port.map(|port| Destination {
        tls_host: hp.host.clone(),
        port,
        host_header: name.to_owned(),
        connect_host: None,
    })
}

/// Reads `m.server` from a `/.well-known/matrix/server` body.
pub fn parse_well_known(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let server = value.get("m.server")?.as_str()?.trim();
    HostPort::parse(server).filter(|hp| !hp.host.is_empty()).map(|_| server.to_owned())
}

/// Where to go for a host without a port, given the SRV answer (target, port), if any.
pub fn after_srv(host: &str, srv: Option<(String, u16)>) -> Destination {
    match srv {
        Some((target, port)) => Destination {
            tls_host: host.to_owned(),
            port,
            host_header: host.to_owned(),
            connect_host: Some(target.trim_end_matches('.').to_owned()),
        },
        None => Destination {
            tls_host: host.to_owned(),
            port: 8448,
            host_header: host.to_owned(),
            connect_host: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_literals_and_ports_are_direct() {
        let d = direct("127.0.0.1:8486").unwrap();
        assert_eq!(
            (d.tls_host.as_str(), d.port, d.host_header.as_str()),
            ("127.0.0.1", 8486, "127.0.0.1:8486")
        );
        let d = direct("1.2.3.4").unwrap();
        assert_eq!(d.port, 8448);
        let d = direct("[::1]:9000").unwrap();
        assert_eq!(d.base_url(), "https://[::1]:9000");
        let d = direct("example.org:1234").unwrap();
        assert_eq!((d.tls_host.as_str(), d.port), ("example.org", 1234));
        assert!(direct("example.org").is_none());
    }

    #[test]
    fn well_known_and_srv() {
        assert_eq!(
            parse_well_known(br#"{"m.server": "matrix.example.org:443"}"#).as_deref(),
            Some("matrix.example.org:443")
        );
        assert_eq!(parse_well_known(br#"{"m.server": 5}"#), None);
        assert_eq!(parse_well_known(b"<html>"), None);
        let d = after_srv("example.org", Some(("fed.example.net.".into(), 8449)));
        assert_eq!(d.connect_host.as_deref(), Some("fed.example.net"));
        assert_eq!(
            (d.tls_host.as_str(), d.port, d.host_header.as_str()),
            ("example.org", 8449, "example.org")
        );
        let d = after_srv("example.org", None);
        assert_eq!(d.port, 8448);
    }
}
