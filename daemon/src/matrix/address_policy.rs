//! Which addresses outbound federation may connect to, as Synapse's
//! `federation_ip_range_blocklist` / `federation_ip_range_allowlist`.
//!
//! Server names come from strangers: an X-Matrix `origin` such as `127.0.0.1:5432` would have us
//! fetch "keys" from a local database before anything is verified, and a `.well-known` or SRV
//! answer may point anywhere. Loopback, private, link-local and other special ranges are refused
//! by default; the allow list (tests, a demo on one machine) wins over the block list.

use std::net::IpAddr;

use ipnet::IpNet;

/// The ranges refused by default: not routable on the public internet, or ours.
pub const DEFAULT_BLOCKLIST: [&str; 25] = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/128",
    "::1/128",
    "64:ff9b::/96",
    "100::/64",
    "2001:db8::/32",
    "2002::/16",
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
];

/// Where outbound federation may go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressPolicy {
    block: Vec<IpNet>,
    allow: Vec<IpNet>,
}

impl Default for AddressPolicy {
    fn default() -> Self {
        Self::parse(&DEFAULT_BLOCKLIST.map(str::to_owned), &[]).expect("the default list parses")
    }
}

impl AddressPolicy {
    /// From lists of ranges (`10.0.0.0/8`) or single addresses (`127.0.0.1`).
    pub fn parse(block: &[String], allow: &[String]) -> Result<Self, String> {
        let nets = |list: &[String]| -> Result<Vec<IpNet>, String> {
            list.iter()
                .map(|s| {
                    let s = s.trim();
                    s.parse::<IpNet>()
                        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                        .map_err(|_| format!("{s:?} is not an IP address or range"))
                })
                .collect()
        };
        Ok(Self { block: nets(block)?, allow: nets(allow)? })
    }

    /// Whether a connection to `ip` is allowed. An IPv4 address inside IPv6 (`::ffff:a.b.c.d`)
    /// is judged as the IPv4 address it is.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.allow.iter().any(|n| n.contains(&ip)) || !self.block.iter().any(|n| n.contains(&ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn special_ranges_are_refused_by_default_and_public_ones_allowed() {
        let p = AddressPolicy::default();
        for denied in [
            "127.0.0.1",
            "127.8.9.10",
            "10.1.2.3",
            "172.20.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!p.permits(ip(denied)), "{denied}");
        }
        for allowed in ["1.1.1.1", "8.8.4.4", "2606:4700::1111", "::ffff:1.1.1.1"] {
            assert!(p.permits(ip(allowed)), "{allowed}");
        }
    }

    #[test]
    fn the_allow_list_wins_and_bad_entries_are_named() {
        let block: Vec<String> = DEFAULT_BLOCKLIST.map(str::to_owned).to_vec();
        let p = AddressPolicy::parse(&block, &["127.0.0.1".to_owned(), "::1".to_owned()]).unwrap();
        assert!(p.permits(ip("127.0.0.1")) && p.permits(ip("::1")));
        assert!(!p.permits(ip("127.0.0.2")) && !p.permits(ip("10.0.0.1")));
        let err = AddressPolicy::parse(&["10.0.0.0/33".to_owned()], &[]).unwrap_err();
        assert!(err.contains("10.0.0.0/33"), "{err}");
    }
}
