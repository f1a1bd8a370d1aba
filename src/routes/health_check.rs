use actix_web::HttpResponse;

/// Liveness: answers as long as the process serves HTTP. It deliberately does
/// not touch Postgres, so a database outage does not get healthy replicas
/// restarted.
pub async fn health_check() -> HttpResponse {
    HttpResponse::Ok().finish()
}
