//! Who is asking: the peer address, unless the peer is one of our own
//! proxies (the platform's load balancer), in which case the client is the
//! nearest address in the forwarding header that is not a trusted proxy.
//! A forwarding header from anyone else is ignored: it is trivial to forge.
//!
//! Only what our proxies appended to the header can be believed, and they
//! append at the end, so the header is read from the right. An entry that
//! is not an address stops the reading: past it we no longer know who wrote
//! what, and a client that could make the walk skip an entry could choose
//! its own address, and with it a fresh budget per request. The client is
//! then the nearest trusted hop reached, so everyone behind that hop shares
//! one budget: failing closed, as a broken proxy chain should.
//!
//! An IPv4 address written as IPv6 (`::ffff:192.0.2.1`, as a dual-stack
//! socket reports IPv4 peers) is the IPv4 address everywhere here: in the
//! trusted-proxy check, as the client, and as the subject of a limit.
//! Otherwise it would be limited as part of the /64 that holds every IPv4
//! address.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use actix_web::http::header::HeaderMap;
use ipnet::IpNet;

#[derive(Debug, Clone)]
pub struct ClientIpResolver {
    trusted_proxies: Vec<IpNet>,
    header: String,
}

impl ClientIpResolver {
    pub fn new(trusted_proxies: Vec<IpNet>, header: String) -> Self {
        Self {
            trusted_proxies,
            header,
        }
    }

    /// Whether `ip` is one of our proxies. An IPv4 address also matches a
    /// range written in its IPv4-mapped IPv6 form (`::ffff:10.0.0.0/104`).
    fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        let mapped = match ip {
            IpAddr::V4(v4) => Some(IpAddr::V6(v4.to_ipv6_mapped())),
            IpAddr::V6(_) => None,
        };
        self.trusted_proxies
            .iter()
            .any(|net| net.contains(&ip) || mapped.is_some_and(|m| net.contains(&m)))
    }

    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.is_trusted(peer) {
            return peer;
        }
        // Each proxy appends the address it received from, so the list reads
        // client, proxy, proxy...: walk it from the end, past our proxies.
        // A header line that is not text is an entry we cannot read.
        let entries: Vec<Option<IpAddr>> = headers
            .get_all(self.header.as_str())
            .flat_map(|value| match value.to_str() {
                Ok(value) => value.split(',').map(parse_entry).collect(),
                Err(_) => vec![None],
            })
            .collect();
        let mut nearest_trusted = peer;
        for entry in entries.into_iter().rev() {
            match entry {
                Some(ip) if self.is_trusted(ip) => nearest_trusted = ip,
                Some(ip) => return ip,
                None => break,
            }
        }
        nearest_trusted
    }
}

/// One entry of a forwarding header: an address, possibly with a port
/// (`203.0.113.7:4711`, `[2001:db8::1]:443`) or in brackets, which some
/// proxies add. `None` for anything else, an empty entry included.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    let ip = entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            let inner = entry.strip_prefix('[')?.strip_suffix(']')?;
            inner.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
        })?;
    Some(ip.to_canonical())
}

/// The subject a per-IP limit applies to. IPv6 clients usually hold a whole
/// /64, so it is limited as one.
pub fn limit_subject(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let network = IpNet::new(IpAddr::V6(v6), 64).expect("64 is a valid IPv6 prefix length");
            network.trunc().to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn headers(forwarded: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in forwarded {
            map.append(
                HeaderName::from_static("x-forwarded-for"),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn resolver(trusted: &[&str]) -> ClientIpResolver {
        ClientIpResolver::new(
            trusted.iter().map(|n| n.parse().unwrap()).collect(),
            "x-forwarded-for".into(),
        )
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_header_from_an_untrusted_peer_is_ignored() {
        let resolver = resolver(&["10.0.0.0/8"]);
        let client = resolver.resolve(ip("198.51.100.9"), &headers(&["203.0.113.7"]));
        assert_eq!(client, ip("198.51.100.9"));
    }

    #[test]
    fn a_trusted_proxy_is_looked_through() {
        let resolver = resolver(&["10.0.0.0/8"]);
        let client = resolver.resolve(ip("10.1.2.3"), &headers(&["203.0.113.7"]));
        assert_eq!(client, ip("203.0.113.7"));
    }

    #[test]
    fn addresses_a_client_prepended_to_the_header_are_not_believed() {
        // The client sent "X-Forwarded-For: 1.2.3.4"; our proxy appended the
        // real address.
        let resolver = resolver(&["10.0.0.0/8"]);
        let client = resolver.resolve(ip("10.1.2.3"), &headers(&["1.2.3.4, 203.0.113.7"]));
        assert_eq!(client, ip("203.0.113.7"));
    }

    #[test]
    fn chains_of_trusted_proxies_are_skipped() {
        let resolver = resolver(&["10.0.0.0/8"]);
        let client = resolver.resolve(
            ip("10.1.2.3"),
            &headers(&["203.0.113.7, 10.9.9.9", "10.8.8.8"]),
        );
        assert_eq!(client, ip("203.0.113.7"));
    }

    #[test]
    fn a_trusted_peer_without_a_usable_header_is_the_client() {
        let resolver = resolver(&["10.0.0.0/8"]);
        assert_eq!(
            resolver.resolve(ip("10.1.2.3"), &headers(&[])),
            ip("10.1.2.3")
        );
        assert_eq!(
            resolver.resolve(ip("10.1.2.3"), &headers(&["garbage"])),
            ip("10.1.2.3")
        );
    }

    #[test]
    fn an_entry_that_is_not_an_address_stops_the_walk_at_the_nearest_trusted_hop() {
        let resolver = resolver(&["10.0.0.0/8"]);
        let cases = [
            ("1.2.3.4, unknown", "10.1.2.3", "a word"),
            ("1.2.3.4, _hidden", "10.1.2.3", "an obfuscated identifier"),
            ("1.2.3.4, ", "10.1.2.3", "an empty entry"),
            (
                "1.2.3.4, , 10.9.9.9",
                "10.9.9.9",
                "an empty entry behind a proxy",
            ),
            (
                "1.2.3.4, garbage, 10.9.9.9",
                "10.9.9.9",
                "garbage behind a proxy",
            ),
            (
                "1.2.3.4, 10.8.8.8, garbage",
                "10.1.2.3",
                "garbage past a proxy",
            ),
            ("1.2.3.4, fe80::1%eth0", "10.1.2.3", "a zoned address"),
            (
                "garbage, 203.0.113.7",
                "203.0.113.7",
                "garbage the client wrote",
            ),
        ];
        for (header, client, case) in cases {
            let resolved = resolver.resolve(ip("10.1.2.3"), &headers(&[header]));
            assert_eq!(resolved, ip(client), "{case}: {header:?}");
        }
    }

    #[test]
    fn a_header_line_that_is_not_text_stops_the_walk() {
        let resolver = resolver(&["10.0.0.0/8"]);
        let mut map = headers(&["1.2.3.4"]);
        map.append(
            HeaderName::from_static("x-forwarded-for"),
            HeaderValue::from_bytes(b"203.0.113.7\xff").unwrap(),
        );

        assert_eq!(resolver.resolve(ip("10.1.2.3"), &map), ip("10.1.2.3"));
    }

    #[test]
    fn entries_with_a_port_or_brackets_are_read_as_their_address() {
        let resolver = resolver(&["10.0.0.0/8"]);
        let cases = [
            ("203.0.113.7:4711", "203.0.113.7"),
            ("[2001:db8::1]:443", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("203.0.113.7, 10.9.9.9:8080", "203.0.113.7"),
            ("[::ffff:203.0.113.7]:443", "203.0.113.7"),
        ];
        for (header, client) in cases {
            let resolved = resolver.resolve(ip("10.1.2.3"), &headers(&[header]));
            assert_eq!(resolved, ip(client), "{header:?}");
        }
    }

    #[test]
    fn an_ipv4_mapped_peer_is_its_ipv4_address() {
        let resolver = resolver(&["10.0.0.0/8"]);

        let untrusted = resolver.resolve(ip("::ffff:198.51.100.9"), &headers(&["203.0.113.7"]));
        let trusted = resolver.resolve(ip("::ffff:10.1.2.3"), &headers(&["203.0.113.7"]));
        let trusted_alone = resolver.resolve(ip("::ffff:10.1.2.3"), &headers(&[]));

        assert_eq!(untrusted, ip("198.51.100.9"));
        assert_eq!(trusted, ip("203.0.113.7"), "a mapped proxy was not trusted");
        assert_eq!(trusted_alone, ip("10.1.2.3"));
    }

    #[test]
    fn ipv4_mapped_entries_are_their_ipv4_addresses() {
        let resolver = resolver(&["10.0.0.0/8"]);

        let client = resolver.resolve(
            ip("10.1.2.3"),
            &headers(&["::ffff:203.0.113.7, ::ffff:10.9.9.9"]),
        );

        assert_eq!(client, ip("203.0.113.7"));
    }

    #[test]
    fn a_trusted_range_written_as_ipv4_mapped_trusts_the_ipv4_addresses() {
        let resolver = resolver(&["::ffff:10.0.0.0/104"]);

        let client = resolver.resolve(ip("10.1.2.3"), &headers(&["203.0.113.7"]));

        assert_eq!(client, ip("203.0.113.7"));
    }

    #[test]
    fn an_ipv4_mapped_address_is_limited_as_its_ipv4_address() {
        assert_eq!(limit_subject(ip("::ffff:192.0.2.1")), "192.0.2.1");
        assert_ne!(
            limit_subject(ip("::ffff:192.0.2.1")),
            limit_subject(ip("::ffff:198.51.100.2")),
            "every IPv4 client shared the budget of ::ffff:0:0/64"
        );
    }

    #[test]
    fn ipv6_clients_are_limited_per_64() {
        assert_eq!(
            limit_subject(ip("2001:db8:1:2:aaaa::1")),
            limit_subject(ip("2001:db8:1:2:bbbb::2"))
        );
        assert_ne!(
            limit_subject(ip("2001:db8:1:2::1")),
            limit_subject(ip("2001:db8:1:3::1"))
        );
        assert_eq!(limit_subject(ip("192.0.2.1")), "192.0.2.1");
    }
}
