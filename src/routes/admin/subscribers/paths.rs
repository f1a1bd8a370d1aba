//! Where the subscriber pages are, and the id in their address.

use uuid::Uuid;

/// A subscriber id from an address. Anything that is not one names nobody.
pub fn parse_subscriber_id(raw: &str) -> Option<Uuid> {
    Uuid::try_parse(raw).ok()
}

/// Where a subscriber's page is.
pub fn subscriber_path(id: Uuid) -> String {
    format!("/admin/subscribers/{id}")
}

/// Where an issue's page is.
pub fn issue_path(id: Uuid) -> String {
    format!("/admin/newsletters/{id}")
}
