//! Who did it, and from where: the client address of a request (as the
//! rate limiter resolves it behind trusted proxies), the audit log's actor
//! for a signed-in admin, and writing an entry. Every page that changes or
//! exports something records it this way.

use std::net::IpAddr;

use actix_web::HttpRequest;

use crate::admin::accounts::Admin;
use crate::admin::audit::{self, Action, Actor};
use crate::db::Db;
use crate::rate_limit::RateLimiter;
use crate::routes::error::{ApiError, DatabaseStep};

/// The client's address: the peer, or the forwarded address when the peer
/// is a proxy the rate limiter trusts.
pub fn client_ip(request: &HttpRequest, limiter: &RateLimiter) -> Option<IpAddr> {
    request
        .peer_addr()
        .map(|peer| limiter.client_ip().resolve(peer.ip(), request.headers()))
}

/// The audit log's actor for a signed-in (or signing-in) admin.
pub fn actor_for(admin: &Admin, ip: Option<IpAddr>) -> Actor {
    Actor {
        admin_id: Some(admin.id),
        username: Some(admin.username.clone()),
        client_ip: ip,
    }
}

/// Writes one audit entry in its own transaction.
pub async fn record(db: &Db, actor: &Actor, action: Action, detail: &str) -> Result<(), ApiError> {
    db.transaction(async |tx| audit::record(tx, actor, action, detail).await)
        .await
        .step("write the audit log")
}
