//! Counts every request of the public server, by method, route pattern and
//! status, and times it. The route is the pattern the request matched
//! (`/unsubscribe/{token}`), never its path: a path holds tokens, and a
//! series per link would grow without end. A request that matched no route
//! counts as `unmatched`.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::web;

use super::Metrics;

/// What a request that matched no route counts under.
pub const UNMATCHED: &str = crate::telemetry::UNMATCHED_ROUTE;

/// Middleware for the public `App`, which must hold a `web::Data<Metrics>`.
pub async fn count_requests(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let metrics = request.app_data::<web::Data<Metrics>>().cloned();
    let method = method_label(request.method());
    let route = request.match_pattern();
    let response = next.call(request).await;
    if let Some(metrics) = metrics {
        let status = match &response {
            Ok(response) => response.status(),
            Err(e) => e.as_response_error().status_code(),
        };
        let route = route.as_deref().unwrap_or(UNMATCHED);
        metrics.http_request(method, route, status.as_u16(), started.elapsed());
    }
    response
}

/// The method as a label: the standard ones by name, anything a client
/// made up as `other`, so that it cannot mint series.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}
