//! `GET /ready`: whether this instance should receive traffic. Unlike
//! `/health_check` (liveness: the process answers), it reports the
//! dependencies: Postgres, without which nothing can be stored, and Redis.
//! Redis down does not make an instance unready, because the rate limits fall
//! back to the process; it is reported so an operator can see it.
//!
//! The answer comes from the last background check (`crate::readiness`):
//! a call costs no connection, so polling it cannot starve requests.

use actix_web::{HttpResponse, web};
use serde::Serialize;

use crate::readiness::Checker;

#[derive(Serialize, utoipa::ToSchema)]
struct Readiness {
    /// `ok` or `unavailable`.
    #[schema(value_type = String)]
    postgres: &'static str,
    /// `ok`, or `unavailable, rate limits per process` (tolerated).
    #[schema(value_type = String)]
    redis: &'static str,
}

#[utoipa::path(get, path = "/ready", tag = "public",
    responses(
        (status = 200, description = "Postgres answered the last check: this instance takes traffic.", body = Readiness),
        (status = 503, description = "Postgres did not answer the last check, or no check has finished yet.", body = Readiness),
    ))]
pub async fn readiness(checker: web::Data<Checker>) -> HttpResponse {
    let report = checker.report().await;
    let postgres_ok = report.is_some_and(|r| r.postgres);
    let body = Readiness {
        postgres: if postgres_ok { "ok" } else { "unavailable" },
        redis: if report.is_some_and(|r| r.redis) {
            "ok"
        } else {
            "unavailable, rate limits per process"
        },
    };
    if postgres_ok {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
