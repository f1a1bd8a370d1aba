use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web;

use crate::rate_limit::{Decision, RateLimiter};
use crate::routes::ApiError;

/// Refuses a request with 429 and `Retry-After` when its client is over the
/// per-IP limit, before the handler reads the body or touches the database.
pub async fn limit_per_ip(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let limiter = request
        .app_data::<web::Data<RateLimiter>>()
        .expect("the rate limiter is registered as app data")
        .clone();
    if let Some(peer) = request.peer_addr() {
        let client = limiter.client_ip().resolve(peer.ip(), request.headers());
        if let Decision::Limited { retry_after } = limiter.check_ip(client).await {
            return Err(ApiError::TooManyRequests(retry_after).into());
        }
    }
    next.call(request).await
}
