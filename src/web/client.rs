//! Who is asking, for a handler: the client address of a request as the
//! rate limiter resolves it behind trusted proxies. Audit entries, sign-in
//! limits and the subscriber and issue pages all record it, so it is
//! resolved here the one way rather than in each of them.

use std::net::IpAddr;

use actix_web::HttpRequest;

use crate::rate_limit::RateLimiter;

/// The client's address: the peer, or the forwarded address when the peer
/// is a proxy the rate limiter trusts.
pub fn client_ip(request: &HttpRequest, limiter: &RateLimiter) -> Option<IpAddr> {
    request
        .peer_addr()
        .map(|peer| limiter.client_ip().resolve(peer.ip(), request.headers()))
}
