//! Who did it: the audit log's actor for a signed-in admin (with the
//! client address from [`crate::web::client`]), and writing an entry. Every
//! page that changes or exports something records it this way.

use std::net::IpAddr;

use crate::admin::accounts::Admin;
use crate::admin::audit::{self, Action, Actor};
use crate::db::Db;
use crate::web::error::{ApiError, DatabaseStep};

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
