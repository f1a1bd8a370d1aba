//! `GET /ready`: whether this instance should receive traffic. Unlike
//! `/health_check` (liveness: the process answers), it checks the
//! dependencies: Postgres, without which nothing can be stored, and Redis.
//! Redis down does not make an instance unready, because the rate limits fall
//! back to the process; it is reported so an operator can see it.

use std::time::Duration;

use actix_web::{HttpResponse, web};
use serde::Serialize;

use crate::db::Db;
use crate::rate_limit::RateLimiter;

/// How long each check may take: a load balancer polls this often. The
/// platform's check must wait longer than this (`spec.yaml`).
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// Redis never makes the instance unready, so its check must not make the
/// answer late either: load balancers give up on a check after as little as
/// half a second.
const REDIS_CHECK_TIMEOUT: Duration = Duration::from_millis(300);

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
        (status = 200, description = "Postgres answers: this instance takes traffic.", body = Readiness),
        (status = 503, description = "Postgres does not answer.", body = Readiness),
    ))]
pub async fn readiness(db: web::Data<Db>, limiter: web::Data<RateLimiter>) -> HttpResponse {
    let (postgres_ok, redis_ok) = tokio::join!(
        tokio::time::timeout(CHECK_TIMEOUT, db.ping()),
        limiter.ping_redis(REDIS_CHECK_TIMEOUT),
    );
    let postgres_ok = matches!(postgres_ok, Ok(Ok(())));
    let body = Readiness {
        postgres: if postgres_ok { "ok" } else { "unavailable" },
        redis: if redis_ok {
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
