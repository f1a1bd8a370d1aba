//! The confirmation links' own budget, checked in front of
//! `/subscriptions/confirm`: a middleware, so that a client over its budget
//! is refused before its body is read or the database is touched.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, web};

use crate::rate_limit::{Decision, RateLimiter};
use crate::web::error::ApiError;

/// Refuses a confirmation click with 429 and `Retry-After` when its client
/// is over its confirmation budget, before the handler reads the body or
/// touches the database. The refusal is an answer, not an error: the
/// headers every answer gets are added only to answers. It is plain text
/// here; a browser gets it as a page (`crate::web::error::refusal_pages`).
pub async fn limit_confirmations(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let limiter = request
        .app_data::<web::Data<RateLimiter>>()
        .expect("the rate limiter is registered as app data")
        .clone();
    if let Some(peer) = request.peer_addr() {
        let client = limiter.client_ip().resolve(peer.ip(), request.headers());
        if let Decision::Limited { retry_after } = limiter.check_confirmation(client).await {
            let refusal = actix_web::Error::from(ApiError::TooManyRequests(retry_after));
            let answer = HttpResponse::from_error(refusal);
            return Ok(request.into_response(answer).map_into_right_body());
        }
    }
    Ok(next.call(request).await?.map_into_left_body())
}
