//! Who is asking: the peer address, unless the peer is one of our own
//! proxies (the platform's load balancer), in which case the client is the
//! nearest address in the forwarding header that is not a trusted proxy.
//! A forwarding header from anyone else is ignored: it is trivial to forge.

use std::net::IpAddr;

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

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }

    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.is_trusted(peer) {
            return peer;
        }
        // Each proxy appends the address it received from, so the list reads
        // client, proxy, proxy...: walk it from the end, past our proxies.
        let forwarded: Vec<IpAddr> = headers
            .get_all(self.header.as_str())
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|part| part.trim().parse().ok())
            .collect();
        forwarded
            .into_iter()
            .rev()
            .find(|ip| !self.is_trusted(*ip))
            .unwrap_or(peer)
    }
}

/// The subject a per-IP limit applies to. IPv6 clients usually hold a whole
/// /64, so it is limited as one.
pub fn limit_subject(ip: IpAddr) -> String {
    match ip {
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
