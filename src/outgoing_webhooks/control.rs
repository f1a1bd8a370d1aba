//! What an admin does to an endpoint that touches both of its tables:
//! enabling, disabling and deleting it, for the newsroom's buttons and the
//! API alike. Each takes the deliveries first, then the endpoint: the
//! order in which a worker recording an outcome locks them, so that the two
//! never wait on each other. Neither store calls the other; this module
//! calls both, in the caller's transaction.

use sqlx::PgConnection;
use uuid::Uuid;

use super::{deliveries, endpoints};

/// Enables the endpoint, its failures forgotten, and makes what it has
/// pending due now. Returns whether it was disabled; an enabled endpoint
/// is left as it is, its deliveries too.
pub async fn enable(conn: &mut PgConnection, id: Uuid) -> Result<bool, sqlx::Error> {
    deliveries::resume_endpoint(conn, id).await?;
    endpoints::enable(conn, id).await
}

/// Disables the endpoint; what it has pending waits until it is enabled
/// again. Returns whether it was enabled.
pub async fn disable(conn: &mut PgConnection, id: Uuid) -> Result<bool, sqlx::Error> {
    deliveries::park_endpoint(conn, id).await?;
    endpoints::disable(conn, id).await
}

/// Deletes the endpoint with its deliveries: its pending ones are locked
/// first, as when disabling, and the delete's cascade then finds them
/// locked already. Returns whether it existed.
pub async fn delete(conn: &mut PgConnection, id: Uuid) -> Result<bool, sqlx::Error> {
    deliveries::park_endpoint(conn, id).await?;
    endpoints::delete(conn, id).await
}
